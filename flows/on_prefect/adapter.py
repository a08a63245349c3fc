"""The engine on Prefect: the executor whose steps are task runs (``PrefectSteps``), the skipped and
retry helpers it gives Prefect, and the summary artifact a finished run publishes.  The only module of
the engine that runs steps through Prefect; ``flow.py`` hands it to ``execution.execute``."""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import LogCreate
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.flow_runs import pause_flow_run, resume_flow_run
from prefect.input import RunInput
from prefect.states import Completed
from pydantic import Field
from vicflow.flows.engine import planner
from vicflow.flows.engine.attempt import apply_step, undo_step
from vicflow.flows.engine.retry import RetryPolicy
from vicflow.flows.engine.run import Run, log
from vicflow.flows.governance import audit, blast_radius
from vicflow.flows.language import fleet
from vicflow.flows.language.spec import Blueprint
from vicflow.flows.on_prefect.child_runs import PrefectChildRuns
from vicflow.flows.on_prefect.journal import PrefectJournal
from vicflow.plugins import masking
from vicflow.plugins.errors import AttemptFailed

# how often a paused run asks whether its approval came (Prefect's default is 10 s)
APPROVAL_POLL_SECONDS = int(os.environ.get("VICFLOW_APPROVAL_POLL_SECONDS", "2"))
APPROVAL_GRACE_SECONDS = 60  # the server's pause outlasts the approval's timeout by this much
# how long a run whose steps are done waits for an absent Prefect server to report
REPORT_WAIT_SECONDS = float(os.environ.get("VICFLOW_REPORT_WAIT_SECONDS", "600"))


@functools.cache
def _approval_form():
    """The approve/reject form a paused run shows in the Prefect UI (a RunInput, built on first use)."""

    class ApprovalForm(RunInput):
        approve: bool = Field(description="apply the plan above (true), or cancel the run (false)")
        comment: str = Field("", description="why (kept in the run's log and the audit trail)")
        # Prefect's open-source server has no users: who answered is what the approver says (the audit trail keeps it)
        approver: str = Field("", description="your name, for the audit trail")

    return ApprovalForm


def _wait_for_approval(form: Any, step_id: str, timeout: float) -> tuple[Any, bool]:
    """Pause the flow run for ``form``; (the answer, whether none came within ``timeout`` s).

    Prefect fails a run whose pause expired on the server, whatever the flow does next. So the server's
    pause lasts longer than ``timeout``, and at ``timeout`` the run answers its own form with a rejection:
    it is Running again and can end Cancelled, as an unanswered approval should."""
    context_now = FlowRunContext.get()
    flow_run = context_now.flow_run if context_now else None
    if flow_run is None:
        raise RuntimeError("an approval gate pauses a flow run: run the blueprint with vicflow run or a deployment")
    box: dict[str, Any] = {}
    context = contextvars.copy_context()  # the pause needs this flow run's context in its thread

    def wait() -> None:
        try:
            box["answer"] = context.run(
                pause_flow_run,
                wait_for_input=form,
                timeout=int(timeout) + APPROVAL_GRACE_SECONDS,
                poll_interval=APPROVAL_POLL_SECONDS,
                key=f"approval-{step_id}",
            )
        except Exception as exc:
            box["error"] = exc

    waiter = threading.Thread(target=wait, name=f"approval-{step_id}", daemon=True)
    waiter.start()
    waiter.join(timeout)
    timed_out = waiter.is_alive()
    if timed_out:
        try:
            resume_flow_run(flow_run.id, run_input={"approve": False, "comment": "timed out"})
        except Exception as exc:  # an answer came at the same moment: it counts
            log.info("approval of %s answered as it timed out: %s", step_id, exc)
            timed_out = False
        waiter.join(APPROVAL_GRACE_SECONDS)
    if "error" in box:
        raise box["error"]
    return box.get("answer"), timed_out


