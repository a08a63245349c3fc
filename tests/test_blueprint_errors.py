"""Bad blueprints: each error names the exact file, line, column, step and a hint (no servers)."""

from __future__ import annotations

import textwrap

import pytest
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language import inputs
from vicflow.plugins.errors import InputsError
from vicflow.plugins.manager import load_registry


@pytest.fixture(scope="module")
def registry():
    return load_registry(extra_plugins=("tests.plugins.engine_steps",), entry_points=False)


def problems(text: str, registry):
    with pytest.raises(bp.BlueprintError) as info:
        bp.parse(textwrap.dedent(text).lstrip("\n"), "bad.yaml", registry)
    return info.value.problems


HEAD = "name: t\nsteps:\n"

# (description, blueprint, line, column, step, message fragment, hint fragment)
CASES = [
    ("yaml syntax", "name: t\nsteps:\n  - id: a\n    uses: [echo\n", 5, 1, None, "YAML syntax error", "indentation"),
    ("tab indentation", "name: t\nsteps:\n\t- id: a\n", 3, 1, None, "YAML syntax error", ""),
    (
        "unknown step type",
        HEAD + "  - id: app\n    uses: ech0\n",
        4,
        11,
        "app",
        "unknown step type 'ech0'",
        "did you mean 'echo'? installed: compose_down, compose_up, echo, ",
    ),
    (
        "duplicate id",
        HEAD + "  - id: a\n    uses: noop\n  - id: a\n    uses: noop\n",
        5,
        9,
        "a",
        "duplicate step id 'a'",
        "the first is step #1",
    ),
    (
        "unknown needs",
        HEAD + "  - id: a\n    uses: noop\n  - id: b\n    uses: noop\n    needs: [aa]\n",
        7,
        13,
        "b",
        "needs unknown step 'aa'",
        "did you mean 'a'?",
    ),
    (
        "cycle",
        HEAD + "  - id: a\n    uses: noop\n    needs: [c]\n  - id: b\n    uses: noop\n    needs: [a]\n"
        "  - id: c\n    uses: noop\n    needs: [b]\n",
        5,
        12,
        "a",
        "dependency cycle: a -> c -> b -> a",
        "break the cycle",
    ),
    ("self need", HEAD + "  - id: a\n    uses: noop\n    needs: [a]\n", 5, 13, "a", "cannot need itself", ""),
    (
        "param wrong type",
        HEAD + "  - id: t\n    uses: typed\n    with:\n      port: eighty\n",
        6,
        13,
        "t",
        "port: Input should be a valid integer",
        "",
    ),
    (
        "param missing",
        HEAD + "  - id: t\n    uses: typed\n    with:\n      host: x\n",
        5,
        5,
        "t",
        "missing required key 'port'",
        "",
    ),
    (
        "param unknown key",
        HEAD + "  - id: t\n    uses: typed\n    with:\n      port: 1\n      hots: x\n",
        7,
        7,
        "t",
        "unknown key 'hots'",
        "did you mean 'host'?",
    ),
    (
        "step unknown key",
        HEAD + "  - id: a\n    uses: noop\n    retires: 3\n",
        5,
        5,
        "a",
        "unknown key 'retires'",
        "did you mean 'retries'?",
    ),
    (
        "undefined input",
        HEAD + "  - id: a\n    uses: echo\n    with:\n      message: ${{ inputs.nmae }}\n",
        6,
        16,
        "a",
        "reference to undefined input 'nmae'",
        "declare it under inputs",
    ),
    (
        "unknown step in expression",
        HEAD + "  - id: a\n    uses: echo\n    with:\n      message: ${{ steps.vch.outputs.x }}\n",
        6,
        16,
        "a",
        "reference to unknown step 'vch'",
        "",
    ),
    (
        "unknown output",
        HEAD + "  - id: a\n    uses: echo\n  - id: b\n    uses: echo\n    with:\n"
        "      message: ${{ steps.a.outputs.mesage }}\n",
        8,
        16,
        "b",
        "step 'a' (echo) has no output 'mesage'",
        "did you mean 'message'?",
    ),
    (
        "unknown root name",
        HEAD + "  - id: a\n    uses: echo\n    with:\n      message: ${{ input.x }}\n",
        6,
        16,
        "a",
        "unknown name 'input'",
        "did you mean 'inputs'?",
    ),
    (
        "expression syntax",
        HEAD + "  - id: a\n    uses: echo\n    with:\n      message: ${{ inputs. }}\n",
        6,
        7,
        "a",
        "cannot parse",
        "${{ inputs.name }}",
    ),
    (
        "unclosed expression",
        HEAD + '  - id: a\n    uses: echo\n    with:\n      message: "${{ inputs.x"\n',
        6,
        7,
        "a",
        "never closed",
        "",
    ),
    (
        "item outside for_each",
        HEAD + "  - id: a\n    uses: echo\n    with:\n      message: ${{ item }}\n",
        6,
        16,
        "a",
        "only defined in a step with for_each",
        "add for_each",
    ),
    (
        "bad id",
        HEAD + "  - id: my-step\n    uses: noop\n",
        3,
        9,
        "my-step",
        "id: String should match pattern",
        "letters, digits and _",
    ),
    (
        "bad on_failure",
        HEAD + "  - id: a\n    uses: noop\n    on_failure: ignore\n",
        5,
        17,
        "a",
        "on_failure: Input should be 'rollback', 'keep' or 'continue'",
        "",
    ),
    ("no steps", "name: t\nsteps: []\n", 2, 8, None, "steps must be a non-empty list", ""),
    (
        "duplicate yaml key",
        HEAD + "  - id: a\n    uses: echo\n    with: {message: a}\n    with: {message: b}\n",
        6,
        5,
        None,
        "duplicate key 'with'",
        "YAML keeps only the last one",
    ),
    (
        "bad input type",
        "name: t\ninputs:\n  port: {type: int}\nsteps:\n  - id: a\n    uses: noop\n",
        3,
        16,
        None,
        "inputs.port.type: Input should be",
        "",
    ),
    (
        "http header not latin-1",
        HEAD
        + "  - id: web\n    uses: health_check\n    with: {kind: http, url: 'http://h/', headers: {X-Token: 'a€'}}\n",
        5,
        51,
        "web",
        "header X-Token: character 2 of its value is not Latin-1",
        "",
    ),
    (
        "bad blueprint name",
        "name: My App\nsteps:\n  - id: a\n    uses: noop\n",
        1,
        7,
        None,
        "name: String should match pattern",
        "",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_blueprint_reports_exact_location(case, registry):
    _, text, line, column, step, message, hint = case
    found = problems(text, registry)
    match = [p for p in found if message in p.message]
    assert match, f"no problem mentions {message!r}: {[str(p) for p in found]}"
    problem = match[0]
    assert (problem.file, problem.line, problem.column, problem.step) == ("bad.yaml", line, column, step), str(problem)
    assert hint in problem.hint
    assert str(problem).startswith(f"bad.yaml:{line}:{column}: ")


def test_all_errors_reported_at_once(registry):
    found = problems(
        """
        name: t
        steps:
          - id: a
            uses: nope
          - id: b
            uses: typed
            with: {port: x}
          - id: c
            uses: echo
            needs: [zz]
        """,
        registry,
    )
    messages = " | ".join(p.message for p in found)
    assert "unknown step type 'nope'" in messages
    assert "valid integer" in messages
    assert "needs unknown step 'zz'" in messages


INPUTS = """
name: t
inputs:
  port: {type: integer, default: 2375}
  mode: {type: string, enum: [a, b], default: a}
  password: {type: secret}
steps:
  - id: a
    uses: typed
    with: {port: "${{ inputs.port }}", mode: "${{ inputs.mode }}"}
"""


def test_missing_unknown_and_mistyped_inputs(registry):
    document = bp.parse(INPUTS, "ok.yaml", registry)
    with pytest.raises(InputsError) as info:
        inputs.prepare(document, inputs={"prot": "1", "port": "abc", "mode": "c"})
    found = info.value.problems
    messages = [p.message for p in found]
    assert "unknown input 'prot'" in messages
    assert "input 'port' must be an integer, got 'abc'" in messages
    assert "input 'mode' must be one of ['a', 'b'], got 'c'" in messages
    assert "missing required input 'password'" in messages
    unknown = next(p for p in found if p.message == "unknown input 'prot'")
    assert "did you mean 'port'?" in unknown.hint


def test_inputs_are_coerced_from_command_line_strings(registry):
    document = bp.parse(INPUTS, "ok.yaml", registry)
    values = inputs.prepare(document, sets=["port=2376", "password=x"]).values
    assert values == {"port": 2376, "mode": "a", "password": "x"}


def test_valid_blueprint_loads_with_implicit_dependencies(registry):
    document = bp.parse(
        """
name: t
steps:
  - id: a
    uses: echo
  - id: b
    uses: echo
    with: {message: "${{ steps.a.outputs.message }}"}
""",
        "ok.yaml",
        registry,
    )
    assert bp.dependencies(document.step("b")) == ["a"]


def _builtin_step_types(monkeypatch):
    monkeypatch.delenv("VICFLOW_PLUGINS", raising=False)
    return load_registry(entry_points=False).step_types


def test_shipped_json_schema_matches_the_models_and_the_builtin_steps(monkeypatch):
    import json
    from pathlib import Path

    shipped = json.loads((Path(__file__).parents[1] / "schema" / "blueprint.schema.json").read_text())
    assert shipped == json.loads(json.dumps(bp.json_schema(_builtin_step_types(monkeypatch)))), (
        "regenerate: VICFLOW_PLUGINS= VICFLOW_DISABLE_PLUGIN_AUTOLOAD=1 vicflow schema > schema/blueprint.schema.json"
    )
    assert "with" in shipped["$defs"]["StepSpec"]["properties"]


def test_the_schema_checks_with_per_step_type_as_an_editor_would(monkeypatch):
    """An editor with the schema marks an unknown or mistyped with: key of compose_up, and accepts every
    shipped blueprint (expressions included)."""
    from pathlib import Path

    import jsonschema
    from vicflow.plugins import yamlpos

    schema = bp.json_schema(_builtin_step_types(monkeypatch))
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((Path(__file__).parents[1] / "blueprints").glob("*.yaml")):
        document = yamlpos.load(path.read_text(), yaml12_booleans=True).data  # editors read YAML 1.2
        errors = [e.message for e in validator.iter_errors(document)]
        assert not errors, (path.name, errors[:3])
    bad = {
        "name": "bad",
        "steps": [
            {"id": "app", "uses": "compose_up", "with": {"filez": ["a.yml"], "parallel": "many"}},
            {"id": "ok", "uses": "compose_up", "with": {"parallel": "${{ inputs.n }}"}},
        ],
    }
    errors = sorted(validator.iter_errors(bad), key=lambda e: list(e.absolute_path))
    where = {tuple(e.absolute_path) for e in errors for e in (e.context or [e])} | {
        tuple(e.absolute_path) for e in errors
    }
    messages = " ".join(e.message for e in errors) + " ".join(c.message for e in errors for c in e.context or [])
    assert ("steps", 0, "with") in where or ("steps", 0, "with", "parallel") in where
    assert "filez" in messages
    assert not any(p[:2] == ("steps", 1) for p in where), "an expression is accepted for any parameter"


def test_defaults_are_merged_under_each_step_of_their_type(registry):
    document = bp.parse(
        """
name: t
defaults:
  echo: {message: from the defaults, value: 1}
steps:
  - {id: a, uses: echo, with: {message: its own}}
  - {id: b, uses: echo}
  - {id: c, uses: noop}
""",
        "ok.yaml",
        registry,
    )
    assert document.step("a").with_ == {"message": "its own", "value": 1}
    assert document.step("b").with_ == {"message": "from the defaults", "value": 1}
    assert document.step("c").with_ == {}


def test_defaults_name_step_types_and_their_keys(registry):
    found = problems(
        """
        name: t
        defaults:
          ecko: {message: x}
          echo: {mesage: x}
        steps:
          - {id: a, uses: echo}
        """,
        registry,
    )
    assert [(p.line, p.message) for p in found] == [
        (3, "defaults for unknown step type 'ecko'"),
        (4, "unknown key 'mesage' in the defaults of echo"),
    ]
    assert "did you mean 'echo'?" in found[0].hint and "did you mean 'message'?" in found[1].hint


def test_outputs_refer_to_inputs_and_steps_that_exist(registry):
    found = problems(
        """
        name: t
        outputs:
          a: ${{ steps.nope.outputs.message }}
          b: ${{ secrets.x }}
        steps:
          - {id: a, uses: echo}
        """,
        registry,
    )
    assert [(p.line, p.message) for p in found] == [
        (3, "reference to unknown step 'nope'"),
        (4, "${{ secrets.x }} cannot be used in outputs"),
    ]
