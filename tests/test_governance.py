"""Governance wired into plans and runs (flows/governance): `vicflow plan` shows the blast radius and what the
policy says; a run's policy judges the whole plan before any step (deny stops it, require approval gates it);
every decision is an audit record that `vicflow audit verify` checks; a tampered resume journal is refused.

The engine runs on the thread executor (no Prefect) and `vicflow` as a subprocess planning here; the approval
form on a real Prefect server is tests/test_approval.py's."""

from __future__ import annotations

import json
import os
import textwrap
import uuid
from pathlib import Path

import pytest
from vicflow.flows.engine import execution, journal
from vicflow.flows.engine.thread_executor import ThreadSteps
from vicflow.flows.governance.audit import AuditLog
from vicflow.flows.governance.integrity import TamperedError
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language.inputs import prepare
from vicflow.plugins.errors import RunFailed
from vicflow.plugins.manager import default_registry

from tests.conftest import REPO, run_cli
from tests.plugins import engine_steps

EXAMPLE = REPO / "policies" / "example"

# 9 hosts' firewalls: the example policy asks for approval of more than 8
SITE = """
name: site
steps:
  - id: firewall
    uses: touch
    with:
      kind: host_firewall
      targets: [esx01, esx02, esx03, esx04, esx05, esx06, esx07, esx08, esx09]
  - id: app
    uses: touch
    needs: firewall
    with: {kind: container, action: recreate, targets: [gogs, gogs-db]}
"""

DENIED = """
name: shrink
steps:
  - id: store
    uses: touch
    with: {kind: volume_store, action: delete, targets: ["LocalDS_0/vch/volumes"]}
"""


@pytest.fixture
def cli_env_here(site):
    """`vicflow` as a subprocess planning here: no Prefect server, this test's state directory and trail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    return {**env, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Every test its own state directory (the journal) and audit trail."""
    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VICFLOW_AUDIT_LOG", str(tmp_path / "audit.jsonl"))
    monkeypatch.delenv("VICFLOW_AUDIT_KEY", raising=False)
    monkeypatch.delenv("VICFLOW_POLICY", raising=False)
    engine_steps.JOURNAL.clear()
    return tmp_path


def write(folder: Path, text: str) -> str:
    path = folder / f"bp-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return str(path)


def execute(path: str, **kwargs) -> dict:
    registry = default_registry()
    document = bp.load(path, registry)
    values = prepare(document, inputs=kwargs.pop("inputs", None)).values
    try:
        return execution.execute(document, values, registry, uuid.uuid4().hex, executor=ThreadSteps, **kwargs)
    except RunFailed as exc:  # RunCancelled too
        return exc.summary


def applied() -> list[str]:
    return [name for action, name, _ in engine_steps.JOURNAL if action == "apply"]


def test_plan_shows_the_blast_radius_and_the_policy_asking_for_approval(site, cli_env_here):
    path = write(site, SITE)
    result = run_cli(["plan", path, "--policy", str(EXAMPLE), "--output", "json"], cli_env_here)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["blast_radius"]["esxi_hosts_firewall"] == 9
    assert summary["blast_radius"]["containers_replaced"] == 2
    assert summary["policy"]["decision"] == "require_approval"
    assert summary["policy"]["messages"]["approval"] == ["9 ESXi hosts' firewalls would change (more than 8)"]
    assert {row["kind"] for row in summary["plan"]} == {"host_firewall", "container"}

    table = run_cli(["plan", path, "--policy", str(EXAMPLE)], cli_env_here)
    assert table.returncode == 0, table.stderr
    assert "ESXi hosts whose firewall changes │ 9" in table.stderr
    assert f"policy {EXAMPLE}: require_approval" in table.stderr
    assert "approval: 9 ESXi hosts' firewalls would change (more than 8)" in table.stderr
    assert f"plan hash {summary['plan_hash']}" in table.stderr

    eight = write(site, SITE.replace(", esx09", ""))
    small = run_cli(["plan", eight, "--policy", str(EXAMPLE), "--output", "json"], cli_env_here)
    assert json.loads(small.stdout)["policy"]["decision"] == "allow"
    assert not applied(), "a plan applies nothing"


def test_the_policys_outcome_is_part_of_the_plan_hash(site, cli_env_here):
    path = write(site, SITE)
    plain = json.loads(run_cli(["plan", path, "--output", "json"], cli_env_here).stdout)
    governed = json.loads(run_cli(["plan", path, "--policy", str(EXAMPLE), "--output", "json"], cli_env_here).stdout)
    assert plain["plan"] == governed["plan"]
    assert plain["plan_hash"] != governed["plan_hash"]
    assert "policy" not in plain


def test_plan_with_a_denying_policy_says_why_and_exits_1(site, cli_env_here):
    result = run_cli(["plan", write(site, DENIED), "--policy", str(EXAMPLE)], cli_env_here)
    assert result.returncode == 1
    assert "deny: step store would delete volume store LocalDS_0/vch/volumes: never delete a volume store" in (
        result.stderr
    )
    assert (
        json.loads(run_cli(["plan", write(site, DENIED), "--output", "json"], cli_env_here).stdout)["blast_radius"][
            "volume_stores_deleted"
        ]
        == 1
    )


