"""The engine's behaviour with the test step types of tests/plugins.

Most tests run it on ``ThreadSteps`` (a thread pool, no Prefect): ordering, fan-out, retries, timeouts,
rollback, resume, conditions, outputs and plans are the engine's own.  The tests marked ``prefect`` run the
same engine as a flow on a real (ephemeral) Prefect server, through ``PrefectSteps``: task-run names,
artifacts, events and what Prefect stores."""

from __future__ import annotations

import json
import random
import textwrap
import time
import uuid

import pytest
from vicflow.flows.engine import retry
from vicflow.flows.engine.execution import RunFailed
from vicflow.flows.engine.thread_executor import ThreadSteps
from vicflow.flows.language.blueprint import Backoff
from vicflow.flows.language.inputs import prepare
from vicflow.flows.on_prefect import journal as prefect_journal

from tests.plugins import engine_steps


@pytest.fixture
def write(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / f"bp-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return str(path)

    return write


@pytest.fixture
def run(tmp_path, monkeypatch):
    """Run a blueprint on the thread executor (no Prefect); returns the summary, failed or not."""
    from vicflow.flows.engine import execution
    from vicflow.flows.language import blueprint as bp
    from vicflow.plugins.manager import default_registry

    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "state"))
    engine_steps.JOURNAL.clear()

    def run(path: str, inputs: dict | None = None, **kwargs):
        registry = default_registry()
        document = bp.load(path, registry)
        values = prepare(document, inputs=inputs).values
        try:
            return execution.execute(document, values, registry, uuid.uuid4().hex, executor=ThreadSteps, **kwargs)
        except RunFailed as exc:
            return exc.summary

    return run


@pytest.fixture
def run_in_prefect(prefect_api):
    """Run a blueprint as the run-blueprint flow on the Prefect test server (PrefectSteps)."""
    from vicflow.flows.on_prefect.flow import run_blueprint

    engine_steps.JOURNAL.clear()

    def run(path: str, **kwargs):
        try:
            return run_blueprint(blueprint=path, **kwargs)
        except RunFailed as exc:
            return exc.summary

    return run


def states(summary):
    return {s["id"]: s["state"] for s in summary["steps"]}


def times(action: str) -> dict[str, float]:
    return {name: t for a, name, t in engine_steps.JOURNAL if a == action}


def test_dag_order_and_parallel_steps_overlap(write, run):
    summary = run(
        write("""
        name: dag
        steps:
          - id: first
            uses: sleep
            with: {seconds: 0.1}
          - id: left
            uses: sleep
            needs: first
            with: {seconds: 1.0}
          - id: right
            uses: sleep
            needs: first
            with: {seconds: 1.0}
          - id: last
            uses: sleep
            needs: [left, right]
            with: {seconds: 0.1}
        """)
    )
    assert summary["state"] == "completed"
    start, end = times("start"), times("end")
    assert end["first"] <= start["left"] and end["first"] <= start["right"]
    assert start["right"] < end["left"] and start["left"] < end["right"], "left and right did not overlap"
    assert start["last"] >= max(end["left"], end["right"])


@pytest.mark.prefect
def test_for_each_fans_out_with_a_bound_and_names_items(write, run_in_prefect, prefect_api):
    summary = run_in_prefect(
        write("""
        name: fan
        steps:
          - id: hosts
            uses: sleep
            for_each: [h0, h1, h2, h3, h4, h5]
            max_parallel: 2
            with: {seconds: 0.4, name: "${{ item }}"}
        """)
    )
    assert summary["state"] == "completed"
    spans = [(times("start")[f"h{i}"], times("end")[f"h{i}"]) for i in range(6)]
    most_at_once = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most_at_once == 2
    assert summary["steps"][0]["outputs"] == {"slept": [0.4] * 6}
    names = _task_run_names(summary["run_id"])
    assert {f"hosts[h{i}]" for i in range(6)} <= names


