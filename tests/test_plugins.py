"""The plugin manager: registration, duplicates, misspelt hooks, allow/deny lists (no servers)."""

import json

import pytest
from vicflow.plugins.manager import PluginError, load_registry

from tests.conftest import run_cli


def test_test_plugin_step_types_are_registered():
    registry = load_registry(extra_plugins=("tests.plugins.engine_steps",), entry_points=False)
    assert {"echo", "sleep", "flaky", "undoable", "typed", "noop"} <= set(registry.step_types)
    assert registry.plugins["tests.plugins.engine_steps"].step_types[:2] == ["echo", "sleep"]


def test_duplicate_step_type_is_rejected_naming_both_plugins():
    with pytest.raises(
        PluginError, match="'echo' is registered by both tests.plugins.engine_steps and tests.plugins.duplicate_echo"
    ):
        load_registry(extra_plugins=("tests.plugins.engine_steps", "tests.plugins.duplicate_echo"), entry_points=False)


def test_misspelt_hook_is_caught_by_check_pending():
    with pytest.raises(PluginError, match="register_step_type.*misspelt hook name"):
        load_registry(extra_plugins=("tests.plugins.misspelt_hook",), entry_points=False)


def test_a_step_type_must_subclass_steptype():
    with pytest.raises(PluginError, match="'plain' must subclass vicflow.plugins.StepType"):
        load_registry(extra_plugins=("tests.plugins.not_a_step",), entry_points=False)


def test_missing_plugin_module_names_it():
    with pytest.raises(PluginError, match="cannot import plugin module 'tests.plugins.nope'"):
        load_registry(extra_plugins=("tests.plugins.nope",), entry_points=False)


def test_deny_list_drops_a_plugin(monkeypatch):
    monkeypatch.setenv("VICFLOW_PLUGINS_DENY", "tests.plugins.duplicate_*")
    registry = load_registry(
        extra_plugins=("tests.plugins.engine_steps", "tests.plugins.duplicate_echo"), entry_points=False
    )
    assert "tests.plugins.duplicate_echo" not in registry.plugins


def test_allow_list_keeps_only_what_it_names(monkeypatch):
    monkeypatch.setenv("VICFLOW_PLUGINS_ALLOW", "tests.plugins.engine_steps")
    registry = load_registry(
        extra_plugins=("tests.plugins.engine_steps", "tests.plugins.duplicate_echo"), entry_points=False
    )
    assert list(registry.plugins) == ["tests.plugins.engine_steps"]


def test_plugins_command_lists_step_types(tmp_path):
    import os

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = run_cli(["plugins", "--output", "json"], env)
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["tests.plugins.engine_steps"]["step_types"][:2] == ["echo", "sleep"]
    assert rows["tests.plugins.engine_steps"]["module"] == "tests.plugins.engine_steps"