def test_a_policy_that_does_not_load_is_a_located_error(site, cli_env_here):
    broken = site / "policy"
    broken.mkdir()
    (broken / "site.rego").write_text("package vicflow.plan\n\nimport rego.v1\n\ndeny contains msg if { 1 +++ }\n")
    result = run_cli(["plan", write(site, SITE), "--policy", str(broken)], cli_env_here)
    assert result.returncode == 2
    assert f"{broken / 'site.rego'}:5:" in result.stderr and "Traceback" not in result.stderr
    missing = run_cli(["run", write(site, SITE), "--policy", str(site / "nowhere")], cli_env_here)
    assert missing.returncode == 2 and "no such directory" in missing.stderr


def test_a_denying_policy_stops_the_run_before_any_step_and_is_audited(site):
    summary = execute(write(site, DENIED), policy=str(EXAMPLE))
    assert summary["state"] == "denied"
    assert "never delete a volume store" in summary["error"]
    assert applied() == []
    (record,) = AuditLog().records()
    assert record["event"] == "policy" and record["detail"]["decision"] == "deny"
    assert "never delete a volume store" in record["comment"]


def test_a_policy_asking_for_approval_gates_the_run_and_the_answer_is_audited(site):
    path = write(site, SITE)
    refused = execute(path, policy=str(EXAMPLE))  # no Prefect: no one to ask, so no
    assert refused["state"] == "cancelled" and "the approval the policy asked for was rejected" in refused["error"]
    assert applied() == []

    planned = execute(path, policy=str(EXAMPLE), dry_run=True)
    approved = execute(path, policy=str(EXAMPLE), approve=True)
    assert approved["state"] == "completed"
    assert applied() == ["firewall", "app"]
    events = [(r["event"], r["detail"].get("decision")) for r in AuditLog().records()]
    assert events == [
        ("policy", "require_approval"),
        ("rejection", "rejected"),
        ("policy", "require_approval"),
        ("approval", "approved"),
    ]
    approval = AuditLog().records()[-1]
    assert approval["plan_hash"] == planned["plan_hash"], "the approval is bound to the hash vicflow plan shows"
    assert approval["comment"] == "--approve" and "@" in approval["who"]


def test_audit_verify_names_an_edited_and_a_removed_record(site, cli_env_here):
    execute(write(site, SITE), policy=str(EXAMPLE), approve=True)
    execute(write(site, DENIED), policy=str(EXAMPLE))
    log = site / "audit.jsonl"
    ok = run_cli(["audit", "verify"], cli_env_here)
    assert ok.returncode == 0, ok.stderr
    assert "3 records, chain intact" in ok.stdout

    lines = log.read_text().splitlines()
    approval = json.loads(lines[1])
    approval["who"] = "someone else"
    log.write_text("\n".join([lines[0], json.dumps(approval, sort_keys=True), lines[2]]) + "\n")
    edited = run_cli(["audit", "verify"], cli_env_here)
    assert edited.returncode == 1
    assert "record 2 (approval by someone else at" in edited.stderr and "was edited" in edited.stderr

    log.write_text("\n".join([lines[0], lines[2]]) + "\n")
    removed = run_cli(["audit", "verify"], cli_env_here)
    assert removed.returncode == 1 and "record 2 removed before record 3 (policy by" in removed.stderr


RESUMABLE = """
name: resumable
inputs:
  fail: {type: boolean, default: true}
steps:
  - id: a
    uses: echo
    with: {message: first}
  - id: b
    uses: undoable
    needs: a
    on_failure: keep
    with: {name: b, fail: "${{ inputs.fail }}"}
"""


def test_a_tampered_resume_journal_refuses_to_resume_naming_the_step(site):
    path = write(site, RESUMABLE)
    first = execute(path)
    assert first["state"] == "failed"
    stored = journal.path_of(first["run_id"])
    kept = stored.read_text()
    data = json.loads(kept)
    data["steps"]["a"]["outputs"]["message"] = "edited"
    stored.write_text(json.dumps(data))
    engine_steps.JOURNAL.clear()
    with pytest.raises(TamperedError, match=r"the journal of run \w+ was edited: the entry of step 'a'"):
        execute(path, inputs={"fail": False}, resume=first["run_id"])
    assert applied() == [], "nothing ran"

    # the journal as vicflow wrote it resumes, whatever order a store gives its steps back in (PostgreSQL's
    # jsonb orders keys by length), and the resume is audited
    reordered = json.loads(kept)
    reordered["steps"] = dict(reversed(list(reordered["steps"].items())))
    stored.write_text(json.dumps(reordered))
    second = execute(path, inputs={"fail": False}, resume=first["run_id"])
    assert {s["id"]: s["state"] for s in second["steps"]} == {"a": "cached", "b": "completed"}
    (resume,) = [r for r in AuditLog().records() if r["event"] == "resume"]
    assert resume["detail"] == {"resumed": first["run_id"]} and resume["run_id"] == second["run_id"]


