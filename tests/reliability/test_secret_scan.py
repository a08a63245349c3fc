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

from tests import helpers
from tests.demo import VCH_IP, full_stack_inputs
from tests.otlp_receiver import Receiver
from tests.testbed.appliance import Appliance
from tests.testbed.prefect_db import BUSY_MACHINE, copy_to
from tests.testbed.prefect_stack import clean_gogs

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


@pytest.mark.docker
@pytest.mark.vcsim
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
        sys.executable, "-m", "vicflow.flows.cli.main", "run", "full-stack", "--inputs", str(tmp_path / "inputs.yaml"),
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


# ------------------------------------------------------------------------- secrets of every character class

CLASSES = " /?%é[$\\'\"\n${{ 1/0 }}"  # the characters issue 27 found leaking when a secret held them


def marked(tag: str, around: str = CLASSES) -> tuple[str, str]:
    """A secret holding every character class around a unique core; the core is the marker the scan looks for
    (percent-encoding, JSON and repr keep it), with the secret's base64 at each alignment."""
    core = f"{tag}{uuid.uuid4().hex[:16]}"
    return f"{around[:7]}{core}{around[7:]}", core


def leaks(secret: str, core: str) -> list[bytes]:
    data = secret.encode()
    found = [core.encode()]
    for offset in range(3):  # Basic auth: "user:" puts the secret at any alignment
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0")
        found.append(encoded[-(-8 * offset // 6) : (8 * (offset + len(data))) // 6])
    for latin in (data.decode().encode("latin-1", "ignore"),):  # requests encodes Basic auth as latin-1
        for offset in range(3):
            encoded = base64.b64encode(b"\0" * offset + latin + b"\0\0")
            found.append(encoded[-(-8 * offset // 6) : (8 * (offset + len(latin))) // 6])
    return found


BLUEPRINT = """
name: hooks
inputs:
  token: {type: secret}
  pair: {type: secret}
  env_token: {type: secret}
target: t-${{ inputs.token }}
steps:
  - id: path
    uses: http_request
    with: {url: "http://127.0.0.1:PORT/hooks/${{ inputs.token }}", expect_status: [200]}
  - id: query_and_basic_auth
    uses: http_request
    on_failure: continue
    with: {url: "http://user:${{ inputs.env_token }}@127.0.0.1:PORT/hooks/q?t=${{ inputs.env_token }}"}
  - id: body
    uses: http_request
    with:
      method: POST
      url: http://127.0.0.1:PORT/hooks/body
      json: {token: "${{ inputs.token }}", pair: "${{ inputs.pair }}", first: "${{ inputs.pair[0] }}"}
  - id: refused
    uses: http_request
    on_failure: continue
    with: {url: "http://127.0.0.1:PORT/fail/${{ inputs.token }}"}
  - id: expression_error
    uses: http_request
    on_failure: continue
    with: {url: "${{ inputs.token|int + 1 }}"}
  - id: attribute_error
    uses: http_request
    on_failure: continue
    with: {url: "${{ inputs[inputs.env_token] }}"}
outputs:
  hook: http://127.0.0.1:PORT/hooks/${{ inputs.token }}
"""


@pytest.fixture
def hooks():
    with helpers.hook_server() as served:
        yield served


def test_no_secret_of_any_character_class_in_prefects_database_logs_artifacts_or_output(tmp_path, hooks):
    """Secrets holding space, /, ?, %, é, [, $, \\, quotes, a newline, ${{ }} and a list, through URL paths, queries,
    Basic auth, JSON bodies, an error that quotes the URL, expression errors and target:, in runs of `vicflow run`
    (plain, -v, --output json) and a plan: none of them in Prefect's database (logs, artifacts, events, states,
    concurrency limits), PREFECT_HOME, anything the CLI printed, or the OpenTelemetry spans the runs exported."""
    token, token_core = marked("tok")
    env_token, env_core = marked("env", "%41é€ +&=\\'\"\n[$]")  # userinfo: no @ : / # (they end it)
    first, first_core = marked("one")
    second, second_core = marked("two")
    secrets = [(token, token_core), (env_token, env_core), (first, first_core), (second, second_core)]
    home = tmp_path / "prefect-home"
    (tmp_path / "hooks.yaml").write_text(BLUEPRINT.replace("PORT", str(hooks[0])))
    (tmp_path / "inputs.yaml").write_text(json.dumps({"pair": [first, second]}))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VICFLOW_"))},
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a shared machine may be slow to start it
        "VICFLOW_STATE_DIR": str(tmp_path / "state"),
        "VICFLOW_DISABLE_PLUGIN_AUTOLOAD": "1",
        "VICFLOW_SECRET_HOOK_TOKEN": env_token,
        "PYTHONPATH": str(REPO),
        "COLUMNS": "300",
    }
    base = [sys.executable, "-m", "vicflow.flows.cli.main"]
    given = ["--inputs", str(tmp_path / "inputs.yaml"), "--set", f"token={token}",
             "--set", "env_token=${{ secrets.hook_token }}"]  # fmt: skip
    printed = ""
    with Receiver() as traces:  # the runs' OpenTelemetry spans (docs/tracing.md), as an OTLP collector gets them
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = traces.endpoint
        for extra in ([], ["-v"], ["--output", "json"]):
            result = subprocess.run([*base, "run", str(tmp_path / "hooks.yaml"), *given, *extra], env=env,
                                    capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
            printed += result.stdout + result.stderr
            assert result.returncode == 0, result.stderr[-3000:]
            assert "completed with failures" in result.stdout + result.stderr
        plan = subprocess.run([*base, "plan", str(tmp_path / "hooks.yaml"), *given, "--output", "json"], env=env,
                              capture_output=True, text=True, timeout=600, cwd=tmp_path)  # fmt: skip
        printed += plan.stdout + plan.stderr
    spans = traces.snapshot()
    # the scan reads real spans: the three runs and the plan, and each run's calls with their URLs
    assert sorted(s.attributes["vicflow.run.state"] for s in spans if s.name == "vicflow.run") == [
        "completed with failures", "completed with failures", "completed with failures", "planned"]  # fmt: skip
    urls = [s.attributes.get("url.full") or s.attributes.get("http.url") for s in spans if s.kind == "client"]
    assert len(urls) >= 9 and any("/hooks/***" in url for url in urls), urls  # path, body, fail: three runs
    sent = b"".join(traces.bodies)

    # the scan looks where the secrets went: the server got each of them
    received = "\n".join(f"{r['path']} {r['headers'].get('Authorization') or ''} {r['body']}" for r in hooks[1])
    assert token_core in received and first_core in received and second_core in received, received[:2000]
    database = b"".join(path.read_bytes() for path in home.glob("prefect.db*"))
    assert b"vicflow-journal" in database and b"vicflow-target-t-secret-" in database, "the scan reads the database"
    found = []
    for secret, core in secrets:
        for form in leaks(secret, core):
            if form in printed.encode():
                found.append(f"the CLI printed {form!r}")
            if form in sent:
                found.append(f"a span exported over OTLP holds {form!r}")
            for path in [*home.rglob("*"), *(tmp_path / "state").rglob("*")]:
                if path.is_file() and form in path.read_bytes():
                    found.append(f"{path.relative_to(tmp_path)} holds {form!r}")
    assert not found, found
