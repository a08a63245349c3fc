"""The vicflow command: exit codes 0 / 1 / 2, JSON output, validation, schema."""

import json
import textwrap

import pytest

from tests.conftest import run_cli

GOOD = """
name: cli
inputs:
  fail: {type: boolean, default: false}
  token: {type: secret, required: false}
steps:
  - id: a
    uses: echo
    with: {message: "token ${{ inputs.token }}"}
  - id: b
    uses: undoable
    with: {name: b, fail: "${{ inputs.fail }}"}
"""


@pytest.fixture
def blueprint(tmp_path):
    path = tmp_path / "cli.yaml"
    path.write_text(textwrap.dedent(GOOD))
    return str(path)


def test_validate_ok_and_invalid(blueprint, tmp_path, cli_env):
    assert run_cli(["validate", blueprint], cli_env).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsteps:\n  - id: a\n    uses: compose-up\n")
    result = run_cli(["validate", "--output", "json", str(bad)], cli_env)
    assert result.returncode == 2
    problem = json.loads(result.stdout)["problems"][0]
    assert (problem["line"], problem["column"], problem["step"]) == (4, 11, "a")
    assert problem["message"] == "unknown step type 'compose-up'"


@pytest.mark.prefect
def test_run_exit_codes_and_json_output(blueprint, cli_env):
    ok = run_cli(["run", blueprint, "--set", "token=t0ps3cret", "--output", "json"], cli_env)
    assert ok.returncode == 0, ok.stderr[-3000:]
    summary = json.loads(ok.stdout)
    assert summary["state"] == "completed"
    assert summary["steps"][0]["outputs"]["message"] == "token ***"
    assert "t0ps3cret" not in ok.stdout + ok.stderr

    failed = run_cli(["run", blueprint, "--set", "fail=true"], cli_env)
    assert failed.returncode == 1
    assert "b failed on purpose" in failed.stderr

    invalid = run_cli(["run", blueprint, "--set", "fial=true"], cli_env)
    assert invalid.returncode == 2
    assert "unknown input 'fial'" in invalid.stderr and "did you mean 'fail'?" in invalid.stderr


