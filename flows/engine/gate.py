"""Policy on a run: the whole plan and its blast radius judged by the run's policy before any step applies.

``deny`` stops the run before anything changes, with the policy's messages; ``require_approval`` inserts an
approval gate (``POLICY_GATE``) whose plan hash covers the plan rows and the policy's outcome; ``warn`` and
``allow`` go on. Every outcome, and the answer of the gate, is an audit record.
"""

from __future__ import annotations

from typing import Any

from vicflow.flows.engine import planner
from vicflow.flows.engine.attempt import step_logger
from vicflow.flows.engine.run import Run, RunState
from vicflow.flows.governance import audit, blast_radius, policy
from vicflow.flows.language import expressions
from vicflow.flows.language.spec import Approval
from vicflow.plugins import masking

POLICY_GATE = "policy-approval"  # the gate's name in the approval form, the log and the audit trail


def judge(
    run: Run, rows: list[dict[str, Any]], chosen: policy.Policy
) -> tuple[dict[str, Any], blast_radius.BlastRadius]:
    """The outcome of policy ``chosen`` for the run's plan ``rows``, and their blast radius."""
    radius = blast_radius.of(rows)
    target = None
    if run.blueprint.target:  # as the run's concurrency limit names it (flows/on_prefect/flow.py)
        target = masking.mask(
            str(expressions.render(run.blueprint.target, {"inputs": run.inputs, "event": run.event or {}}))
        )
    document = policy.document(run.blueprint.name, target, rows, radius.to_dict())
    return chosen.evaluate(document).to_dict(), radius


def whole_plan(run: Run) -> list[dict[str, Any]]:
    """The rows `vicflow plan` shows (so the gate's plan hash is the one plan printed), planned read-only."""
    return planner.plan_steps(run, record=False)


def check(run: Run, chosen: policy.Policy) -> tuple[RunState, str] | None:
    """Before the first step: None to go on, or (the run's final state, why) when policy ``chosen`` stops it."""
    rows = whole_plan(run)
    outcome, radius = judge(run, rows, chosen)
    run.outcome = outcome
    digest = planner.digest(rows, outcome)
    said = "; ".join(f"{rule}: {message}" for rule, found in outcome["messages"].items() for message in found)
    step_logger(POLICY_GATE).info(
        "policy %s: %s (plan %s)%s", outcome["policy"], outcome["decision"], digest, f": {said}" if said else ""
    )
    audit.AuditLog().append(
        "policy",
        audit.this_process(),
        run_id=run.run_id,
        blueprint=run.blueprint.name,
        plan_hash=digest,
        comment=said,
        detail={
            "decision": outcome["decision"],
            "policy": outcome["policy"],
            "digest": outcome["digest"],
            "blast_radius": radius.counts,
        },
    )
    if outcome["decision"] == "deny":
        reasons = "; ".join(outcome["messages"]["deny"])
        return RunState.DENIED, masking.mask(f"denied by policy {outcome['policy']}: {reasons}")
    if outcome["decision"] != "require_approval":
        return None
    asked = Approval(message="the policy asks for approval: " + "; ".join(outcome["messages"]["approval"]))
    decision, comment, who = run.executor.approve(POLICY_GATE, asked, rows, digest)
    record(run, POLICY_GATE, decision, who, digest, comment)
    if decision != "approved":
        why = f"the approval the policy asked for was {decision}"
        if comment:
            why += f" ({comment})"
        return RunState.CANCELLED, why
    again = whole_plan(run)
    changed, _ = judge(run, again, chosen)
    if planner.digest(again, changed) != digest:
        return RunState.CANCELLED, masking.mask(
            f"the plan changed since approval ({digest} -> {planner.digest(again, changed)}): "
            f"{planner.diff(rows, again) or 'the policy decides otherwise now'}"
        )
    return None


def record(run: Run, gate: str, decision: str, who: str, digest: str, comment: str) -> None:
    """An approval gate's answer in the audit trail: approval, rejection, or cancellation (no answer in time)."""
    event = {"approved": "approval", "rejected": "rejection"}.get(decision, "cancellation")
    audit.AuditLog().append(
        event,
        who,
        run_id=run.run_id,
        blueprint=run.blueprint.name,
        plan_hash=digest,
        comment=comment,
        detail={"gate": gate, "decision": decision, "policy": (run.outcome or {}).get("decision", "none")},
    )
