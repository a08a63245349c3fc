"""The one input pipeline (flows/language/inputs.py): sources in order, expressions rendered, then typed (no servers)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language import inputs
from vicflow.plugins import masking
from vicflow.plugins.errors import InputsError

BLUEPRINT = """\
name: t
inputs:
  port: {type: integer}
  host: {type: string, default: localhost}
  pw: {type: secret}
  mode: {type: string, enum: [a, b], default: a}
steps:
  - {id: a, uses: noop}
"""


@pytest.fixture
def document(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(BLUEPRINT)
    return bp.load(path)


def test_an_integer_input_may_be_a_secret_expression(document, monkeypatch):
    """Rendered first, then typed: the secret's text "48213" becomes the integer 48213."""
    monkeypatch.setenv("VICFLOW_SECRET_DOCKER_PORT", "48213")
    monkeypatch.setenv("VICFLOW_SECRET_PW", "s3cret-pw")
    prepared = inputs.prepare(document, sets=["port=${{ secrets.docker_port }}", "pw=${{ secrets.pw }}"])
    assert prepared.values == {"port": 48213, "host": "localhost", "pw": "s3cret-pw", "mode": "a"}
    assert masking.mask("login with s3cret-pw") == "login with ***"
    # what the flow run records is the expression, wrapped: never the secret's value
    assert isinstance(prepared.given["pw"], SecretStr)
    assert prepared.given["pw"].get_secret_value() == "${{ secrets.pw }}"


def test_file_then_set_later_wins_and_problems_name_the_file_line(document, tmp_path):
    file = tmp_path / "site.yaml"
    file.write_text("host: db.example\nport: 2375\nmode: c\n")
    with pytest.raises(InputsError) as info:
        inputs.prepare(document, file=file, sets=["pw=x"])
    (problem,) = info.value.problems
    assert (problem.file, problem.line, problem.message) == (
        str(file),
        3,
        "input 'mode' must be one of ['a', 'b'], got 'c'",
    )
    prepared = inputs.prepare(document, file=file, sets=["pw=x", "mode=b", "port=2376"])
    assert prepared.values == {"port": 2376, "host": "db.example", "pw": "x", "mode": "b"}


def test_a_missing_secret_is_an_input_problem_with_its_fix(document, monkeypatch):
    monkeypatch.delenv("VICFLOW_SECRET_NOPE", raising=False)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: asking Prefect fails
    with pytest.raises(InputsError) as info:
        inputs.prepare(document, sets=["port=1", "pw=${{ secrets.nope }}"])
    (problem,) = info.value.problems
    assert problem.file == "--set"
    assert "secret 'nope' is not set" in problem.message
    assert "VICFLOW_SECRET_NOPE" in problem.hint


@pytest.mark.parametrize("given", ["${{]€~mk5e3f9a2c~}}", "${{ 'mk5e3f9a2c' ~ 1/0 }}", "${{ mk5e3f9a2c.x }}"])
def test_a_secret_shaped_like_a_reference_that_fails_is_never_quoted(document, given):
    """One whole ${{ }} given for a secret input is taken as a reference; when it does not evaluate it may be the
    secret itself (the fuzzer's case: a secret in clear in "cannot parse '${{]...'"), so it is not shown."""
    with pytest.raises(InputsError) as info:
        inputs.prepare(document, sets=["port=1", f"pw={given}"])
    (problem,) = info.value.problems
    assert "mk5e3f9a2c" not in str(problem) and "input 'pw'" in problem.message
    assert "${{ secrets.NAME }}" in problem.hint


def test_a_secret_that_is_not_an_integer_is_named_without_its_value(document, monkeypatch):
    monkeypatch.setenv("VICFLOW_SECRET_DOCKER_PORT", "not-a-port")
    with pytest.raises(InputsError) as info:
        inputs.prepare(document, sets=["port=${{ secrets.docker_port }}", "pw=x"])
    assert "input 'port' must be an integer" in info.value.problems[0].message


def test_a_missing_input_points_at_its_declaration(document):
    with pytest.raises(InputsError) as info:
        inputs.prepare(document, sets=["port=1"])
    (problem,) = info.value.problems
    assert (problem.line, problem.column, problem.message) == (5, 3, "missing required input 'pw'")
    assert problem.file == document.path


SECRET_CHECKS = """\
name: t
inputs:
  pw: {type: secret}
  choice: {type: secret, enum: [red, green], required: false}
steps:
  - {id: a, uses: noop}
"""


@pytest.fixture
def secret_document(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SECRET_CHECKS)
    return bp.load(path)


def test_a_secret_input_is_never_quoted_by_a_check(secret_document):
    with pytest.raises(InputsError) as caught:
        inputs.prepare(secret_document, sets=["pw=x", "choice=blue-0042-secret"])
    message = str(caught.value)
    assert "input 'choice' must be one of the values listed in the blueprint, got a secret value" in message
    assert "0042" not in message


def test_a_secret_value_is_never_rendered_as_an_expression(secret_document):
    """A password may hold ${{: given as it is, it is the secret itself; only a whole ${{ }} is a reference."""
    prepared = inputs.prepare(secret_document, sets=["pw=SECRET-0042${{ 1/0 }}"])
    assert prepared.values["pw"] == "SECRET-0042${{ 1/0 }}"
    assert masking.mask("the password SECRET-0042${{ 1/0 }}") == "the password ***"


def test_a_secret_given_as_a_list_is_masked_element_by_element(secret_document, tmp_path):
    (tmp_path / "in.yaml").write_text("pw: [first-0042, second-0042]\n")
    inputs.prepare(secret_document, file=tmp_path / "in.yaml")
    assert masking.mask("a first-0042 b second-0042") == "a *** b ***"


def test_a_set_value_that_is_not_utf8_is_a_located_error(document):
    with pytest.raises(InputsError) as caught:
        inputs.prepare(document, sets=["pw=x", "port=12\udcff"])
    assert str(caught.value) == "--set:1:8: --set 'port': the value is not UTF-8\n    hint: pass UTF-8 text"


def test_an_input_default_bomb_is_refused_at_its_place(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text(
        "name: d\ninputs:\n  x: {type: list, default: '${{ [[1]*999999]*999999 }}'}\nsteps:\n  - {id: a, uses: noop}\n"
    )
    with pytest.raises(InputsError) as caught:
        inputs.prepare(bp.load(path))
    assert str(caught.value).startswith(
        f"{path}:3:3: input 'x': '${{{{ [[1]*999999]*999999 }}}}': repeating a sequence"
    )