def test_plan_prints_changes_changes_nothing_and_needs_no_prefect_server(blueprint, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "PREFECT_API_URL"}  # nothing to reach, nothing started
    result = run_cli(["plan", blueprint, "--output", "json"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["plan"][0]["step"] == "a" and summary["plan"][0]["action"] == "create"
    assert summary["run_id"].startswith("local-plan-")


def test_plan_detailed_exitcode_says_changes_none_or_error(blueprint, tmp_path, cli_env):
    """As terraform plan -detailed-exitcode: 2 with changes, 0 with none, 1 when a step cannot be planned; plan
    without the flag exits 1 on an error too (it used to exit 0)."""
    env = {k: v for k, v in cli_env.items() if k != "PREFECT_API_URL"}
    assert run_cli(["plan", blueprint, "--detailed-exitcode"], env).returncode == 2
    quiet = tmp_path / "quiet.yaml"
    quiet.write_text("name: quiet\nsteps:\n  - {id: a, uses: echo, if: false, with: {message: hi}}\n")
    assert run_cli(["plan", str(quiet), "--detailed-exitcode"], env).returncode == 0
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "name: broken\nsteps:\n  - {id: a, uses: echo, for_each: \"${{ 'text' }}\", with: {message: x}}\n"
    )
    for flags in ([], ["--detailed-exitcode"]):
        result = run_cli(["plan", str(broken), *flags], env)
        assert result.returncode == 1, result.stderr[-1000:]
        assert "for_each must produce a list" in result.stderr
    invalid = run_cli(["plan", str(broken), "--set", "nope=1", "--detailed-exitcode"], env)
    assert invalid.returncode == 1, "with the flag, 2 means changes: a bad input is 1"
    assert "unknown input 'nope'" in invalid.stderr


@pytest.mark.prefect
def test_plan_record_plans_as_a_flow_run(blueprint, cli_env):
    result = run_cli(["plan", blueprint, "--record", "--output", "json"], cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["plan"][0]["action"] == "create"
    assert len(summary["run_id"]) == 36, "a Prefect flow-run id"


def test_schema_is_json_schema(cli_env):
    result = run_cli(["schema"], cli_env)
    schema = json.loads(result.stdout)
    assert schema["title"] == "vicflow blueprint" and "steps" in schema["required"]


def test_a_plan_bounded_by_the_budget_is_a_located_error(tmp_path, cli_env):
    """for_each of a million items, or a bomb in with:, stops the plan at once with file:line:column (exit 2)."""
    path = tmp_path / "big.yaml"
    path.write_text(
        "name: big\nsteps:\n  - id: fan\n    uses: echo\n    for_each: ${{ [1]*300000 }}\n"
        "    with: {message: x}\n  - id: bomb\n    uses: echo\n    with: {message: \"${{ 'x'|center(10**9) }}\"}\n"
    )
    result = run_cli(["plan", str(path)], cli_env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"{path}:5:15: step 'fan': for_each: for_each gave 300,000 items; at most 10,000 are allowed" in result.stderr
    )
    path.write_text(path.read_text().replace("${{ [1]*300000 }}", "[1, 2]"))
    result = run_cli(["plan", str(path)], cli_env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert f"{path}:9:11: step 'bomb': with: \"${{{{ 'x'|center(10**9) }}}}\": center would build" in result.stderr


@pytest.mark.prefect
def test_run_reads_the_blueprint_and_looks_up_each_secret_once(blueprint, prefect_api, monkeypatch, capsys):
    """`vicflow run` loads the blueprint and prepares its inputs once, before Prefect starts, and the flow run
    takes both as they are: the file is parsed once and a secret's store is asked once."""
    import signal
    import sys

    from vicflow.flows.cli import main as cli
    from vicflow.flows.language import blueprint as bp
    from vicflow.flows.language.secrets import Secrets

    parsed, asked = [], []
    real_parse, real_lookup = bp.parse, Secrets.__getitem__
    monkeypatch.setattr(bp, "parse", lambda *args, **kwargs: parsed.append(args[1]) or real_parse(*args, **kwargs))
    monkeypatch.setattr(Secrets, "__getitem__", lambda self, name: asked.append(name) or real_lookup(self, name))
    monkeypatch.setenv("VICFLOW_SECRET_CLI_TOKEN", "t0k3n-once")
    monkeypatch.setenv("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")  # the command sets it for its process
    for name in ("stdout", "stderr"):  # the command caps its streams; put them back afterwards
        monkeypatch.setattr(sys, name, getattr(sys, name))
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        code = cli.main(["run", blueprint, "--set", "token=${{ secrets.cli_token }}", "--output", "json"])
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    summary = json.loads(capsys.readouterr().out)
    assert code == 0 and summary["state"] == "completed", summary
    assert summary["steps"][0]["outputs"]["message"] == "token ***"
    assert parsed == [blueprint] and asked == ["cli_token"]


def test_a_bad_metrics_address_is_one_located_error(tmp_path, cli_env):
    """`vicflow worker` and `vicflow listen` say what is wrong with VICFLOW_METRICS_ADDR or --metrics-port, and
    start nothing (docs/metrics.md)."""
    env = {**cli_env, "VICFLOW_METRICS_ADDR": "metrics-host:ninety"}
    worker = run_cli(["worker", "--pool", "nowhere"], env, timeout=120)
    assert worker.returncode == 2, worker.stderr
    assert "VICFLOW_METRICS_ADDR='metrics-host:ninety' is not HOST:PORT or PORT" in worker.stderr
    assert "Traceback" not in worker.stderr
    config = tmp_path / "listen.yaml"
    config.write_text("registry: {listen: '127.0.0.1:1', token: t}\n")
    listen = run_cli(["listen", "--config", str(config), "--metrics-port", "70000"], cli_env, timeout=120)
    assert listen.returncode == 2
    assert "--metrics-port: invalid _port value" not in listen.stderr and "70000 is not a TCP port" in listen.stderr
