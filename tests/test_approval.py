"""Approval gates on a real Prefect server: the run publishes the plan behind the gate, pauses for a form,
and applies only the plan that was approved (`vicflow run` as a subprocess; answers through Prefect's API)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.prefect

GATED = """
name: gated
steps:
  - id: before
    uses: write_file
    with: {file: before.txt, text: "runs before the gate"}
  - id: deploy
    uses: write_file
    needs: before
    approval: {message: "write deploy.txt?", timeout_seconds: TIMEOUT}
    with: {file: deploy.txt, text: "version 2"}
  - id: after
    uses: write_file
    needs: deploy
    with: {file: after.txt, text: "${{ steps.deploy.outputs.file }}"}
"""


def start(folder: Path, env: dict, *args: str, timeout: float = 120) -> tuple[subprocess.Popen, Path]:
    blueprint = folder / "gated.yaml"
    blueprint.write_text(GATED.replace("TIMEOUT", str(timeout)))
    process = subprocess.Popen(
        [sys.executable, "-m", "vicflow.flows.cli.main", "run", str(blueprint), "--output", "json", *args],
        env={**env, "VICFLOW_APPROVAL_POLL_SECONDS": "1"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, blueprint


def paused_run(blueprint: Path, deadline: float = 90):
    """The flow run of ``blueprint`` once it is Paused for its approval."""
    from prefect import get_client

    end = time.monotonic() + deadline
    with get_client(sync_client=True) as client:
        while time.monotonic() < end:
            for run in client.read_flow_runs(limit=50):
                if run.parameters.get("blueprint") == str(blueprint) and run.state and run.state.is_paused():
                    return run
            time.sleep(0.5)
    raise AssertionError(f"no paused run of {blueprint} within {deadline}s")


def finish(process: subprocess.Popen) -> tuple[int, dict, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, json.loads(out) if out.strip() else {}, err


def final_state(run_id) -> str:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.type.value


def test_approved_through_the_api_applies_the_plan_it_showed(tmp_path, cli_env):
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    process, blueprint = start(tmp_path, cli_env)
    run = paused_run(blueprint)
    assert (tmp_path / "before.txt").exists() and not (tmp_path / "deploy.txt").exists(), "nothing behind the gate"
    with get_client(sync_client=True) as client:
        artifact = next(
            a for a in client.read_artifacts() if a.key == "vicflow-gated-approval" and a.flow_run_id == run.id
        )
    assert "| deploy | create |" in artifact.data and "| after | unknown |" in artifact.data
    assert "write deploy.txt?" in artifact.data
    resume_flow_run(run.id, run_input={"approve": True, "comment": "looks right"})
    code, summary, err = finish(process)
    assert code == 0, err[-2000:]
    assert (tmp_path / "deploy.txt").read_text() == "version 2"
    assert (tmp_path / "after.txt").read_text() == str(tmp_path / "deploy.txt")
    note = next(s for s in summary["steps"] if s["id"] == "deploy")["note"]
    assert note.startswith("approved plan ") and "looks right" in note
    assert final_state(run.id) == "COMPLETED"


def test_rejected_cancels_the_run_and_applies_and_undoes_nothing(tmp_path, cli_env):
    from prefect.flow_runs import resume_flow_run

    process, blueprint = start(tmp_path, cli_env)
    run = paused_run(blueprint)
    resume_flow_run(run.id, run_input={"approve": False, "comment": "not today"})
    code, summary, err = finish(process)
    assert code == 1
    assert summary["state"] == "cancelled" and "was rejected (not today)" in summary["error"]
    states = {s["id"]: s["state"] for s in summary["steps"]}
    assert states == {"before": "completed", "deploy": "cancelled", "after": "pending"}
    assert not (tmp_path / "deploy.txt").exists() and (tmp_path / "before.txt").exists(), "no rollback either"
    assert final_state(run.id) == "CANCELLED"


def test_no_answer_in_time_cancels_the_run(tmp_path, cli_env):
    process, blueprint = start(tmp_path, cli_env, timeout=3)
    code, summary, err = finish(process)
    assert code == 1 and summary.get("state") == "cancelled", err[-3000:]
    assert "was timed out (no answer within 3s)" in summary["error"]
    assert not (tmp_path / "deploy.txt").exists()


def test_a_plan_that_changed_since_approval_is_refused_with_the_difference(tmp_path, cli_env):
    from prefect.flow_runs import resume_flow_run

    process, blueprint = start(tmp_path, cli_env)
    run = paused_run(blueprint)
    (tmp_path / "deploy.txt").write_text("version 1")  # someone changed the target meanwhile
    resume_flow_run(run.id, run_input={"approve": True})
    code, summary, err = finish(process)
    assert code == 1
    deploy = next(s for s in summary["steps"] if s["id"] == "deploy")
    assert deploy["state"] == "failed" and deploy["error"].startswith("the plan changed since approval")
    assert "- deploy create" in deploy["error"] and "+ deploy update" in deploy["error"]
    assert (tmp_path / "deploy.txt").read_text() == "version 1", "the changed target is left as it was"


def test_approve_in_advance_for_scripts(tmp_path, cli_env):
    process, _ = start(tmp_path, cli_env, "--approve")
    code, summary, err = finish(process)
    assert code == 0, err[-2000:]
    assert (tmp_path / "deploy.txt").read_text() == "version 2"


FIREWALL = """
name: open-firewall
inputs:
  server: {type: string}
  user: {type: string}
  password: {type: secret}
  thumbprint: {type: string}