def _task_run_names(flow_run_id: str) -> set[str]:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name for r in runs}


def test_retries_transient_errors_with_backoff_and_jitter(write, run):
    key = uuid.uuid4().hex
    summary = run(
        write(f"""
        name: retry
        steps:
          - id: flaky
            uses: flaky
            retries: 3
            retry_delay_seconds: {{base: 0.4, factor: 2, jitter: 0.25}}
            with: {{key: {key}, fail_times: 2}}
        """)
    )
    assert summary["state"] == "completed"
    assert summary["steps"][0]["attempts"] == 3
    assert summary["steps"][0]["outputs"] == {"attempts": 3}
    tries = engine_steps.ATTEMPTS[key]
    gaps = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert 0.3 <= gaps[0] <= 0.5 + 1.0, gaps  # 0.4 +/- 25 %, plus Prefect's scheduling
    assert 0.6 <= gaps[1] <= 1.0 + 1.0, gaps  # 0.8 +/- 25 %


def test_permanent_error_is_not_retried(write, run):
    key = uuid.uuid4().hex
    summary = run(
        write(f"""
        name: permanent
        steps:
          - id: flaky
            uses: flaky
            retries: 5
            retry_delay_seconds: 0.1
            with: {{key: {key}, fail_times: 3, permanent: true}}
        """)
    )
    assert summary["state"] == "failed"
    assert len(engine_steps.ATTEMPTS[key]) == 1
    assert "failure 1 of 3" in summary["steps"][0]["error"]


def test_timeout_fires_on_a_blocking_step(write, run):
    started = time.monotonic()
    summary = run(
        write("""
        name: timeout
        steps:
          - id: stuck
            uses: sleep
            timeout_seconds: 0.5
            with: {seconds: 30}
        """)
    )
    assert time.monotonic() - started < 10
    assert states(summary) == {"stuck": "timed_out"}
    assert "timeout_seconds=0.5" in summary["steps"][0]["error"]


def test_a_timed_out_attempt_still_running_is_not_retried_beside_itself(write, run):
    """Regression: the retry of a timed-out step started while the first attempt still ran in its thread."""
    summary = run(
        write("""
        name: timeout-retry
        steps:
          - id: stuck
            uses: sleep
            timeout_seconds: 0.5
            retries: 2
            retry_delay_seconds: 0
            with: {seconds: 4}
        """)
    )
    row = summary["steps"][0]
    assert row["state"] == "timed_out" and row["attempts"] == 1, row
    assert "still running" in row["error"]
    assert len(times("start")) == 1, "a second attempt started beside the first"


def test_a_timed_out_attempt_that_stops_is_retried(write, run):
    """An attempt that stops within the grace after its timeout (as a step honouring ctx.deadline does) is
    retried; the second attempt starts after the first ended."""
    summary = run(
        write("""
        name: timeout-then-ok
        steps:
          - id: slow
            uses: sleep
            timeout_seconds: 0.6
            retries: 1
            retry_delay_seconds: 0
            with: {seconds: 0.9}
        """)
    )
    row = summary["steps"][0]
    assert row["attempts"] == 2, row


ROLLBACK = """
name: rollback
inputs:
  fail: {type: boolean, default: true}
  policy: {type: string, default: rollback}
steps:
  - id: a
    uses: undoable
    with: {name: a}
  - id: b
    uses: undoable
    needs: a
    with: {name: b}
  - id: c
    uses: undoable
    needs: b
    on_failure: rollback
    with: {name: c, fail: "${{ inputs.fail }}"}
  - id: d
    uses: undoable
    needs: c
    with: {name: d}
"""


def test_rollback_runs_in_reverse_order(write, run):
    summary = run(write(ROLLBACK))
    assert states(summary) == {"a": "rolled_back", "b": "rolled_back", "c": "failed", "d": "pending"}
    rollbacks = [name for action, name, _ in engine_steps.JOURNAL if action == "rollback"]
    assert rollbacks == ["b", "a"]