@pytest.mark.prefect
def test_the_recorded_plans_artifact_shows_the_blast_radius_and_the_policy(site, cli_env):
    from prefect import get_client

    path = write(site, SITE)
    result = run_cli(["plan", path, "--record", "--policy", str(EXAMPLE), "--output", "json"], cli_env)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    with get_client(sync_client=True) as client:
        (artifact,) = [
            a
            for a in client.read_artifacts()
            if a.key == "vicflow-site-plan" and str(a.flow_run_id) == summary["run_id"]
        ]
    assert "| ESXi hosts whose firewall changes | 9 |" in artifact.data
    assert "| containers replaced | 2 |" in artifact.data
    assert "## Policy: require_approval" in artifact.data
    assert "- approval: 9 ESXi hosts' firewalls would change (more than 8)" in artifact.data
    assert f"plan hash `{summary['plan_hash']}`" in artifact.data


def test_the_sites_policy_wins_over_the_one_a_run_is_given(site, cli_env_here):
    """VICFLOW_POLICY, set where runs execute, applies whatever --policy (or a run form's parameter) says: a
    parameter that could be cleared would let anyone skip the site's policy."""
    path = write(site, SITE)
    other = site / "lenient"
    other.mkdir()
    (other / "allow.rego").write_text('package vicflow.plan\n\nimport rego.v1\n\nwarn contains "lenient" if { true }\n')
    env = {**cli_env_here, "VICFLOW_POLICY": str(EXAMPLE)}
    plain = json.loads(run_cli(["plan", path, "--output", "json"], env).stdout)
    assert plain["policy"]["decision"] == "require_approval" and plain["policy"]["policy"] == str(EXAMPLE)
    given = run_cli(["plan", path, "--policy", str(other), "--output", "json"], env)
    assert json.loads(given.stdout)["policy"]["policy"] == str(EXAMPLE)
    assert f"warning: policy {other} is not applied: VICFLOW_POLICY sets the site's policy, {EXAMPLE}" in given.stderr
    alone = json.loads(run_cli(["plan", path, "--policy", str(other), "--output", "json"], cli_env_here).stdout)
    assert alone["policy"]["decision"] == "warn" and alone["policy"]["messages"] == {"warn": ["lenient"]}


@pytest.mark.prefect
def test_a_journal_edited_in_prefect_refuses_to_resume_naming_the_step(site, cli_env):
    """The journal of a run in Prefect is an artifact anyone with the API can update: `vicflow run --resume` checks
    its seal before the run starts and names what was edited."""
    from prefect import get_client
    from prefect.client.schemas.actions import ArtifactUpdate
    from vicflow.flows.on_prefect import journal as prefect_journal

    path = write(site, RESUMABLE)
    first = run_cli(["run", path, "--output", "json"], cli_env)
    assert first.returncode == 1, first.stderr[-2000:]
    run_id = json.loads(first.stdout)["run_id"]
    with get_client(sync_client=True) as client:
        (artifact,) = [a for a in client.read_artifacts() if a.type == prefect_journal.ARTIFACT_TYPE
                       and str(a.flow_run_id) == run_id]  # fmt: skip
        data = dict(artifact.data)
        assert data["seal"]["alg"] == "sha256"
        data["steps"] = {**data["steps"], "a": {**data["steps"]["a"], "state": "completed", "outputs": {"x": 1}}}
        client.update_artifact(artifact.id, ArtifactUpdate(data=data))
    resumed = run_cli(["run", path, "--set", "fail=false", "--resume", run_id], cli_env)
    assert resumed.returncode == 1
    assert f"the journal of run {run_id} was edited: the entry of step 'a'" in resumed.stderr
    assert "start the run again without --resume" in resumed.stderr and "Traceback" not in resumed.stderr


def test_a_step_approval_under_a_policy_is_bound_to_the_policys_outcome(site):
    """A run whose policy warns still binds its steps' approvals to the outcome: the audited hash is the plan's
    rows hashed with the outcome, not the rows alone."""
    from vicflow.flows.engine import planner

    path = write(site, SITE.replace("    needs: firewall\n", "    needs: firewall\n    approval: {}\n"))
    lenient = site / "lenient"
    lenient.mkdir()
    (lenient / "warn.rego").write_text('package vicflow.plan\n\nimport rego.v1\n\nwarn contains "look" if { true }\n')
    summary = execute(path, policy=str(lenient), approve=True)
    assert summary["state"] == "completed"
    policy_record, approval = AuditLog().records()
    assert policy_record["detail"]["decision"] == "warn"
    assert approval["event"] == "approval" and approval["detail"]["gate"] == "app"
    rows = [{"step": "app", "action": "recreate", "target": name, "detail": "container recreate", "kind": "container"}
            for name in ("gogs", "gogs-db")]  # fmt: skip
    outcome = {"decision": "warn", "messages": {"warn": ["look"]}, "policy": str(lenient),
               "digest": policy_digest(lenient)}  # fmt: skip
    assert approval["plan_hash"] == planner.digest(rows, outcome) != planner.digest(rows)


def policy_digest(folder: Path) -> str:
    from vicflow.flows.governance.policy import Policy

    return Policy(folder).digest
