"""`make demo`: the full-stack blueprint on the local test bed.

vCenter is the govmomi simulator (over HTTPS, thumbprint pinned); the VCH's Docker API is the test bed's
VCH-shaped endpoint on 127.0.0.2:2375 (tests/testbed/vchproxy.py, in front of its dockerd; a harness plays
the appliance and reports that address); the images are the test images built from Debian packages; Prefect
runs on its local SQLite database.  A second `make demo` changes nothing.
"""

from __future__ import annotations

import os
import sys

import yaml

from tests.testbed import REPO, dockerd, images, vcsim
from tests.testbed.appliance import Appliance

DEMO = REPO / ".vicflow" / "demo"
VCH_IP = dockerd.VCH.removeprefix("tcp://").split(":")[0]


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
        "publish_ip": VCH_IP,
        "volume_driver": "local",
        **extra,
    }


def main() -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    engine = dockerd.start()
    images.build_all(engine.client())
    DEMO.mkdir(parents=True, exist_ok=True)
    for iso in ("appliance.iso", "bootstrap.iso"):
        (DEMO / iso).write_bytes(b"vicflow demo " + iso.encode() + b"\n" * 1024)
    sim = vcsim.start(hosts=3)
    print(f"[demo] vCenter simulator at {sim.url} (thumbprint {sim.thumbprint})")
    inputs = full_stack_inputs(sim, "vch-demo", DEMO, tls="no_tls")
    (DEMO / "inputs.yaml").write_text(yaml.safe_dump(inputs))
    from vicflow.flows.cli import main as vicflow

    try:
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
    finally:
        sim.stop()
    if code == 0:
        print(
            f"[demo] Gogs, installed: curl http://{VCH_IP}:10080/   (containers gogsapp, gogsdb; the VCH's "
            f"Docker API: DOCKER_HOST=tcp://{VCH_IP}:2375)"
        )
        print("[demo] Prefect UI: .venv/bin/prefect server start, then open the run URL above")
        print(
            f"[demo] inputs used: {DEMO / 'inputs.yaml'}; remove the app with `make demo-down`, stop the test bed with `make stop`"
        )
    return code


if __name__ == "__main__":
    sys.exit(main())