def test_on_failure_keep_leaves_completed_steps(write, run):
    summary = run(write(ROLLBACK.replace("on_failure: rollback", "on_failure: keep")))
    assert states(summary)["a"] == "completed"
    assert not [a for a, _, _ in engine_steps.JOURNAL if a == "rollback"]


def test_on_failure_continue_skips_dependents_only(write, run):
    summary = run(write(ROLLBACK.replace("on_failure: rollback", "on_failure: continue")))
    assert summary["state"] == "completed with failures", "a tolerated failure is still shown"
    assert states(summary) == {"a": "completed", "b": "completed", "c": "failed", "d": "skipped"}


def test_resume_skips_steps_that_completed_with_the_same_inputs(write, run):
    path = write(ROLLBACK.replace("on_failure: rollback", "on_failure: keep"))
    first = run(path)
    assert first["state"] == "failed"
    engine_steps.JOURNAL.clear()
    second = run(path, inputs={"fail": False}, resume=first["run_id"])
    assert second["state"] == "completed"
    assert states(second) == {"a": "cached", "b": "cached", "c": "completed", "d": "completed"}
    assert [n for a, n, _ in engine_steps.JOURNAL if a == "apply"] == ["c", "d"]


@pytest.mark.prefect
def test_a_run_in_prefect_resumes_by_its_flow_run_name_from_the_journal_kept_in_prefect(
    write, run_in_prefect, prefect_api, monkeypatch, tmp_path
):
    """The journal is an artifact of the flow run, not a file on the worker: another state directory (another
    worker's disk) resumes it, by the name the Prefect UI shows."""
    from prefect.client.orchestration import get_client

    path = write(ROLLBACK.replace("on_failure: rollback", "on_failure: keep"))
    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "first-worker"))
    first = run_in_prefect(path)
    assert first["state"] == "failed"
    with get_client(sync_client=True) as client:
        name = client.read_flow_run(first["run_id"]).name
    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "second-worker"))
    engine_steps.JOURNAL.clear()
    second = run_in_prefect(path, inputs={"fail": False}, resume=name)
    assert states(second) == {"a": "cached", "b": "cached", "c": "completed", "d": "completed"}
    assert [n for a, n, _ in engine_steps.JOURNAL if a == "apply"] == ["c", "d"]
    assert not list(tmp_path.rglob("*.json")), "no journal file on either worker's disk"


def test_if_false_skips_and_shows_in_the_run(write, run):
    summary = run(
        write("""
        name: cond
        inputs:
          enabled: {type: boolean, default: false}
        steps:
          - id: maybe
            uses: echo
            if: inputs.enabled
          - id: always
            uses: echo
        """)
    )
    assert states(summary) == {"maybe": "skipped", "always": "completed"}
    assert "was false" in summary["steps"][0]["note"]


def test_outputs_pass_between_steps_with_native_types(write, run):
    summary = run(
        write("""
        name: outputs
        inputs:
          port: {type: integer, default: 2376}
        steps:
          - id: a
            uses: echo
            with: {message: "tcp://vch", value: "${{ inputs.port }}"}
          - id: b
            uses: typed
            with: {host: "${{ steps.a.outputs.message }}", port: "${{ steps.a.outputs.value }}"}
        """)
    )
    assert summary["steps"][1]["outputs"] == {"url": "tcp://vch:2376"}
    assert summary["steps"][1]["changed"] is False


def test_dry_run_plans_without_applying(write, run):
    summary = run(
        write("""
        name: plan
        steps:
          - id: a
            uses: echo
            with: {message: "create it"}
          - id: b
            uses: echo
            with: {message: "${{ steps.a.outputs.message }}"}
        """),
        dry_run=True,
    )
    assert summary["state"] == "planned"
    assert not engine_steps.JOURNAL
    assert summary["plan"][0] == {"step": "a", "action": "create", "target": "a", "detail": "create it", "kind": ""}
    assert summary["plan"][1]["action"] == "unknown"


