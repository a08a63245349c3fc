"""Fleet runs: a step that runs another blueprint (flows/language/fleet.py). Here on the thread executor and as a
Prefect subflow; through the work pool (``on: pool``) in tests/test_workers.py."""

from __future__ import annotations

import json

import pytest
from vicflow.flows.language import blueprint as bp

from tests.plugins import engine_steps
from tests.test_engine import run, run_in_prefect, states, write  # noqa: F401 (fixtures)
from tests.testbed import REPO

SITE = str(REPO / "tests/data/fleet/site.yaml")


def parent(write, body: str) -> str:  # noqa: F811
    return write(body.replace("SITE", SITE))


FLEET = """
name: fleet-test
inputs:
  sites: {type: list, default: [a, b, c]}
  fail_after: {type: boolean, default: false}
steps:
  - id: sites
    uses: blueprint:SITE
    for_each: ${{ inputs.sites }}
    max_parallel: 3
    with: {site: "${{ item }}", token: "${{ secrets.fleet_token }}"}
  - id: after
    uses: undoable
    needs: sites
    with: {name: after, fail: "${{ inputs.fail_after }}"}
outputs:
  urls: ${{ steps.sites.outputs.url }}
"""


def test_a_step_runs_another_blueprint_per_item_and_gives_its_outputs(write, run, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VICFLOW_SECRET_FLEET_TOKEN", "tok-" + "9" * 8)
    summary = run(parent(write, FLEET))
    assert summary["state"] == "completed", summary
    assert summary["outputs"]["urls"] == ["http://a.example/", "http://b.example/", "http://c.example/"]
    applied = sorted(n for a, n, _ in engine_steps.JOURNAL if a == "apply")
    assert applied == sorted(["after", *(f"{s}-{p}" for s in "abc" for p in ("base", "app"))])
    row = next(r for r in summary["steps"] if r["id"] == "sites")
    assert row["outputs"]["state"] == ["completed"] * 3 and all(row["outputs"]["flow_run"]), row["outputs"]


def test_a_failure_after_the_children_rolls_each_child_back_step_by_step(write, run, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VICFLOW_SECRET_FLEET_TOKEN", "tok-" + "9" * 8)
    summary = run(parent(write, FLEET), inputs={"fail_after": True, "sites": ["a", "b"]})
    assert summary["state"] == "failed"
    assert states(summary)["sites"] == "rolled_back", summary
    undone = [n for a, n, _ in engine_steps.JOURNAL if a == "rollback"]
    for site in "ab":  # each child's own steps, newest first
        assert undone.index(f"{site}-app") < undone.index(f"{site}-base"), undone


def test_a_failed_child_fails_the_step_with_the_childs_error(write, run, monkeypatch):  # noqa: F811
    monkeypatch.setenv("VICFLOW_SECRET_FLEET_TOKEN", "tok-" + "9" * 8)
    path = write(f"""
        name: one-site
        steps:
          - id: site
            uses: blueprint:{SITE}
            on_failure: keep
            with: {{site: x, fail: true, token: "${{{{ secrets.fleet_token }}}}"}}
        """)
    summary = run(path)
    row = next(r for r in summary["steps"] if r["id"] == "site")
    assert (
        summary["state"] == "failed" and "blueprint site" in row["error"] and "x-app failed on purpose" in row["error"]
    )
    assert "9" * 8 not in str(summary)


@pytest.mark.parametrize(
    ("with_", "message"),
    [
        ("{site: a, colour: red}", "blueprint site has no input 'colour'"),
        ("{fail: true}", "blueprint site needs input 'site'"),
        ("{site: a, token: hunter2}", "input 'token' of blueprint site is a secret, given in clear"),
    ],
)
def test_a_childs_inputs_are_checked_when_the_parent_is_validated(write, with_, message):  # noqa: F811
    path = write(f"""
        name: checked
        steps:
          - id: site
            uses: blueprint:{SITE}
            with: {with_}
        """)
    with pytest.raises(bp.BlueprintError) as caught:
        bp.load(path)
    problem = caught.value.problems[0]
    assert message in problem.message and problem.line >= 4, caught.value.problems


def test_a_blueprint_that_runs_itself_and_on_pool_on_an_ordinary_step_are_refused(tmp_path):
    (tmp_path / "loop.yaml").write_text("""name: loop
steps:
  - id: again
    uses: blueprint:loop.yaml
  - id: plain
    uses: echo
    on: pool
    with: {message: x}
""")
    with pytest.raises(bp.BlueprintError) as caught:
        bp.load(tmp_path / "loop.yaml")
    messages = [p.message for p in caught.value.problems]
    assert any("runs itself" in m for m in messages), messages
    assert any("on: pool is for steps that run a blueprint" in m for m in messages), messages


@pytest.mark.prefect
def test_in_prefect_a_child_is_a_subflow_of_the_step(write, run_in_prefect, prefect_api, monkeypatch):  # noqa: F811
    from prefect.client.orchestration import get_client

    monkeypatch.setenv("VICFLOW_SECRET_FLEET_TOKEN", "tok-" + "9" * 8)
    summary = run_in_prefect(parent(write, FLEET), inputs={"sites": ["a", "b"]})
    assert summary["state"] == "completed", summary
    children = next(r for r in summary["steps"] if r["id"] == "sites")["outputs"]["flow_run"]
    assert len(children) == 2
    with get_client(sync_client=True) as client:
        for child in children:
            flow_run = client.read_flow_run(child)
            assert flow_run.parent_task_run_id is not None, "the child is a subflow of the step's task run"
            assert flow_run.state.is_completed()
            assert "9" * 8 not in str(flow_run.parameters), flow_run.parameters
            assert flow_run.parameters["inputs"]["token"] == "${{ secrets.fleet_token }}"
        artifacts = client.read_artifacts()
    tables = [a for a in artifacts if a.key == "fleet-test-children" or a.key == "vicflow-fleet-test-children"]
    rows = tables[0].data if tables else []
    rows = json.loads(rows) if isinstance(rows, str) else rows
    assert sorted(r["flow_run"] for r in rows) == sorted(children), rows
    assert [json.loads(r["outputs"])["url"] for r in sorted(rows, key=lambda r: r["item"])] == [
        "http://a.example/",
        "http://b.example/",
    ]


def test_the_plan_of_a_fleet_step_is_its_childrens_own_plan(write, monkeypatch):  # noqa: F811
    from vicflow.flows.engine import execution
    from vicflow.flows.engine.thread_executor import ThreadSteps
    from vicflow.flows.language.inputs import prepare
    from vicflow.plugins.manager import default_registry

    monkeypatch.setenv("VICFLOW_SECRET_FLEET_TOKEN", "tok-" + "9" * 8)
    document = bp.load(parent(write, FLEET))
    values = prepare(document, inputs={"sites": ["a", "b"]}).values
    summary = execution.execute(document, values, default_registry(), "p", dry_run=True, executor=ThreadSteps)
    rows = [(r["step"], r["target"]) for r in summary["plan"] if r["step"] == "sites"]
    assert rows == [("sites", f"site.{step}: {step}") for _ in "ab" for step in ("base", "app")], summary["plan"]