steps:
  - id: firewall
    uses: firewall
    approval: {message: "open vSPC (all outbound TCP) on every host of DC0_C0?"}
    with:
      server: ${{ inputs.server }}
      user: ${{ inputs.user }}
      password: ${{ inputs.password }}
      thumbprint: ${{ inputs.thumbprint }}
      compute_resource: DC0_C0
      action: allow
"""


@pytest.mark.vcsim
def test_the_simulator_changed_between_pause_and_approval_so_the_plan_is_refused(tmp_path, cli_env, vcsim):
    """The approver saw "open vSPC on 3 hosts"; meanwhile someone opened it by hand (the simulator keeps one
    firewall state for the cluster's hosts, so opening it on one opens it on all three)."""
    from prefect.flow_runs import resume_flow_run
    from pyVim.connect import Disconnect
    from pyVmomi import vim

    blueprint = tmp_path / "firewall.yaml"
    blueprint.write_text(FIREWALL)
    sets = [
        f"server={vcsim.url}",
        f"user={vcsim.username}",
        f"password={vcsim.password}",
        f"thumbprint={vcsim.thumbprint}",
    ]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vicflow.flows.cli.main",
            "run",
            str(blueprint),
            "--output",
            "json",
            *[arg for s in sets for arg in ("--set", s)],
        ],
        env={**cli_env, "VICFLOW_APPROVAL_POLL_SECONDS": "1"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = paused_run(blueprint)
    si = vcsim.connect()
    try:
        view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.HostSystem], True)
        hosts = {h.name: h for h in view.view if h.name.startswith("DC0_C0_H")}
        hosts["DC0_C0_H0"].configManager.firewallSystem.EnableRuleset(id="vSPC")
        resume_flow_run(run.id, run_input={"approve": True, "comment": "open all three"})
        code, summary, err = finish(process)
        assert code == 1, err[-2000:]
        step = summary["steps"][0]
        assert step["state"] == "failed" and step["error"].startswith("the plan changed since approval")
        assert "- firewall update DC0_C0_H0" in step["error"] and "+ firewall none DC0_C0_H0" in step["error"]
        assert step["attempts"] == 0, "the step never ran: nothing was applied on the plan nobody approved"
    finally:
        Disconnect(si)


GOVERNED = """
name: governed
steps:
  - id: firewall
    uses: touch
    with:
      kind: host_firewall
      targets: [esx01, esx02, esx03, esx04, esx05, esx06, esx07, esx08, esx09]
  - id: deploy
    uses: write_file
    needs: firewall
    with: {file: deploy.txt, text: "version 2"}
"""
EXAMPLE_POLICY = REPO / "policies" / "example"


