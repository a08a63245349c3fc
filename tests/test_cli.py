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
