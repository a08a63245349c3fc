"""vicflow.flows.testing, the plugin authors' test kit: a step type defined here, run through the engine's own path
(validation, plan rows, retries, masking, rollback) with no Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest
from vicflow.flows.testing import StepHarness
from vicflow.plugins import (
    BlueprintFile,
    Change,
    Params,
    PermanentError,
    PluginError,
    StepContext,
    StepType,
    TransientError,
)
from vicflow.plugins.errors import AttemptFailed, BlueprintError, RunFailed


class FileParams(Params):
    path: BlueprintFile
    text: str
    fail: str = ""  # "transient" or "permanent": apply raises that error after writing


class SaveText(StepType[FileParams]):
    """Writes ``text`` into ``path`` unless it is there already; rollback removes a file it wrote."""

    Params = FileParams
    outputs = {"path": "the file written"}

    def plan(self, params: FileParams, ctx: StepContext) -> list[Change]:
        path = Path(params.path)
        if path.exists() and path.read_text() == params.text:
            return [Change("none", params.path, "up to date")]
        return [Change("update" if path.exists() else "create", params.path, f"{len(params.text)} characters")]

    def apply(self, params: FileParams, ctx: StepContext) -> dict:
        path = Path(params.path)
        ctx.changed = not (path.exists() and path.read_text() == params.text)
        if ctx.changed:
            ctx.state["created"] = not path.exists()
            path.write_text(params.text)
        if params.fail == "transient":
            raise TransientError(f"the disk of {params.path} is busy", "try again")
        if params.fail == "permanent":
            raise PermanentError(f"{params.path} is read-only", "pick another path")
        return {"path": params.path}

    def rollback(self, params: FileParams, ctx: StepContext) -> None:
        if ctx.state.get("created"):
            Path(params.path).unlink()


def test_plan_apply_idempotent_rollback_of_a_file(tmp_path):
    step = StepHarness(SaveText, {"path": "out.txt", "text": "hello"}, base_dir=tmp_path)
    assert step.plan() == [
        {
            "step": "save_text",
            "action": "create",
            "target": str(tmp_path / "out.txt"),
            "detail": "5 characters",
            "kind": "",
        }
    ]
    assert not (tmp_path / "out.txt").exists()  # a plan changes nothing
    assert step.apply() == {"path": str(tmp_path / "out.txt")}  # the relative path resolved beside the blueprint
    assert (tmp_path / "out.txt").read_text() == "hello"
    assert step.record["state"] == "completed" and step.record["changed"] is True
    step.idempotent()
    assert step.record["changed"] is False
    step.rollback()  # the newest apply: it changed nothing, so nothing is removed
    assert (tmp_path / "out.txt").exists()
    step.rollback()  # the first apply: it wrote the file
    assert not (tmp_path / "out.txt").exists() and step.record["state"] == "rolled_back"


def test_as_a_context_manager_it_rolls_back_what_it_applied(tmp_path):
    with StepHarness(SaveText, {"path": str(tmp_path / "a.txt"), "text": "x"}) as step:
        step.apply()
        assert (tmp_path / "a.txt").exists()
    assert not (tmp_path / "a.txt").exists()


def test_idempotent_fails_for_a_step_whose_second_run_changes_something(tmp_path):
    class Append(SaveText):  # its plan after the first apply is right ("up to date"), its second apply is not
        def apply(self, params, ctx):
            with open(params.path, "a") as out:
                out.write(params.text)
            return {"path": params.path}

    class Twice(SaveText):  # writes what its plan does not promise: the plan after apply wants to change it back
        def apply(self, params, ctx):
            Path(params.path).write_text(params.text * 2)
            return {"path": params.path}

    appending = StepHarness(Append, {"path": str(tmp_path / "log.txt"), "text": "+"})
    with pytest.raises(AssertionError, match=r"append: a second apply\(\) says it changed something"):
        appending.idempotent()
    assert (tmp_path / "log.txt").read_text() == "++"
    doubling = StepHarness(Twice, {"path": str(tmp_path / "twice.txt"), "text": "+"})
    with pytest.raises(
        AssertionError, match=r"twice: the plan after apply\(\) still shows changes: .*'action': 'update'"
    ):
        doubling.idempotent()


def test_a_bad_parameter_is_the_located_error_validate_gives(tmp_path):
    with pytest.raises(BlueprintError) as caught:
        StepHarness(SaveText, {"path": "out.txt", "txet": "hello"}, base_dir=tmp_path)
    problems = {(p.step, p.message) for p in caught.value.problems}
    assert ("save_text", "unknown key 'txet'") in problems
    assert ("save_text", "missing required key 'text'") in problems
    unknown = next(p for p in caught.value.problems if "txet" in p.message)
    assert unknown.file == str(tmp_path / "<StepHarness save_text>")
    assert f"{unknown.line:>3} |     txet: hello" in caught.value.__notes__[0]  # the line, shown in the report
    assert "did you mean 'text'" in unknown.hint


def test_a_transient_error_is_retried_and_a_permanent_one_is_not(tmp_path):
    flaky = StepHarness(
        SaveText, {"path": str(tmp_path / "t"), "text": "x", "fail": "transient"}, retries=2, retry_delay_seconds=0
    )
    with pytest.raises(RunFailed, match=r"save_text: the disk of .* is busy\n  hint: try again"):
        flaky.apply()
    assert flaky.record["state"] == "failed" and flaky.record["attempts"] == 3
    broken = StepHarness(
        SaveText, {"path": str(tmp_path / "p"), "text": "x", "fail": "permanent"}, retries=2, retry_delay_seconds=0
    )
    with pytest.raises(RunFailed, match="read-only"):
        broken.apply()
    assert broken.record["attempts"] == 1


def test_an_unexpected_exception_is_named_by_its_type_and_not_retried(tmp_path):
    class Broken(SaveText):
        def apply(self, params, ctx):
            raise KeyError("port")

    step = StepHarness(Broken, {"path": "x", "text": "y"}, retries=3, retry_delay_seconds=0)
    with pytest.raises(RunFailed, match="broken: KeyError: 'port'"):
        step.apply()
    assert step.record["attempts"] == 1


def test_a_secret_reaches_the_step_and_is_masked_in_what_the_run_shows(tmp_path):
    target = tmp_path / "token"
    step = StepHarness(
        SaveText, {"path": str(target), "text": "${{ secrets.api_token }}"}, secrets={"api_token": "s3cr3t-value"}
    )
    step.apply()
    assert target.read_text() == "s3cr3t-value"
    broken = StepHarness(
        SaveText,
        {"path": "${{ secrets.api_token }}", "text": "x", "fail": "permanent"},
        secrets={"api_token": "s3cr3t-value"},
        base_dir=tmp_path,
    )
    with pytest.raises(RunFailed) as caught:
        broken.apply()
    assert "s3cr3t-value" not in str(caught.value) and "***" in broken.record["error"]


def test_a_failed_undo_raises_with_the_steps_error(tmp_path):
    class Stuck(SaveText):
        def rollback(self, params, ctx):
            raise PermanentError("the file is locked", "close the editor")

    step = StepHarness(Stuck, {"path": str(tmp_path / "s"), "text": "x"})
    step.apply()
    with pytest.raises(AttemptFailed, match="rollback failed: the file is locked"):
        step.rollback()


def test_a_registered_name_is_loaded_through_the_plugin_manager():
    step = StepHarness("echo", {"message": "hi"}, plugins=("tests.plugins.engine_steps",))
    assert [row["action"] for row in step.plan()] == ["create"]
    assert step.apply() == {"message": "hi", "value": None}
    with pytest.raises(PluginError, match="registered twice|registered by both"):
        StepHarness("echo", {}, plugins=("tests.plugins.engine_steps", "tests.plugins.duplicate_echo"))
