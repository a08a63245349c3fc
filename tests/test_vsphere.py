"""firewall, vch_create, vch_inspect, vch_delete against the govmomi vCenter simulator over HTTPS."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests
from pyVim.connect import Disconnect
from pyVmomi import vim, vmodl
from vicflow.plugins.builtin.firewall import Firewall
from vicflow.plugins.builtin.vch import VCHCreate, VCHDelete, VCHInspect
from vicflow.plugins.clients.vsphere import connection
from vicflow.plugins.clients.vsphere import inventory as vsphere_inventory
from vicflow.plugins.errors import PermanentError, TransientError
from vicflow.plugins.vic import target as vchmod
from vicflow.plugins.vic.firewall import ruleset_enabled

from tests import stepkit
from tests.testbed.appliance import Appliance

pytestmark = pytest.mark.vcsim


def creds(sim) -> dict:
    return {"server": sim.url, "user": sim.username, "password": sim.password, "thumbprint": sim.thumbprint}


@pytest.fixture
def inventory(vcsim):
    """A separate pyvmomi session to read the inventory back as a user would (govc-style)."""
    si = vcsim.connect()
    yield si
    Disconnect(si)


def objects(si, kind):
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [kind], True)
    return {o.name: o for o in view.view}


def ruleset(host) -> bool:
    return next(r.enabled for r in host.configManager.firewallSystem.firewallInfo.ruleset if r.key == "vSPC")


def firewall(sim, action="allow", ctx=None):
    return stepkit.apply(Firewall, ctx, **creds(sim), compute_resource="DC0_C0", action=action)


# ----------------------------------------------------------------------------------------------- firewall


def test_firewall_allow_deny_and_idempotency_on_three_hosts(vcsim, inventory):
    hosts = [h for name, h in objects(inventory, vim.HostSystem).items() if name.startswith("DC0_C0_H")]
    assert len(hosts) == 3 and not any(ruleset(h) for h in hosts)
    planned = stepkit.plan(Firewall, **creds(vcsim), compute_resource="DC0_C0")
    assert sorted(c.target for c in planned if c.action == "update") == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"]
    assert {c.kind for c in planned} == {"host_firewall"}  # what the blast radius counts

    out, _ = firewall(vcsim)
    assert [r["result"] for r in out["hosts"]] == ["changed"] * 3 and out["changed"] == 3
    assert all(ruleset(h) for h in hosts)
    again, ctx = firewall(vcsim)
    assert [r["result"] for r in again["hosts"]] == ["unchanged"] * 3 and ctx.changed is False

    denied, ctx = firewall(vcsim, "deny")
    assert denied["changed"] == 3 and not any(ruleset(h) for h in hosts)
    stepkit.rollback(Firewall, ctx, **creds(vcsim), compute_resource="DC0_C0", action="deny")
    assert all(ruleset(h) for h in hosts), "rollback restores each host's previous state"


def test_firewall_resolves_a_resource_pool_to_its_cluster(vcsim):
    out, _ = stepkit.apply(Firewall, **creds(vcsim), compute_resource="DC0_C0/Resources/DC0_C0_RP1")
    assert sorted(r["host"] for r in out["hosts"]) == ["DC0_C0_H0", "DC0_C0_H1", "DC0_C0_H2"]


def test_firewall_xml_read_matches_pyvmomi_across_pages_and_faults_like_pyvmomi(vcsim, inventory):
    """The firewall step reads rulesets as XML (collect_xml); it must see exactly what pyvmomi sees."""
    systems = [h.configManager.firewallSystem for h in objects(inventory, vim.HostSystem).values()]
    pages = vsphere_inventory.collect_xml(inventory, systems, vim.host.FirewallSystem, ["firewallInfo"], page_size=2)
    assert sorted(pages) == sorted(s._moId for s in systems), "every page of the answer is read"
    for system in systems:
        as_xml = {
            (r.findtext(f"{vsphere_inventory.VIM}key"), r.findtext(f"{vsphere_inventory.VIM}enabled") == "true")
            for r in pages[system._moId]["firewallInfo"].iterfind(f"{vsphere_inventory.VIM}ruleset")
        }
        assert as_xml == {(r.key, r.enabled) for r in system.firewallInfo.ruleset}
        assert ruleset_enabled(pages[system._moId]["firewallInfo"]) is False

    gone = vim.HostSystem("host-gone", inventory._stub)
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        vsphere_inventory.collect_xml(inventory, [gone], vim.HostSystem, ["name"])


def test_firewall_without_thumbprint_shows_it_and_changes_nothing(vcsim, inventory):
    params = {**creds(vcsim), "thumbprint": None}
    with pytest.raises(PermanentError, match=f"thumbprint={vcsim.thumbprint}"):
        stepkit.apply(Firewall, **params, compute_resource="DC0_C0")
    assert not any(ruleset(h) for h in objects(inventory, vim.HostSystem).values())


# ----------------------------------------------------------------------------------------------- vch_create


@pytest.fixture
def isos(tmp_path):
    (tmp_path / "appliance.iso").write_bytes(b"APPLIANCE" * 1000)
    (tmp_path / "bootstrap.iso").write_bytes(b"BOOTSTRAP" * 100)
    return tmp_path


def vch_params(sim, isos, **overrides) -> dict:
    params = {
        **creds(sim),
        "name": "vch02",
        "compute_resource": "DC0_C0",
        "image_store": "LocalDS_0/VCHPOOL/vch02",
        "volume_stores": ["LocalDS_0/VCHPOOL/vch02/volumes:default", "LocalDS_1/shared:fast"],
        "bridge_network": "DC0_DVPG0",
        "public_network": "VM Network",
        "client_network": "VM Network",
        "management_network": "VM Network",
        "tls": "no_tls",
        "cert_path": str(isos / "certs"),
        "appliance_iso": str(isos / "appliance.iso"),
        "bootstrap_iso": str(isos / "bootstrap.iso"),
        "appliance_timeout_seconds": 30,
    }
    params.update(overrides)
    return params


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"datacenter": "SDDC.Datacenter"}, "datacenter 'SDDC.Datacenter' not found"),
        ({"compute_resource": "SDDC.Container"}, "compute resource 'SDDC.Container' not found"),
        ({"image_store": "VMFS01/VCHPOOL/vch02"}, "datastore 'VMFS01' not found"),
        ({"volume_stores": ["LocalDS_0/vols:fast"]}, "no volume store is labelled default"),
        ({"volume_stores": ["LocalDS_0-vols"]}, "must look like DATASTORE/path:label"),
        ({"public_network": "LSW10_Mgmt"}, "network 'LSW10_Mgmt' not found"),
        (
            {
                "bridge_network": "VM Network",
                "public_network": "DC0_DVPG1",
                "client_network": "DC0_DVPG1",
                "management_network": "DC0_DVPG1",
            },
            "must be a distributed port group",
        ),
        ({"bridge_network": "DC0_DVPG1", "client_network": "DC0_DVPG1"}, "is shared with the client network"),
        (
            {"client_network": "DC0_DVPG1", "management_network": "DC0_DVPG2"},
            "4 distinct networks including the bridge",
        ),
        ({"public_ip": "10.0.0.5/24"}, "static public_ip 10.0.0.5/24 needs public_gateway"),
        ({"tls": "tls_verify"}, "tls_verify needs a common name"),
    ],
)
def test_each_validation_error_on_its_own(vcsim, isos, inventory, overrides, message):
    firewall(vcsim)
    with pytest.raises(PermanentError) as info:
        stepkit.apply(VCHCreate, **vch_params(vcsim, isos, **overrides))
    text = str(info.value)
    assert "validation of configuration failed (1 problems)" in text or message.startswith("datacenter")
    assert message in text
    assert "vch02" not in objects(inventory, vim.VirtualMachine), "nothing is created on a validation error"


def test_several_validation_errors_at_once_and_the_closed_firewall(vcsim, isos):
    params = vch_params(vcsim, isos, image_store="VMFS01/x", public_network="nope", public_ip="10.0.0.5/24")
    with pytest.raises(PermanentError) as info:
        stepkit.apply(VCHCreate, **params)
    text = str(info.value)
    assert "(4 problems)" in text
    for part in (
        "datastore 'VMFS01' not found",
        "network 'nope' not found",
        "needs public_gateway",
        "Firewall must permit dst 2377/tcp outbound",
    ):
        assert part in text


def test_create_builds_the_vch_and_a_rerun_changes_nothing(vcsim, isos, inventory, docker_engine):
    firewall(vcsim)
    params = vch_params(vcsim, isos)
    with Appliance(vcsim, "vch02", ip="127.0.0.1") as appliance:
        out, ctx = stepkit.apply(VCHCreate, **params)
    assert appliance.error is None
    assert out["docker_host"] == "tcp://127.0.0.1:2375" and out["admin_portal"] == "https://127.0.0.1:2378"
    assert Path(out["env_file"]).read_text() == "DOCKER_HOST=127.0.0.1:2375\n"

    vapp = objects(inventory, vim.VirtualApp)["vch02"]
    vm = objects(inventory, vim.VirtualMachine)["vch02"]
    assert vm.resourcePool == vapp  # (reading parentVApp crashes the 0.24 simulator)
    assert vm._moId == out["vch_id"] and vm.runtime.powerState == "poweredOn"
    assert (vm.config.hardware.numCPU, vm.config.hardware.memoryMB, vm.config.guestId) == (1, 2048, "otherGuest64")
    nics = [d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualVmxnet3)]
    backings = sorted(getattr(n.backing, "deviceName", None) or n.backing.port.portgroupKey for n in nics)
    dvpg0 = objects(inventory, vim.dvs.DistributedVirtualPortgroup)["DC0_DVPG0"].key
    assert backings == sorted([dvpg0, "VM Network"])
    cdrom = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualCdrom))
    folder = vm.config.files.vmPathName.split("] ", 1)[1].rsplit("/", 1)[0]
    assert cdrom.backing.fileName == f"[LocalDS_0] {folder}/v1.1.1-appliance.iso"
    assert any(isinstance(d, vim.vm.device.VirtualSerialPort) for d in vm.config.hardware.device)
    config = vchmod.extra_config(vm)
    assert config["guestinfo.vice./storage/volume_stores|default"] == "ds://LocalDS_0/VCHPOOL/vch02/volumes"
    assert config["guestinfo.vice./network/bridge_network"] == "DC0_DVPG0"
    assert json.loads(config[vchmod.CONFIG_KEY])["memory_mb"] == 2048

    host, port = vcsim.host.split(":")
    session = requests.Session()
    session.trust_env = False
    got = session.get(
        f"https://{host}:{port}/folder/{folder}/v1.1.1-appliance.iso",
        params={"dcPath": "DC0", "dsName": "LocalDS_0"},
        verify=False,
        timeout=10,
    )
    assert got.content == b"APPLIANCE" * 1000
    for ds, path in (("LocalDS_0", "VCHPOOL/vch02/volumes"), ("LocalDS_1", "shared")):
        browser = objects(inventory, vim.Datastore)[ds].browser
        task = browser.SearchDatastore_Task(datastorePath=f"[{ds}] {path}")
        while task.info.state not in ("success", "error"):
            pass
        assert task.info.state == "success", f"[{ds}] {path} was not created"

    again, ctx = stepkit.apply(VCHCreate, **params)
    assert ctx.changed is False and again["vch_id"] == out["vch_id"]
    inspected, _ = stepkit.apply(VCHInspect, **creds(vcsim), name="vch02")
    assert {k: inspected[k] for k in ("docker_host", "vch_id", "admin_portal")} == {
        k: out[k] for k in ("docker_host", "vch_id", "admin_portal")
    }

    with pytest.raises(PermanentError, match=r"different configuration: memory_mb: 2048 -> 4096"):
        stepkit.apply(VCHCreate, **{**params, "memory_mb": 4096})

    removed, _ = stepkit.apply(VCHDelete, **creds(vcsim), name="vch02")
    assert "vch02" in removed["removed"] and removed["kept"] == [
        "volume store LocalDS_0/VCHPOOL/vch02/volumes:default",
        "volume store LocalDS_1/shared:fast",
    ]
    assert "vch02" not in objects(inventory, vim.VirtualMachine)
    assert "vch02" not in objects(inventory, vim.VirtualApp)


def test_a_name_taken_by_a_plain_vm_is_refused(vcsim, isos, inventory):
    firewall(vcsim)
    existing = next(iter(objects(inventory, vim.VirtualMachine)))
    with pytest.raises(PermanentError, match=f"a VM named '{existing}' exists and is not a VCH"):
        stepkit.apply(VCHCreate, **vch_params(vcsim, isos, name=existing))


def test_appliance_that_never_reports_an_ip_times_out_and_leaves_nothing_behind(vcsim, isos, inventory):
    firewall(vcsim)
    before_vms = set(objects(inventory, vim.VirtualMachine))
    with pytest.raises(TransientError, match=r"Failed to obtain IP address for client interface \(timed out"):
        stepkit.apply(VCHCreate, **vch_params(vcsim, isos, appliance_timeout_seconds=2))
    assert set(objects(inventory, vim.VirtualMachine)) == before_vms
    assert "vch02" not in objects(inventory, vim.VirtualApp)
    browser = objects(inventory, vim.Datastore)["LocalDS_1"].browser
    task = browser.SearchDatastore_Task(datastorePath="[LocalDS_1] shared")
    while task.info.state not in ("success", "error"):
        pass
    assert task.info.state == "error", "the volume-store directory this run made was removed"


def test_tls_verify_end_to_end_against_a_tls_docker_endpoint(vcsim, isos, inventory, docker_engine):
    firewall(vcsim)
    params = vch_params(vcsim, isos, tls="tls_verify", tls_cname="127.0.0.2", name="vchtls")
    with Appliance(vcsim, "vchtls", ip="127.0.0.2", serve_tls=True) as appliance:
        out, _ = stepkit.apply(VCHCreate, **params)
        assert appliance.error is None
        assert out["docker_host"] == "tcp://127.0.0.2:2376" and out["tls_verify"] is True
        for name in ("ca.pem", "ca-key.pem", "server-cert.pem", "server-key.pem", "cert.pem", "key.pem"):
            assert (isos / "certs" / name).is_file()
        env = Path(out["env_file"]).read_text().splitlines()
        assert env == ["DOCKER_HOST=127.0.0.2:2376", "DOCKER_TLS_VERIFY=1", f"DOCKER_CERT_PATH={isos / 'certs'}"]
        from vicflow.plugins.clients.dockerapi import DockerParams, connected

        with connected(DockerParams(docker_host=out["docker_host"], cert_path=out["cert_path"])) as client:
            assert client.ping()
        with (
            pytest.raises(PermanentError, match="requires a client certificate"),
            connected(DockerParams(docker_host=out["docker_host"], ca=out["ca"])),
        ):
            pass
    stepkit.apply(VCHDelete, **creds(vcsim), name="vchtls", force=True)


def test_delete_refuses_a_powered_on_container_vm_without_force(vcsim, isos, inventory, docker_engine):
    firewall(vcsim)
    with Appliance(vcsim, "vch02"):
        stepkit.apply(VCHCreate, **vch_params(vcsim, isos))
    vapp = objects(inventory, vim.VirtualApp)["vch02"]
    spec = vim.vm.ConfigSpec(
        name="gogsapp-cvm",
        guestId="otherGuest64",
        numCPUs=1,
        memoryMB=512,
        files=vim.vm.FileInfo(vmPathName="[LocalDS_0]"),
    )
    task = vapp.CreateChildVM_Task(config=spec)
    while task.info.state not in ("success", "error"):
        pass
    task.info.result.PowerOnVM_Task()
    with pytest.raises(PermanentError, match="still has powered-on container VMs: gogsapp-cvm"):
        stepkit.apply(VCHDelete, **creds(vcsim), name="vch02")
    planned = stepkit.plan(VCHDelete, **creds(vcsim), name="vch02", force=True)
    assert {(c.target, c.kind) for c in planned if c.action == "delete"} >= {
        ("vch02", "vch"),
        ("gogsapp-cvm", "container"),
        ("LocalDS_1/shared:fast", "volume_store"),
    }
    removed, _ = stepkit.apply(VCHDelete, **creds(vcsim), name="vch02", force=True)
    assert "gogsapp-cvm" in removed["removed"] and "volume store LocalDS_1/shared:fast" in removed["removed"]


def test_vic_machine_target_form_sets_the_datacenter_and_is_never_dropped(vcsim, inventory):
    """`--target sddcvcs.domain.sddc/SDDC.Datacenter`, as the seed types it."""
    from vicflow.plugins.builtin.firewall import FirewallParams

    base = vcsim.url.removesuffix("/sdk")  # https://127.0.0.1:PORT
    params = FirewallParams(server=f"{base}/DC0", compute_resource="DC0_C0", action="allow")
    assert (params.server, params.datacenter) == (base, "DC0")
    assert FirewallParams(server=vcsim.url, compute_resource="x", action="allow").datacenter is None
    with pytest.raises(ValueError, match=r"names datacenter 'DC0' but datacenter is 'DC1': set server: https://"):
        FirewallParams(server=f"{base}/DC0", datacenter="DC1", compute_resource="x", action="allow")
    with pytest.raises(PermanentError, match=r"names datacenter 'Nowhere'"):
        connection.split_server("h/Nowhere")
    out, _ = stepkit.apply(
        Firewall, **{**creds(vcsim), "server": f"{base}/DC0"}, compute_resource="DC0_C0", action="allow"
    )
    assert len(out["hosts"]) == 3
    firewall(vcsim, "deny")


def test_registry_ca_drift_is_its_content_and_relative_paths_are_the_blueprints(vcsim, isos, inventory, docker_engine):
    """The CA file is read from the blueprint's folder; a renamed copy is no drift, a replaced certificate is."""
    from vicflow.plugins.clients import certs

    ca_a = certs.generate(isos / "a", "harbor-a", ["127.0.0.1"], client=False)["ca"]
    ca_b = certs.generate(isos / "b", "harbor-b", ["127.0.0.1"], client=False)["ca"]
    (isos / "sddcvic.crt").write_bytes(Path(ca_a).read_bytes())
    firewall(vcsim)
    params = vch_params(
        vcsim,
        isos,
        name="vch03",
        image_store="LocalDS_0/VCHPOOL/vch03",
        registry_ca=["sddcvic.crt"],
        volume_stores=["LocalDS_0/VCHPOOL/vch03/volumes:default"],
    )
    ctx = stepkit.context("vch", base_dir=isos)  # the blueprint's folder: relative files resolve there
    try:
        with Appliance(vcsim, "vch03", ip="127.0.0.1"):
            stepkit.apply(VCHCreate, ctx, **params)
        config = vchmod.extra_config(objects(inventory, vim.VirtualMachine)["vch03"])
        assert base64.b64decode(config[vchmod.PREFIX + "registry/ca"]) == Path(ca_a).read_bytes()

        (isos / "renamed.crt").write_bytes(Path(ca_a).read_bytes())
        again, ctx2 = stepkit.apply(
            VCHCreate, stepkit.context("vch", base_dir=isos), **{**params, "registry_ca": ["renamed.crt"]}
        )
        assert ctx2.changed is False, "the same certificate under another name is no drift"
        (isos / "sddcvic.crt").write_bytes(Path(ca_b).read_bytes())
        with pytest.raises(PermanentError, match=r"different configuration: registry_ca: \['sha256:"):
            stepkit.apply(VCHCreate, stepkit.context("vch", base_dir=isos), **params)
    finally:
        stepkit.apply(VCHDelete, **creds(vcsim), name="vch03")
