"""The full stack through the CLI with every secret set to a unique marker, then a search for the markers (and
their base64 and URL-encoded forms) in everything the run leaves behind.

Places searched: every byte of the Prefect database (SQLite: logs, artifacts, events, flow- and task-run
parameters, states, results, and the run journal, an artifact) and everything else under PREFECT_HOME (result
storage), the CLI's output (plain and ``--output json``), the env file and certificates ``vch_create`` writes, the app
container's inspect data, and the test's own temporary folder.  Where a secret is meant to live (the
database container's environment, which needs it) is checked to hold it, so the scan cannot pass by
searching the wrong place.  docs/reliability.md lists those places.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from tests.demo import VCH_IP, full_stack_inputs
from tests.testbed.appliance import Appliance
from tests.testbed.prefect_db import BUSY_MACHINE, copy_to
from tests.testbed.prefect_stack import clean_gogs

pytestmark = [pytest.mark.docker, pytest.mark.vcsim]
REPO = Path(__file__).resolve().parents[2]


def forms(marker: str) -> list[bytes]:
    return [
        marker.encode(),
        base64.b64encode(marker.encode()),
        base64.b64encode(marker.encode()).rstrip(b"="),
        quote(marker, safe="").encode(),
    ]


def hits(root: Path, markers: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for marker in markers:
                if any(form in data for form in forms(marker)):
                    found.append(f"{path.relative_to(root)} holds {marker}")
    return found


def test_no_secret_in_clear_anywhere_a_run_leaves_traces(tmp_path, vcsim, docker_engine, docker_images):
    db_password, admin_password = f"dbpw-{uuid.uuid4().hex}", f"adminpw-{uuid.uuid4().hex}"
    markers = [db_password, admin_password, vcsim.password]
    home, state = tmp_path / "prefect-home", tmp_path / "state"
    for iso in ("appliance.iso", "bootstrap.iso"):
        (tmp_path / iso).write_bytes(b"iso\n" * 256)
    inputs = full_stack_inputs(vcsim, "vch-scan", tmp_path, tls="tls_verify", tls_cname=VCH_IP)
    (tmp_path / "inputs.yaml").write_text(yaml.safe_dump(inputs))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VICFLOW_"))},
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **BUSY_MACHINE,
        "VICFLOW_STATE_DIR": str(state),
        "VICFLOW_SECRET_GOGS_ADMIN": admin_password,
        "PYTHONPATH": str(REPO),
    }
    command = [
        sys.executable, "-m", "vicflow.flows.cli", "run", "full-stack", "--inputs", str(tmp_path / "inputs.yaml"),
        "--set", f"password={vcsim.password}", "--set", f"db_password={db_password}",
        "--set", "admin_password=${{ secrets.gogs_admin }}",
    ]  # fmt: skip
    copy_to(home / "prefect.db")  # the temporary server's database, already migrated (tests/testbed/prefect_db.py)
    clean_gogs()
    try:
        # tls_verify: the VCH endpoint is plain here, so the harness serves the generated certificate with socat
        with Appliance(vcsim, "vch-scan", ip=VCH_IP, serve_tls=True):
            plain = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
            again = subprocess.run(
                [*command, "--output", "json"], env=env, capture_output=True, text=True, timeout=600, cwd=REPO
            )
        assert plain.returncode == 0, plain.stderr[-3000:]
        assert again.returncode == 0, again.stderr[-3000:]
        assert json.loads(again.stdout)["state"] == "completed"

        outputs = {
            "the CLI (plain)": plain.stdout + plain.stderr,
            "the CLI (--output json)": again.stdout + again.stderr,
        }
        client = docker_engine.client()
        db = client.containers.get("gogsdb").attrs
        app = client.containers.get("gogsapp").attrs
        assert f"POSTGRES_PASSWORD={db_password}" in db["Config"]["Env"], "the scan looks where the secret must live"
        outputs["gogsapp's inspect data"] = json.dumps(app)
        found = [f"{place} holds {m}" for place, text in outputs.items() for m in markers
                 if any(f.decode() in text for f in forms(m))]  # fmt: skip
        found += hits(tmp_path, markers)  # PREFECT_HOME (database, storage), the journal, vch_create's files
        database = b"".join(path.read_bytes() for path in home.glob("prefect.db*"))  # with its write-ahead log
        assert b"vicflow-journal" in database, "the scan reads the real files: the journal is in the database"
        assert not found, found
    finally:
        clean_gogs()
