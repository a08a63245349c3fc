"""The docs say what the code does: every blueprint they show validates, and the events, deployments and
commands they list are exactly the ones that exist.  Pure logic: no server."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from vicflow.flows.engine import run as engine_run
from vicflow.flows.events import intake
from vicflow.flows.language import blueprint as bp
from vicflow.flows.observability import metrics, tracing
from vicflow.flows.testing import StepHarness
from vicflow.plugins.manager import default_registry

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "tests" / "README.md"]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)


def fenced_blueprints():
    for doc in DOCS:
        text = doc.read_text()
        for match in FENCE.finditer(text):
            body = match.group(2)
            try:
                data = yaml.safe_load(body)
            except yaml.YAMLError:
                continue
            if isinstance(data, dict) and "steps" in data and "name" in data:
                line = text[: match.start()].count("\n") + 2
                yield pytest.param(body, id=f"{doc.relative_to(REPO)}:{line}")


BLUEPRINTS = list(fenced_blueprints())


def test_the_docs_show_blueprints():
    assert len(BLUEPRINTS) >= 1


@pytest.mark.parametrize("body", BLUEPRINTS)
def test_every_fenced_blueprint_validates(body):
    # as if it sat beside the shipped blueprints, so relative compose files resolve as in the docs
    bp.parse(body, str(REPO / "blueprints" / "from-the-docs.yaml"), default_registry())


def documented_events() -> set[str]:
    table = (REPO / "docs" / "events.md").read_text().split("## Event reference", 1)[1].split("\n## ", 1)[0]
    names = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split("|")[1]
        previous = ""
        for token in re.findall(r"`([^`]+)`", cell):
            if token.startswith("."):  # `vicflow.step.started` / `.succeeded`: a suffix of the previous name
                token = previous.rsplit(".", 1)[0] + token
            names.add(token)
            previous = token
    return names


def test_docs_events_lists_exactly_the_events_emitted():
    registry = default_registry()
    emitted = set(engine_run.EVENTS) | set(intake.EVENTS)
    for source in registry.event_sources.values():
        emitted |= set(source.events)
    assert documented_events() == emitted


def test_docs_metrics_lists_exactly_the_metrics_defined():
    table = (REPO / "docs" / "metrics.md").read_text().split("## Metric reference", 1)[1].split("\n## ", 1)[0]
    rows = [row for row in table.splitlines() if row.startswith("| `")]
    documented = [re.findall(r"`([^`]+)`", row.split("|")[1])[0] for row in rows]
    defined = {name: (kind, list(labels)) for name, kind, labels in metrics.catalogue()}
    assert sorted(documented) == sorted(defined)
    for row in rows:  # and each one's type and labels
        name, kind, labels = (cell.strip().strip("`") for cell in row.split("|")[1:4])
        assert (kind, re.findall(r"`(\w+)`", row.split("|")[3])) == defined[name], f"docs/metrics.md: {name}"


def test_docs_tracing_lists_exactly_the_spans_started():
    table = (REPO / "docs" / "tracing.md").read_text().split("## Span reference", 1)[1].split("\n## ", 1)[0]
    rows = [row for row in table.splitlines() if row.startswith("| `")]
    documented = {re.findall(r"`([^`]+)`", row.split("|")[1])[0]: row for row in rows}
    assert sorted(documented) == sorted([*tracing.SPANS, *tracing.INSTRUMENTED])
    for name, attributes in tracing.SPANS.items():  # and each one's attributes
        assert re.findall(r"`([\w.]+)`", documented[name].split("|")[3]) == list(attributes), f"docs/tracing.md: {name}"


def test_docs_name_only_deployments_that_prefect_yaml_defines():
    deployments = {d["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    readme = (REPO / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in deployments), "the README names every deployment"
    for doc in DOCS:
        for block in (m.group(2) for m in FENCE.finditer(doc.read_text()) if "triggers:" in m.group(2)):
            for name in re.findall(r"^  - name: ([\w-]+)$", block, re.M):
                assert name in deployments, f"{doc.name} shows a deployment prefect.yaml lacks: {name}"


def test_docs_commands_exist():
    out = subprocess.run(
        [sys.executable, "-m", "vicflow.flows.cli.main", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    commands = set(re.search(r"\{([a-z,]+)\}", out).group(1).split(",")) if "{" in out else set()
    commands |= set(re.findall(r"^    (\w+)\s{2,}", out, re.M))
    for doc in DOCS:
        blocks = "\n".join(m.group(2) for m in FENCE.finditer(doc.read_text()))
        for used in re.findall(r"^(?:[A-Z_]+=\S+ )*vicflow (\w+)", blocks, re.M):
            assert used in commands, f"{doc.name} shows `vicflow {used}`, which the CLI does not have"
        for used, rest in re.findall(r"^(?:[A-Z_]+=\S+ )*vicflow (\w+)([^#\n]*)", blocks, re.M):
            options = set(re.findall(r"(--[a-z][a-z-]*)", rest))
            if options:
                help_text = _command_help(used)
                for option in options:
                    assert option in help_text, f"{doc.name} shows `vicflow {used} {option}`, which it does not take"


@functools.lru_cache
def _command_help(command: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "vicflow.flows.cli.main", command, "--help"], capture_output=True, text=True, timeout=60
    ).stdout


def test_the_readmes_plugin_example_registers_plans_and_applies_and_its_test_passes(tmp_path, monkeypatch):
    """The README's step type, loaded by name as VICFLOW_PLUGINS loads it, planned and applied through the test
    kit (regression: its ``plan`` returned None, which broke `vicflow plan`); then the README's test of it runs."""
    blocks = [m.group(2) for m in FENCE.finditer((REPO / "README.md").read_text())]
    (tmp_path / "vicflow_slack.py").write_text(next(code for code in blocks if "register_step_types" in code))
    monkeypatch.syspath_prepend(str(tmp_path))
    step = StepHarness("slack_post", {"channel": "ops", "text": "deployed"}, plugins=("vicflow_slack",))
    assert [(row["action"], row["target"]) for row in step.plan()] == [("create", "#ops")]
    assert set(step.apply()) == set(step.registry.step_types["slack_post"].outputs)

    namespace: dict = {}
    exec(compile(next(code for code in blocks if "StepHarness" in code), "README.md", "exec"), namespace)
    readme_tests = [test for name, test in namespace.items() if name.startswith("test_")]
    assert len(readme_tests) == 2
    for test in readme_tests:
        test()


def test_every_package_the_architecture_names_exists():
    """docs/architecture.md names packages by their import path: each one imports, and each package that
    exists is named."""
    import importlib
    import pkgutil

    import vicflow.flows
    import vicflow.plugins

    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`(vicflow(?:\.\w+)+)`", text))
    for name in sorted(named):
        importlib.import_module(name)
    packages = {"vicflow.flows", "vicflow.plugins", "vicflow.blueprints"} | {
        info.name
        for root in (vicflow.flows, vicflow.plugins)
        for info in pkgutil.walk_packages(root.__path__, root.__name__ + ".")
        if info.ispkg
    }
    assert packages <= named, f"not described in docs/architecture.md: {sorted(packages - named)}"