class PrefectSteps:
    """The scheduler's executor: each step (or for_each item) is a Prefect task run named after it, with
    Prefect's retries (the UI shows AwaitingRetry), and a skipped step is a task run in a Completed state
    named Skipped.

    ``publish`` keeps the summary until ``publish_kept()``: the flow publishes after it has given back its
    target's slot, so a run whose steps are done never holds the slot while it waits for an absent server
    (a lease that expires meanwhile would have Prefect cancel the finished run)."""

    def __init__(self, run: Run, subflow: Callable[[Blueprint, dict[str, Any], Any], dict[str, Any]]):
        self.run = run
        self.journal = PrefectJournal()
        self.children = PrefectChildRuns(run.registry, subflow)
        self.kept: dict[str, Any] | None = None
        # the task bodies are this executor's methods: a task run gets the step's id, never the run itself
        self.step_task = task(cache_policy=NONE, persist_result=False, log_prints=False)(self._apply)
        self.skip_task = task(cache_policy=NONE, persist_result=False)(skipped_task)
        self.rollback_task = task(cache_policy=NONE, persist_result=False)(self._undo)

    def _apply(self, step_id: str, index: int | None = None) -> dict[str, Any]:
        return apply_step(self.run, step_id, index)

    def _undo(self, step_id: str) -> str:
        return undo_step(self.run, step_id)

    def _retried(self, task: Any, step_id: str, name: str, label: str) -> Any:
        """``task`` with the step's RetryPolicy, as Prefect's retries (the UI shows AwaitingRetry)."""
        policy = RetryPolicy.of(self.run.blueprint.step(step_id))
        return task.with_options(
            name=name,
            task_run_name=label,
            retries=policy.retries,
            retry_delay_seconds=list(policy.delays) or 0,
            retry_condition_fn=_retry_condition,
        )

    def submit(self, step_id: str, index: int | None, label: str):
        return self._retried(self.step_task, step_id, step_id, label).submit(step_id, index)

    def outcome(self, future) -> tuple[bool, Any, str]:
        future.wait()  # sets the final state from the worker without asking the API
        state = future.state
        if state.is_completed():
            return True, future.result(), ""
        return False, None, state.message or "failed"

    def skip(self, step_id: str, reason: str) -> None:
        self.skip_task.with_options(name=step_id, task_run_name=step_id).submit(reason).wait()

    def rollback(self, step_id: str) -> tuple[bool, str]:
        task = self._retried(self.rollback_task, step_id, f"rollback-{step_id}", f"rollback:{step_id}")
        future = task.submit(step_id)
        future.wait()
        return future.state.is_completed(), future.state.message or ""

    def approve(self, step_id: str, approval: Any, rows: list[dict[str, Any]], digest: str) -> tuple[str, str, str]:
        """Publish the plan behind the gate (artifact, and the form's description), then pause the flow run
        for an approve/reject form in the Prefect UI (or ``resume_flow_run`` with ``{"approve": ...}``)."""
        name = self.run.blueprint.name
        text = planner.markdown(f"Approve `{step_id}` of `{name}`: plan {digest}", rows)
        text += "\n\n" + blast_radius.of(rows).markdown()
        if self.run.outcome is not None:
            text += "\n\n" + policy_markdown(self.run.outcome)
        text += f"\n\n**{approval.message}** (plan hash `{digest}`; the run applies only this plan)"
        create_markdown_artifact(
            key=f"vicflow-{name}-approval"[:100], markdown=masking.mask(text), description=f"plan to approve: {step_id}"
        )
        logger = get_run_logger()
        if self.run.pre_approved:
            logger.info("step %s: plan %s approved in advance (--approve)", step_id, digest)
            return "approved", "--approve", audit.this_process()
        logger.info("step %s: waiting for approval of plan %s (up to %gs)", step_id, digest, approval.timeout_seconds)
        form = _approval_form().with_initial_data(description=masking.mask(text))
        answer, timed_out = _wait_for_approval(form, step_id, approval.timeout_seconds)
        if timed_out:
            return "timed out", f"no answer within {approval.timeout_seconds:g}s", "vicflow (timeout)"
        who = answer.approver.strip() or "unnamed (the Prefect UI or API: the form's approver was empty)"
        return ("approved" if answer.approve else "rejected"), answer.comment, who

    def publish(self, summary: dict[str, Any]) -> None:
        self.kept = summary

    def publish_kept(self) -> None:
        if self.kept is not None:
            summary, self.kept = self.kept, None
            _publish(self.run, summary)
        self.journal.flush()  # what could not be saved while the server was away

    def event(self, name: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        emit_event(event=name, resource=resource, payload=payload)

    def close(self) -> None:
        pass


def policy_markdown(outcome: dict[str, Any]) -> str:
    """The policy's outcome as the plan artifact and the approval form show it."""
    lines = [f"## Policy: {outcome['decision']}", "", f"policy `{outcome['policy']}` (digest `{outcome['digest']}`)"]
    lines += [f"- {rule}: {message}" for rule, found in outcome["messages"].items() for message in found]
    return "\n".join(lines)


def skipped_task(reason: str):
    return Completed(name="Skipped", message=reason)


def _retry_condition(task, task_run, state) -> bool:
    """Another attempt only when the last one failed with an AttemptFailed that says a retry may help."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return False
    return isinstance(exc, AttemptFailed) and exc.transient


def wait_for_server(seconds: float = REPORT_WAIT_SECONDS) -> bool:
    """Wait for the Prefect API to answer its health check, for up to ``seconds``.

    The steps may finish while the server is away (a restart, a lost network): the run then waits to
    report rather than dropping its summary; Prefect's own client gives up after about 60 s."""
    started = time.monotonic()
    with get_client(sync_client=True) as client:
        while client.api_healthcheck() is not None:
            if time.monotonic() - started >= seconds:
                log.warning("the Prefect server did not come back within %.0fs; the summary is not published", seconds)
                return False
            if time.monotonic() - started < 2:  # said once, on the worker's log
                log.warning("the Prefect server does not answer; the run waits up to %.0fs to report", seconds)
            time.sleep(2)
        away = time.monotonic() - started
        if away >= 2:
            _tell_the_run(client, f"the Prefect server did not answer for {away:.0f}s; the run waited, and reports now")
    return True


def _tell_the_run(client: Any, message: str) -> None:
    """A warning in the run's log, sent at once through the client that found the server back.

    Not through the run logger: Prefect's log shipper sends lines in batches and drops a batch it cannot send,
    and the first send after a restart can meet a connection the old server closed (a worker's log then says
    "Error logging to API ... Server disconnected without sending a response": the line was lost once in the
    test of a 75 s outage, tests/reliability/test_prefect_server.py)."""
    log.warning("%s", message)
    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    line = LogCreate(
        name="vicflow",
        level=logging.WARNING,
        message=message,
        timestamp=datetime.now(UTC),
        flow_run_id=context.flow_run.id,
    )
    try:
        client.create_logs([line])
    except Exception as exc:  # the summary matters more than this line
        log.warning("could not send that line to the run's log: %s", exc)


def _publish(run: Run, summary: dict[str, Any]) -> None:
    """The summary table artifact (and the plan as markdown in a dry run), then run.finished."""
    try:
        if not wait_for_server():
            return

        key = f"vicflow-{run.blueprint.name}"[:100]
        rows = [
            {
                **row,
                "outputs": json.dumps(row["outputs"], default=str)[:500],
                "left_behind": "; ".join(row["left_behind"]),
            }
            for row in summary["steps"]
        ]
        if summary.get("left_behind"):
            rows.append({"id": "(run)", "state": summary["state"], "left_behind": "; ".join(summary["left_behind"])})
        description = f"vicflow run of {run.blueprint.name}: {summary['state']}"
        if run.event:
            description += f" (started by event {run.event.get('event', '?')})"
        if run.folded:
            description += (
                f"; {run.folded.get('count')} earlier event(s) folded into it, from {run.folded.get('first_event_id')}"
                f" to {run.folded.get('last_event_id')}"
            )
        create_table_artifact(table=masking.mask(rows), key=f"{key}-summary", description=description)
        if run.event:
            create_markdown_artifact(
                key=f"{key}-trigger",
                description="the event that started this run",
                markdown="```json\n" + json.dumps(masking.mask(run.event), indent=2, default=str) + "\n```",
            )
        if summary.get("outputs"):
            create_markdown_artifact(
                key=f"{key}-outputs",
                description=f"the outputs of {run.blueprint.name}",
                markdown="| output | value |\n|---|---|\n"
                + "\n".join(
                    f"| {k} | {json.dumps(v, default=str)} |" for k, v in masking.mask(summary["outputs"]).items()
                ),
            )
        children = fleet.child_rows(summary["steps"])
        if children:  # a fleet run: one row per child run, with its state and outputs
            create_table_artifact(
                table=masking.mask(children), key=f"{key}-children", description="the blueprints this run ran"
            )
        if "plan" in summary:
            text = planner.markdown(f"Plan for `{run.blueprint.name}`", summary["plan"])
            text += "\n\n" + blast_radius.of(summary["plan"]).markdown()
            if summary.get("policy"):
                text += "\n\n" + policy_markdown(summary["policy"])
            text += f"\n\nplan hash `{summary['plan_hash']}`"
            create_markdown_artifact(
                key=f"{key}-plan", markdown=masking.mask(text), description=f"dry run of {run.blueprint.name}"
            )
    except Exception as exc:
        log.warning("could not publish the run's artifacts: %s", exc)
    run.emit(
        "vicflow.run.finished",
        payload={
            "state": summary["state"],
            "duration_s": summary["duration_s"],
            "steps": {s["id"]: s["state"] for s in summary["steps"]},
        },
    )
