"""The Prefect flow that prefect.yaml deploys: run one blueprint.

Importing this module has no side effects beyond defining the flow.
"""

import fcntl
import hashlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Any, Literal, cast

from prefect import flow, get_run_logger
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.runtime import deployment as this_deployment
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_HOME
from prefect.states import Cancelled
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field
from vicflow.flows.engine import execution
from vicflow.flows.engine.run import Run
from vicflow.flows.events import intake
from vicflow.flows.governance import audit
from vicflow.flows.governance import policy as policies
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language import expressions, shipped
from vicflow.flows.language.inputs import prepare
from vicflow.flows.language.spec import Blueprint
from vicflow.flows.observability import metrics
from vicflow.flows.on_prefect.adapter import PrefectSteps
from vicflow.plugins import masking
from vicflow.plugins.errors import RunCancelled
from vicflow.plugins.manager import default_registry

LEASE_SECONDS = 60  # how long a killed run can keep its target's slot

CANCELLED_BY = "prefect (the UI or an API client)"  # Prefect's open-source server records no user


def audit_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """A run cancelled from the Prefect UI or API, in the audit trail. Prefect calls this ``on_cancellation``
    hook (by keyword: flow, flow_run, state) where the cancellation is handled: in the worker that stopped the run
    (prefect/runner/_hook_runner.py), or in the run's own process when no runner owns it."""
    audit.AuditLog().append(
        "cancellation",
        CANCELLED_BY,
        run_id=str(flow_run.id),
        blueprint=str((flow_run.parameters or {}).get("blueprint") or ""),
        comment=state.message or "",
        detail={"state": state.name, "flow_run": flow_run.name},
    )


ShippedBlueprint = Literal["gogs", "gogs-health", "vch", "full-stack", "harbor-registry-swap"]


@flow(
    name="run-blueprint",
    # Prefect's own types: its decorator wants TaskRunner[PrefectFuture], the runner is of a future subclass
    task_runner=ThreadPoolTaskRunner(max_workers=execution.MAX_PARALLEL_STEPS),  # type: ignore[arg-type]
    persist_result=False,
    validate_parameters=True,
    on_cancellation=[audit_cancellation],
)
def run_blueprint(
    blueprint: ShippedBlueprint | str = Field(
        description="a shipped blueprint (gogs, gogs-health, vch, full-stack, harbor-registry-swap) or a path"
    ),
    inputs: dict[str, Any] | None = Field(
        default=None, description="values for the blueprint's inputs; a value may be ${{ secrets.name }}"
    ),
    inputs_from: str | None = Field(
        default=None,
        description="name of a Prefect Variable holding this site's input values (a JSON object); inputs override them",
    ),
    dry_run: bool = Field(default=False, description="only call plan(): show what would change"),
    resume: str | None = Field(
        default=None, description="flow-run id (or name) of an earlier run to resume, on any worker"
    ),
    event: dict[str, Any] | None = Field(default=None, description="the event that triggered this run"),
    approve: bool = Field(default=False, description="approve every approval gate in advance (for scripts)"),
    policy: str | None = Field(
        default=None,
        description="a directory of Rego policy files (relative: to the worker's VICFLOW_HOME) that judges the plan "
        "before any step applies: allow, warn, require approval or deny (docs/policy.md); a worker's VICFLOW_POLICY "
        "wins over it",
    ),
    folded: dict[str, Any] | None = Field(
        default=None,
        description="set by vicflow, not by hand: the earlier events for the same target folded into this run "
        "(count, first_event_id, last_event_id)",
    ),
) -> Any:
    """Run a vicflow blueprint: every step becomes a task run named after its step id. The entry point of
    deployments, triggers and the UI form; ``vicflow run`` runs ``for_prepared``'s flow instead."""
    registry = default_registry()
    document = bp.load(shipped.resolve(blueprint), registry)
    values = prepare(document, inputs=inputs, variable=inputs_from, event=event, logger=get_run_logger()).values
    return _run(
        document, values, registry, dry_run=dry_run, resume=resume, event=event, approve=approve, policy=policy,
        folded=folded,
    )  # fmt: skip


def for_prepared(
    document: Blueprint, values: dict[str, Any], registry: Any, before: Callable[[], None] | None = None
) -> Any:
    """The run-blueprint flow for a blueprint already loaded and inputs already prepared (``vicflow run``, a
    fleet step's subflow): its flow run shows the parameters it is called with, as ``run_blueprint``'s does,
    and nothing is read or looked up again. ``before`` runs first, inside the flow run."""

    def run_blueprint(
        blueprint: str, inputs: dict[str, Any] | None = None, dry_run: bool = False, resume: str | None = None,
        approve: bool = False, policy: str | None = None,
    ) -> Any:  # fmt: skip
        if before is not None:
            before()
        return _run(
            document, values, registry, dry_run=dry_run, resume=resume, event=None, approve=approve, policy=policy
        )

    run_blueprint.__doc__ = f"Run the vicflow blueprint {document.name} (loaded, its inputs prepared)."
    return flow(
        name="run-blueprint",
        task_runner=ThreadPoolTaskRunner(max_workers=execution.MAX_PARALLEL_STEPS),  # type: ignore[arg-type]
        persist_result=False,
    )(run_blueprint)


