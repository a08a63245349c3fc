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


def test_the_plugin_api_is_one_import():
    """What a plugin author needs comes from vicflow.plugins, and __all__ lists it."""
    import vicflow.plugins as api

    needed = {"hookimpl", "StepType", "Params", "StepContext", "Change", "EventSource", "SourceConfig"}
    needed |= {"BlueprintFile", "VicflowError", "StepError", "TransientError", "PermanentError", "PluginError"}
    assert needed <= set(api.__all__)
    assert all(hasattr(api, name) for name in api.__all__)


def test_a_step_type_without_apply_cannot_be_built():
    from vicflow.plugins import Params, StepType

    class Half(StepType[Params]):
        def plan(self, params, ctx):
            return []

    with pytest.raises(TypeError, match="apply"):
        Half()


def test_file_parameters_are_resolved_against_the_blueprint_folder(tmp_path):
    """vch_create's registry_ca and ISOs, and a Docker CA, name files beside the blueprint, not the worker's cwd."""
    from vicflow.plugins.clients.dockerapi import DockerParams
    from vicflow.plugins.paths import BASE_DIR
    from vicflow.plugins.vic.params import VCHCreateParams

    given = {"name": "v", "compute_resource": "c", "image_store": "d", "bridge_network": "b", "registry_ca": ["ca.pem"]}
    given = {k: v for k, v in given.items() if k in VCHCreateParams.model_fields}
    params = VCHCreateParams.model_validate(given, context={BASE_DIR: str(tmp_path)})
    assert params.registry_ca == [str(tmp_path / "ca.pem")]
    assert params.appliance_iso == str(tmp_path / "appliance.iso")  # the default too
    docker = DockerParams.model_validate({"ca": "certs/ca.pem", "cert": "/abs/cert.pem"}, context={BASE_DIR: "/bp"})
    assert (docker.ca, docker.cert) == ("/bp/certs/ca.pem", "/abs/cert.pem")
    assert DockerParams.model_validate({"ca": "certs/ca.pem"}).ca == "certs/ca.pem"  # no blueprint: as written


def test_plugins_doc_shows_parameters_outputs_rollback_and_an_example_that_validates(tmp_path):
    import os

    from vicflow.flows.language import blueprint as bp

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO))
    text = run_cli(["plugins", "--doc", "compose_up"], env)
    assert text.returncode == 0, text.stderr
    assert "PARAMETERS" in text.stdout and "  files  (list of string; default: [])" in text.stdout
    assert "ROLLBACK  yes" in text.stdout
    doc = json.loads(run_cli(["plugins", "--doc", "vch_create", "--output", "json"], env).stdout)
    required = {p["name"] for p in doc["parameters"] if p["required"]}
    assert {"name", "compute_resource", "image_store", "bridge_network"} <= required
    assert doc["outputs"]["docker_host"] and doc["can_rollback"] is True
    example = tmp_path / "example.yaml"
    example.write_text(doc["example"])
    assert bp.load(example).step("vch_create").uses == "vch_create"
    wrong = run_cli(["plugins", "--doc", "vch_creat"], env)
    assert wrong.returncode == 2 and "did you mean 'vch_create'?" in wrong.stderr


HELLO_PYPROJECT = """
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "vicflow-hello-plugin"
version = "1.2.3"

[project.entry-points.vicflow]
hello = "vicflow_hello"
"""

HELLO_MODULE = '''
from vicflow.plugins import Change, Params, StepContext, StepType, hookimpl


class HelloParams(Params):
    who: str


class Hello(StepType[HelloParams]):
    """Greets someone: a third-party step type."""

    Params = HelloParams
    outputs = {"greeting": "the greeting"}

    def plan(self, params: HelloParams, ctx: StepContext) -> list[Change]:
        return [Change("create", params.who, "greet")]

    def apply(self, params: HelloParams, ctx: StepContext) -> dict:
        return {"greeting": f"hello, {params.who}"}


@hookimpl
def register_step_types(register):
    register("hello", Hello)
'''


@pytest.mark.prefect
def test_a_third_party_plugin_installed_with_pip_is_found_and_runs(tmp_path, cli_env):
    """The README's pyproject.toml entry point, as a real distribution: pip install, vicflow plugins, a run."""
    import subprocess
    import sys

    project = tmp_path / "vicflow-hello"
    project.mkdir()
    (project / "pyproject.toml").write_text(HELLO_PYPROJECT)
    (project / "vicflow_hello.py").write_text(HELLO_MODULE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "install", "--no-build-isolation", "--no-deps", "--no-index", str(project)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    try:
        env = {k: v for k, v in cli_env.items() if k != "VICFLOW_DISABLE_PLUGIN_AUTOLOAD"}  # entry points on
        listed = run_cli(["plugins", "--output", "json"], env)
        rows = {row["name"]: row for row in json.loads(listed.stdout)}
        assert rows["hello"]["step_types"] == ["hello"] and rows["hello"]["version"] == "1.2.3"
        blueprint = tmp_path / "greet.yaml"
        blueprint.write_text("name: greet\nsteps:\n  - {id: greet, uses: hello, with: {who: operators}}\n")
        ran = run_cli(["run", str(blueprint), "--output", "json"], env)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert json.loads(ran.stdout)["steps"][0]["outputs"] == {"greeting": "hello, operators"}
    finally:
        subprocess.run([*pip, "uninstall", "-y", "vicflow-hello-plugin"], capture_output=True, timeout=120)