def test_a_for_each_that_is_not_a_list_fails_the_plan_as_it_fails_the_run(write, run):
    """Regression: the planner wrapped a string into a one-item list and planned it; the run refused it."""
    path = write("""
        name: notalist
        inputs:
          hosts: {type: string, default: "h0,h1"}
        steps:
          - id: each
            uses: echo
            for_each: ${{ inputs.hosts }}
            with: {message: "${{ item }}"}
        """)
    planned, applied = run(path, dry_run=True), run(path)
    assert planned["plan"] == [
        {"step": "each", "action": "error", "target": "each", "detail": planned["plan"][0]["detail"], "kind": ""}
    ]
    assert "for_each must produce a list, got str" in planned["plan"][0]["detail"]
    assert applied["state"] == "failed" and "for_each must produce a list, got str" in applied["steps"][0]["error"]


@pytest.mark.prefect
def test_blueprint_error_fails_the_flow_run_with_the_location(write, run_in_prefect):
    from vicflow.flows.language.blueprint import BlueprintError

    with pytest.raises(BlueprintError, match=r"bp-\w+\.yaml:5:21: step 'a': reference to undefined input"):
        run_in_prefect(
            write("""
            name: sandbox
            steps:
              - id: a
                uses: echo
                with: {message: "${{ inputs.__class__ }}"}
            """)
        )


SECRET = "hunter2-" + uuid.uuid4().hex[:8]


@pytest.mark.prefect
def test_secrets_are_masked_in_logs_artifacts_events_and_errors(
    write, run_in_prefect, prefect_api, monkeypatch, caplog
):
    monkeypatch.setenv("VICFLOW_SECRET_DB_PASSWORD", SECRET)
    seen_events = []

    class Observer:
        from vicflow.plugins import hookimpl

        @hookimpl
        def on_run_event(self, event):
            seen_events.append(json.dumps(event, default=str))

    from vicflow.plugins.manager import default_registry

    default_registry().pm.register(Observer(), name="test-observer")
    try:
        summary = run_in_prefect(
            write("""
            name: secrets
            steps:
              - id: show
                uses: echo
                with: {message: "password is ${{ secrets.db_password }}", value: "${{ secrets.db_password }}"}
              - id: boom
                uses: undoable
                needs: show
                with: {name: boom, fail: true, secret: "${{ secrets.db_password }}"}
            """)
        )
    finally:
        default_registry().pm.unregister(name="test-observer")
    assert summary["state"] == "failed"
    assert "password is ***" in summary["steps"][0]["outputs"]["message"]
    assert "(secret was ***)" in summary["steps"][1]["error"]
    assert seen_events and not any(SECRET in e for e in seen_events)
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(summary)
    api_text = _everything_prefect_stored(summary["run_id"])
    assert "password is ***" in api_text  # the API really holds the masked log line
    assert SECRET not in api_text