def test_a_policy_asking_for_approval_gates_the_run_and_the_trail_keeps_who_approved_which_plan(tmp_path, cli_env):
    """The example policy asks for approval of more than 8 hosts' firewalls: the run pauses before its first step
    with the plan, its blast radius and the policy's message; the approver's name, comment and the plan hash
    `vicflow plan --policy` printed are in the audit trail, which verifies."""
    from prefect import get_client
    from prefect.flow_runs import resume_flow_run

    blueprint = tmp_path / "governed.yaml"
    blueprint.write_text(GOVERNED)
    env = {**cli_env, "VICFLOW_AUDIT_LOG": str(tmp_path / "audit.jsonl"), "VICFLOW_APPROVAL_POLL_SECONDS": "1"}
    plan = run_cli(["plan", str(blueprint), "--policy", str(EXAMPLE_POLICY), "--output", "json"], env)
    planned = json.loads(plan.stdout)
    assert planned["policy"]["decision"] == "require_approval", plan.stderr[-2000:]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vicflow.flows.cli.main",
            "run",
            str(blueprint),
            "--output",
            "json",
            "--policy",
            str(EXAMPLE_POLICY),
        ],  # fmt: skip
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = paused_run(blueprint)
    assert not (tmp_path / "deploy.txt").exists(), "no step before the policy's gate"
    with get_client(sync_client=True) as client:
        artifact = next(
            a for a in client.read_artifacts() if a.key == "vicflow-governed-approval" and a.flow_run_id == run.id
        )
    assert f"plan {planned['plan_hash']}" in artifact.data
    assert "| ESXi hosts whose firewall changes | 9 |" in artifact.data
    assert "## Policy: require_approval" in artifact.data
    assert "approval: 9 ESXi hosts' firewalls would change (more than 8)" in artifact.data
    resume_flow_run(run.id, run_input={"approve": True, "comment": "CHG-42", "approver": "alice"})
    code, summary, err = finish(process)
    assert code == 0, err[-2000:]
    assert (tmp_path / "deploy.txt").read_text() == "version 2"

    trail = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["event"], r["who"]) for r in trail][-1] == ("approval", "alice")
    policy, approval = trail[-2:]
    assert policy["event"] == "policy" and policy["detail"]["decision"] == "require_approval"
    assert approval["plan_hash"] == policy["plan_hash"] == planned["plan_hash"]
    assert approval["comment"] == "CHG-42" and approval["run_id"] == str(run.id)
    verified = run_cli(["audit", "verify"], env)
    assert verified.returncode == 0 and "2 records, chain intact" in verified.stdout, verified.stderr


def test_a_denying_policy_stops_the_run_before_any_step(tmp_path, cli_env):
    blueprint = tmp_path / "shrink.yaml"
    blueprint.write_text(
        GOVERNED.replace("kind: host_firewall", "kind: volume_store\n      action: delete").replace(
            "targets: [esx01, esx02, esx03, esx04, esx05, esx06, esx07, esx08, esx09]", "targets: [LocalDS_0/vch]"
        )
    )
    env = {**cli_env, "VICFLOW_AUDIT_LOG": str(tmp_path / "audit.jsonl")}
    result = run_cli(["run", str(blueprint), "--policy", str(EXAMPLE_POLICY), "--output", "json"], env)
    assert result.returncode == 1, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["state"] == "denied"
    assert "would delete volume store LocalDS_0/vch: never delete a volume store" in summary["error"]
    assert not (tmp_path / "deploy.txt").exists()
    (record,) = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert record["event"] == "policy" and record["detail"]["decision"] == "deny"
    said = run_cli(["run", str(blueprint), "--policy", str(EXAMPLE_POLICY)], env)
    assert said.returncode == 1 and "governed: denied in" in said.stderr
    assert f"denied by policy {EXAMPLE_POLICY}: step firewall would delete volume store LocalDS_0/vch" in said.stderr