def _run(document: Blueprint, values: dict[str, Any], registry: Any, policy: str | None, **options: Any) -> Any:
    """The one path of a run inside a flow run: the site's policy chosen, its target's slot held, the engine on
    Prefect's executor."""
    run_id = str(flow_run.get_id() or "local")
    policy, note = policies.for_run(policy)
    if note:
        get_run_logger().warning(note)
    executors: list[PrefectSteps] = []

    def executor(run: Run) -> PrefectSteps:
        executors.append(PrefectSteps(run, _subflow))
        return executors[-1]

    try:
        with one_run_per_target(document, values, options["event"]):
            return execution.execute(document, values, registry, run_id, executor=executor, policy=policy, **options)
    except intake.Duplicate as exc:  # the event was already taken: nothing runs twice
        get_run_logger().warning("%s", exc)
        metrics.dropped("taken")
        return Cancelled(name="Duplicate", message=str(exc))
    except RunCancelled as exc:  # an approval said no, or none came: the flow run ends Cancelled
        return Cancelled(message=str(exc), data=exc.summary)
    finally:  # the slot is given back first: publishing may wait for an absent server
        for each in executors:
            each.publish_kept()


def _subflow(child: Blueprint, inputs: dict[str, Any], registry: Any) -> dict[str, Any]:
    """A fleet step's child, as a subflow of the step's task run (its own flow run, target and summary). The
    child was validated with its parent; its inputs (secrets as references) are prepared here, once."""
    values = prepare(child, inputs=inputs, logger=get_run_logger()).values
    return cast(dict[str, Any], for_prepared(child, values, registry)(blueprint=str(child.path), inputs=inputs))


def limit_name(target: str) -> str:
    """The global concurrency limit of a target. A target that holds a secret is named by its digest: the
    limit's name is stored and shown in clear (the API, the UI, Prefect's events)."""
    if masking.is_secret(target) or len(target) > 100:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", masking.mask(target).replace(masking.MASK, "secret"))[:60]
        return f"vicflow-target-{slug}-{hashlib.sha256(target.encode('utf-8', 'replace')).hexdigest()[:16]}"
    return "vicflow-target-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", target)[:100]


@contextmanager
def one_run_per_target(document: bp.Blueprint, values: dict[str, Any], event: dict[str, Any] | None):
    """Hold the global concurrency limit named after the run's target (limit 1): a second run waits."""
    target = document.name
    if document.target:
        target = str(expressions.render(document.target, {"inputs": values, "event": event or {}}))
    name = limit_name(target)
    target = masking.mask(target)
    logger = get_run_logger()

    def waiting() -> None:
        logger.warning(
            "waiting for another run on target %r to finish (concurrency limit %s); if that run was killed, "
            "its slot is freed within %ds, when its lease is no longer renewed",
            target,
            name,
            LEASE_SECONDS,
        )

    # Prefect's temporary server (no PREFECT_API_URL) never frees a killed run's slot: see holder_file
    with holder_file(name, waiting) if not PREFECT_API_URL.value() else nullcontext() as holder:
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                limit = None
                with suppress(ObjectAlreadyExists):
                    client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            dead = holder.read().strip() if holder is not None else ""
            if dead:  # a run of this machine died holding the slot: give it back
                logger.warning("run %s was killed while it held target %r; its slot is given back", dead, target)
                client.release_concurrency_slots(names=[name], slots=1, occupancy_seconds=1)
                _write(holder, "")
        if holder is None and limit is not None and limit.active_slots >= limit.limit:
            waiting()
        # Prefect renews the lease while this run is alive; a killed holder stops renewing it
        finished = False
        try:
            with concurrency(name, occupy=1, strict=True, lease_duration=LEASE_SECONDS):
                if holder is not None:
                    _write(holder, str(flow_run.get_id()))
                try:
                    # while the target is held no other run of it decides: the event is taken once
                    intake.admit(str(flow_run.get_id() or "local"), this_deployment.id or None, event, logger)
                    yield
                    finished = True
                finally:  # however the run ends: cleared before the slot is given back (a death in between leaks
                    if holder is not None:  # the slot, as before; it never frees one twice)
                        _write(holder, "")
        except Exception as exc:
            if not finished:
                raise
            # the steps are done: a slot that could not be given back (the server is away) frees itself
            logger.warning(
                "could not release target %r's slot (%s); it is freed within %ds, when its lease expires",
                target,
                exc,
                LEASE_SECONDS,
            )


@contextmanager
def holder_file(name: str, waiting: Callable[[], None]) -> Iterator[Any]:
    """The target's file under PREFECT_HOME, locked (flock) for as long as this process holds or waits to hold
    the target: only with Prefect's temporary server.

    That server keeps leases in its memory and runs no repossessor (Prefect schedules `monitor_expired_leases`
    only in a full server: prefect/server/services/perpetual_services.py, run_in_ephemeral): a `vicflow run`
    killed holding its target took its server and lease with it, and its slot stayed taken for good. There
    every run is a process of this machine with the same PREFECT_HOME (and SQLite database), so the kernel
    says whether a holder lives: its flock goes with its process, SIGKILL included. The file holds the flow
    run id of the run that holds the slot: one who gets the lock and finds an id there knows that run died
    holding it. Calls ``waiting`` when another process holds the lock."""
    folder = Path(PREFECT_HOME.value()) / "vicflow-targets"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a+") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(file, fcntl.LOCK_EX)  # vicflow run's SIGTERM handler still ends the process meanwhile
        file.seek(0)
        yield file


def _write(file: Any, text: str) -> None:
    file.seek(0)
    file.truncate()
    file.write(text)
    file.flush()
    os.fsync(file.fileno())