def _everything_prefect_stored(flow_run_id: str) -> str:
    """Logs, artifacts, task-run states and events of a flow run, as text from the API."""
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + 15
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any("password is" in log.message for log in logs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
        flow_run = client.read_flow_run(flow_run_id)
        task_runs = client.read_task_runs()
        events = client._client.post(
            "/events/filter", json={"filter": {"any_resource": {"id_prefix": ["vicflow."]}}, "limit": 50}
        ).json()
    parts = [log.message for log in logs]
    parts += [json.dumps(a.data, default=str) + (a.description or "") for a in artifacts]
    parts += [str(flow_run.state.message), json.dumps(flow_run.parameters, default=str)]
    parts += [str(t.state.message) for t in task_runs if t.state]
    parts += [t.name for t in task_runs]
    parts += [json.dumps(events, default=str)]
    return "\n".join(parts)


@pytest.mark.prefect
def test_numeric_secrets_journal_and_item_labels_are_masked(write, run_in_prefect, prefect_api, monkeypatch, tmp_path):
    """The leak paths found by a secret scan: a numeric secret, the resume journal, and a for_each item
    label (a task-run name) that holds a secret."""
    pin = 480000 + random.randint(1000, 9999)
    monkeypatch.setenv("VICFLOW_SECRET_DB_PASSWORD", SECRET)
    monkeypatch.setenv("VICFLOW_STATE_DIR", str(tmp_path / "state"))
    summary = run_in_prefect(
        write("""
        name: leaks
        inputs:
          pin: {type: secret}
        steps:
          - id: show
            uses: echo
            with: {message: "pin ${{ inputs.pin }}", value: "${{ inputs.pin }}"}
          - id: each
            uses: echo
            for_each: [{name: "${{ secrets.db_password }}"}]
            with: {message: "${{ item.name }}"}
        """),
        inputs={"pin": pin},
    )
    assert summary["state"] == "completed", summary
    assert summary["steps"][0]["outputs"] == {"message": "pin ***", "value": "***"}
    journal = json.dumps(prefect_journal.load(summary["run_id"]))  # kept in Prefect, as an artifact of the run
    assert "show" in journal and str(pin) not in journal and SECRET not in journal
    assert not (tmp_path / "state" / "runs").exists(), "the journal is no longer a file on the worker's disk"
    stored = _everything_prefect_stored(summary["run_id"])
    assert "each[***]" in stored, "the for_each task run is named with the label masked"
    assert SECRET not in stored and f"pin {pin}" not in stored


@pytest.mark.prefect
def test_run_leaves_summary_artifact_and_events(write, run_in_prefect, prefect_api):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    summary = run_in_prefect(
        write("""
        name: observed
        steps:
          - id: only
            uses: echo
            with: {message: hi}
        """)
    )
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary["run_id"]]))
        )
        table = next(a for a in artifacts if a.key == "vicflow-observed-summary")
        rows = json.loads(table.data) if isinstance(table.data, str) else table.data
        assert rows[0]["id"] == "only" and rows[0]["state"] == "completed" and rows[0]["attempts"] == 1
        deadline = time.monotonic() + 20
        while True:
            events = client._client.post(
                "/events/filter",
                json={
                    "filter": {
                        "any_resource": {"id": ["vicflow.blueprint.observed.step.only", "vicflow.blueprint.observed"]}
                    },
                    "limit": 50,
                },
            ).json()
            names = {e["event"] for e in events.get("events", [])}
            if {"vicflow.step.started", "vicflow.step.succeeded", "vicflow.run.finished"} <= names:
                break
            assert time.monotonic() < deadline, f"events seen: {names}"
            time.sleep(0.5)


def test_jitter_stays_inside_its_bounds():
    rng = random.Random(7)
    spec = Backoff(base=1, factor=2, max=5, jitter=0.2)
    for _ in range(500):
        got = retry.delays(spec, 4, rng)
        for base, value in zip([1, 2, 4, 5], got, strict=True):
            assert base * 0.8 <= value <= base * 1.2
    assert len({tuple(retry.delays(spec, 3, rng)) for _ in range(20)}) > 1, "jitter must vary"
    assert retry.delays([1, 2], 4) == [1, 2, 2, 2]
    assert retry.delays(3, 2) == [3.0, 3.0]


def test_expressions_are_rendered_under_the_steps_deadline(write, run):
    """An expression inside the size limits can still be slow: it fails the step at its timeout_seconds."""
    slow = "(['b', 'a'] * 200000)|sort|unique|list|first"  # about 0.5 s of CPU, inside the rendering budget
    started = time.monotonic()
    summary = run(
        write(f"""
        name: slow-expression
        steps:
          - id: slow
            uses: echo
            timeout_seconds: 0.1
            with: {{message: "${{{{ {slow} }}}}"}}
        """)
    )
    assert states(summary) == {"slow": "failed"}
    assert "rendering the step's expressions did not finish within timeout_seconds=0.1" in summary["steps"][0]["error"]
    assert time.monotonic() - started < 30


