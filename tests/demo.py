"""`make demo`: the full-stack blueprint on the local test bed.

vCenter is the govmomi simulator (over HTTPS, thumbprint pinned), started once and kept for the next demo, as
a real vCenter keeps what the last run did; the VCH's Docker API is the test bed's VCH endpoint on
127.0.0.2:2375 (tests/testbed/vchproxy/: VIC 1.1.1's personality in front of its dockerd; a harness plays the
appliance, hands it the VCH's volume stores and reports that address); the app's volumes are the VCH's vsphere
volumes and its ports are published on 0.0.0.0, the VCH's public interface; the images are the test images
built from Debian packages; Prefect runs on its local SQLite database.  A second `make demo` changes nothing.
"""

from __future__ import annotations

import os
import sys

import yaml

from tests.testbed import REPO, dockerd, images, vcsim
from tests.testbed.appliance import Appliance
from tests.testbed.vchproxy.volumes import STORE

DEMO = REPO / ".vicflow" / "demo"
VCH_IP = dockerd.VCH_IP
SIMULATOR = "127.0.0.1:18989"  # the demo's vCenter, kept between demos


def full_stack_inputs(sim, name: str, folder, tls: str = "no_tls", **extra) -> dict:
    """full-stack's inputs for the simulator's inventory, the test images and the VCH endpoint's address."""
    return {
        "server": sim.url,
        "user": sim.username,
        "thumbprint": sim.thumbprint,
        "datacenter": "DC0",
        "cluster": "DC0_C0",
        "compute_resource": "DC0_C0",
        "name": name,
        "image_store": f"LocalDS_0/{name}",
        "volume_stores": [f"LocalDS_0/{name}/volumes:default"],
        "bridge_network": "DC0_DVPG0",
        "public_network": "VM Network",
        "client_network": "VM Network",
        "management_network": "VM Network",
        "tls": tls,
        "cert_path": str(folder / "certs"),
        "appliance_iso": str(folder / "appliance.iso"),
        "bootstrap_iso": str(folder / "bootstrap.iso"),
        "appliance_timeout_seconds": 60,
        "gogs_image": "vicflow-test/app:1.0",
        "postgres_image": "vicflow-test/postgres:15",
        "publish_ip": "0.0.0.0",  # the seed's: on a VCH, its public interface
        **extra,
    }


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    engine = dockerd.start()
    images.build_all(engine.client())
    DEMO.mkdir(parents=True, exist_ok=True)
    for iso in ("appliance.iso", "bootstrap.iso"):
        (DEMO / iso).write_bytes(b"vicflow demo " + iso.encode() + b"\n" * 1024)
    forget_local_volumes(engine.client())
    sim = vcsim.persistent("demo", SIMULATOR, hosts=3)
    print(f"[demo] vCenter simulator at {sim.url} (thumbprint {sim.thumbprint}; kept for the next demo)")
    inputs = full_stack_inputs(sim, "vch-demo", DEMO, tls="no_tls")
    (DEMO / "inputs.yaml").write_text(yaml.safe_dump(inputs))
    from vicflow.flows.cli.main import main as vicflow

    with Appliance(sim, "vch-demo", ip=VCH_IP):
        code = vicflow(
            [
                "run",
                str(REPO / "blueprints" / "full-stack.yaml"),
                "--inputs",
                str(DEMO / "inputs.yaml"),
                "--set",
                f"password={sim.password}",
                "--set",
                "db_password=demo-db-password",
                "--set",
                "admin_password=demo-admin-password",
            ]
        )
    if code == 0:
        print(
            f"[demo] Gogs, installed: curl http://{VCH_IP}:10080/   (containers gogsapp, gogsdb; the VCH's "
            f"Docker API: DOCKER_HOST=tcp://{VCH_IP}:2375)"
        )
        print("[demo] Prefect UI: .venv/bin/prefect server start, then open the run URL above")
        print(
            f"[demo] inputs used: {DEMO / 'inputs.yaml'}; remove the app with `make demo-down`, stop the test bed "
            "(and the demo's vCenter) with `make stop`"
        )
    return code


def forget_local_volumes(client) -> None:
    """An older demo made the app's volumes with the local driver: the VCH's are vsphere volumes, and vicflow
    never changes a volume's driver. They held only the demo's data: the old app goes, with them."""
    old = [v for v in client.volumes.list(filters={"label": "com.docker.compose.project=gogs"})
           if v.attrs.get("Driver") == "local" and STORE not in (v.attrs.get("Labels") or {})]  # fmt: skip
    if not old:
        return
    print(f"[demo] removing the gogs app an older demo made with local volumes ({', '.join(v.name for v in old)})")
    for container in client.containers.list(all=True, filters={"label": "com.docker.compose.project=gogs"}):
        container.remove(force=True)
    for volume in old:
        volume.remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