def test_the_scheduler_and_its_helpers_import_no_prefect():
    """The core runs without Prefect: importing the scheduler loads no prefect module."""
    import subprocess
    import sys

    code = (
        "import sys, vicflow.flows.engine.scheduler, vicflow.flows.language.rendering; "
        "print(any(m.split('.')[0] == 'prefect' for m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_a_file_parameter_is_read_beside_the_blueprint_whatever_the_cwd(run, tmp_path, monkeypatch):
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "motd.txt").write_text("hello from the blueprint's folder")
    blueprint = folder / "read.yaml"
    blueprint.write_text("name: read\nsteps:\n  - {id: r, uses: read, with: {file: motd.txt}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    summary = run(str(blueprint))
    assert summary["state"] == "completed", summary
    assert summary["steps"][0]["outputs"]["text"] == "hello from the blueprint's folder"


def test_blueprint_outputs_are_rendered_at_the_end(run, write):
    summary = run(
        write("""
        name: outputs
        outputs:
          greeting: "${{ steps.a.outputs.message }}, world"
          number: ${{ steps.a.outputs.value + 1 }}
          never: ${{ steps.b.outputs.message }}
        steps:
          - {id: a, uses: echo, with: {message: hello, value: 41}}
          - {id: b, uses: echo, if: false, with: {message: skipped}}
        """)
    )
    assert summary["state"] == "completed"
    assert summary["outputs"] == {"greeting": "hello, world", "number": 42, "never": None}


def test_a_plan_that_fails_behind_a_changing_step_is_unknown_not_an_error(run, write):
    """vch_create's plan fails while the firewall is closed, but the firewall step before it would open it."""
    planned = run(
        write("""
        name: behind
        steps:
          - {id: a, uses: echo, with: {message: opens the firewall}}
          - {id: b, uses: picky, needs: a, with: {message: the firewall is closed}}
          - {id: alone, uses: picky, with: {message: nothing before me changes}}
        """),
        dry_run=True,
    )
    rows = {row["step"]: row for row in planned["plan"]}
    assert rows["b"]["action"] == "unknown"
    assert rows["b"]["detail"].startswith("known after a apply; planned now: cannot plan: the firewall is closed")
    assert rows["alone"]["action"] == "error"


FAILURE_PATHS = (
    ROLLBACK
    + """
  - id: cleanup_notice
    uses: echo
    if: ${{ failure() }}
    needs: c
    with: {message: "c is ${{ steps.c.state }}"}
  - id: report
    uses: echo
    if: ${{ always() }}
    needs: d
    with: {message: "d is ${{ steps.d.state }}"}
  - id: handler
    uses: echo
    if: ${{ steps.a.changed }}
    needs: a
    with: {message: a changed}
on_error:
  - id: page
    uses: undoable
    with: {name: "page about ${{ run.failed_step }}: ${{ run.error }}"}
finally:
  - id: last
    uses: undoable
    with: {name: "last after ${{ steps.c.state }}"}
"""
)


def journal_names():
    return [(action, name) for action, name, _ in engine_steps.JOURNAL]


def test_every_journal_a_run_saves_carries_the_seal_of_the_whole_journal(write, run, monkeypatch):
    """The journal is saved at each step's end, sealing again only the entries that changed: every journal saved,
    through the rollback, on_error and finally, carries the seal computed from the whole of it (a run resumed
    after a crash at any point is not refused as edited), and the last one shows every step's final state."""
    from vicflow.flows.engine import journal
    from vicflow.flows.governance import integrity

    saved, hand = [], journal.FileJournal.save  # what the run hands its store at each save (the file is coalesced)
    monkeypatch.setattr(
        journal.FileJournal,
        "save",
        lambda self, run_id, data: saved.append(json.loads(json.dumps(data))) or hand(self, run_id, data),
    )
    summary = run(write(FAILURE_PATHS))
    assert summary["state"] == "failed"
    assert len(saved) >= 8  # a save at each step's end, and the run's last
    for document in saved:
        integrity.check_journal(document, summary["run_id"])
    assert {step: entry["state"] for step, entry in saved[-1]["steps"].items()} == states(summary)


def test_a_failed_run_rolls_back_then_runs_on_error_then_finally(write, run):
    summary = run(write(FAILURE_PATHS))
    assert summary["state"] == "failed"
    assert states(summary) == {
        "a": "rolled_back",
        "b": "rolled_back",
        "c": "failed",
        "d": "pending",  # d was never started
        "cleanup_notice": "completed",
        "report": "completed",
        "handler": "completed",
        "page": "completed",
        "last": "completed",
    }
    rows = {row["id"]: row for row in summary["steps"]}
    assert rows["cleanup_notice"]["outputs"]["message"] == "c is failed"
    assert rows["report"]["outputs"]["message"] == "d is pending"
    names = journal_names()
    page = next(name for action, name in names if name.startswith("page about"))
    assert page == "page about c: c failed on purpose (secret was )"
    # after the rollback, then finally, last of all
    assert names.index(("rollback", "a")) < names.index(("apply", page)) < names.index(("apply", "last after failed"))


def test_a_completed_run_skips_on_error_and_failure_steps_and_runs_finally(write, run):
    summary = run(write(FAILURE_PATHS), {"fail": False})
    assert summary["state"] == "completed"
    found = states(summary)
    assert found["cleanup_notice"] == "skipped" and found["page"] == "skipped" and found["last"] == "completed"
    assert found["report"] == "completed" and found["handler"] == "completed"
    assert ("apply", "last after completed") in journal_names()


def test_a_handler_runs_only_when_its_step_changed(write, run):
    summary = run(
        write("""
        name: handler
        steps:
          - {id: quiet, uses: typed, with: {host: h, port: 1}}
          - {id: handler, uses: echo, if: "${{ steps.quiet.changed == false }}", with: {message: nothing changed}}
          - {id: loud, uses: echo, if: "${{ steps.quiet.changed }}", with: {message: changed}}
        """)
    )
    assert summary["steps"][0]["changed"] is False  # typed reports that it changed nothing
    assert states(summary)["handler"] == "completed" and states(summary)["loud"] == "skipped"


def test_a_plan_with_changes_emits_drift_detected_with_them(run, write):
    """What the drift-check deployment runs on a schedule: the event says what would change, and nothing did."""
    from vicflow.plugins import hookimpl
    from vicflow.plugins.manager import default_registry

    seen = []

    class Observer:
        @hookimpl
        def on_run_event(self, event):
            seen.append(event)

    default_registry().pm.register(Observer(), name="drift-observer")
    try:
        path = write("""
        name: drift
        steps:
          - {id: a, uses: echo, with: {message: would create}}
          - {id: b, uses: echo, if: false, with: {message: not this one}}
        """)
        run(path, dry_run=True)
        quiet = write("""
        name: quiet
        steps:
          - {id: b, uses: echo, if: false, with: {message: nothing}}
        """)
        run(quiet, dry_run=True)
    finally:
        default_registry().pm.unregister(name="drift-observer")
    drift = [e for e in seen if e["event"] == "vicflow.drift.detected"]
    assert [e["blueprint"] for e in drift] == ["drift"], "only a plan with changes"
    assert drift[0]["payload"]["changes"] == [
        {"step": "a", "action": "create", "target": "a", "detail": "would create", "kind": ""}
    ]
    assert engine_steps.JOURNAL == [], "planning applied nothing"
