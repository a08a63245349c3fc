"""Expressions: native types, text rendering, the sandbox, and static reference extraction."""

import pytest
from vicflow.flows.language import expressions as ex

CTX = {
    "inputs": {"port": 2376, "hosts": ["h0", "h1"], "name": "vch02"},
    "steps": {"v": {"outputs": {"ip": "10.0.0.5"}}},
    "event": {},
    "secrets": {},
}


def test_whole_expression_keeps_its_native_type():
    assert ex.render("${{ inputs.port }}", CTX) == 2376
    assert ex.render("${{ inputs.hosts }}", CTX) == ["h0", "h1"]
    assert ex.render(" ${{ inputs.port + 1 }} ", CTX) == 2377


def test_embedded_expression_renders_text_and_walks_containers():
    value = {"url": "tcp://${{ steps.v.outputs.ip }}:${{ inputs.port }}", "list": ["${{ inputs.name }}", 3]}
    assert ex.render(value, CTX) == {"url": "tcp://10.0.0.5:2376", "list": ["vch02", 3]}


def test_go_templates_and_braces_stay_plain_text():
    text = 'docker ps --format "{{.Names}}" {% raw %} {# x #}'
    assert ex.render(text, CTX) == text


@pytest.mark.parametrize(
    "source",
    [
        "${{ inputs.__class__.__mro__ }}",
        "${{ inputs.name.__class__ }}",
        "${{ ''.__class__.__base__.__subclasses__() }}",
        "${{ inputs.hosts.append('x') }}",
        "${{ lipsum.__globals__ }}",
    ],
)
def test_sandbox_refuses_python_internals(source):
    with pytest.raises(ex.ExpressionError):
        ex.render(source, CTX)
    assert CTX["inputs"]["hosts"] == ["h0", "h1"]


def test_undefined_names_are_errors_not_empty_strings():
    with pytest.raises(ex.ExpressionError, match="nope"):
        ex.render("x-${{ inputs.nope }}", CTX)


def test_references_are_found_statically():
    refs = set(
        ex.references(
            {
                "a": "${{ steps.vch.outputs.docker_host }} ${{ inputs['port'] | string }}",
                "b": ["${{ item.name if event.x else secrets.pw }}"],
            }
        )
    )
    assert ("steps", "vch", "outputs", "docker_host") in refs
    assert ("inputs", "port") in refs
    assert {("item", "name"), ("event", "x"), ("secrets", "pw")} <= refs


def test_block_syntax_is_unreachable_even_through_a_yaml_nul_escape():
    from vicflow.plugins import yamlpos

    value = yamlpos.load('v: "\\0${% for i in [1,2,3] %}\\0X\\0${% endfor %}\\0 ${{ 1 }}"\n').data["v"]
    with pytest.raises(ex.ExpressionError, match="cannot hold a NUL"):
        ex.render(value, {})
    with pytest.raises(ex.ExpressionError, match="cannot hold a NUL"):
        list(ex.references(value))
    assert ex.render("{% raw %} ${{ 1 + 1 }}", {}) == "{% raw %} 2"


# ------------------------------------------------------------------------------- the budget (flows/language/budget.py)

ISSUE_27_BOMBS = [
    "('a\n'*499999)|indent(999999)",
    "'%0*d'|format(900000000,0)",
    "(['a']*1000)|join('x'*999999)",
    "'%999999999d' % 1",
    "(['%99999d']*9999)|map('format', 1)|map('format')|list",
    "(['a\nb']*100000)|map('indent', 999)|list",
    "9**999999 * 9**999999",
    "([9**999999]*999999)|sum",
    "[[1]*999999]*999999",
    "(9**999999)|int",
    "('1'*20000)|int(base=2)",
    "[1]|slice(10**9)|list",
    "'x'.center(10**9)",
    "'a\tb'.expandtabs(10**8)",
    "'x'.join(['a'*999]*1000000)",
    "('ab'*100000).replace('a', 'x'*1000)",
]


@pytest.mark.parametrize("source", ISSUE_27_BOMBS)
def test_memory_and_cpu_bombs_meet_the_budget_not_the_machine(source):
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.process_time()
    with pytest.raises(ex.BudgetError, match="more than|at most"):
        ex.render("${{ " + source + " }}", CTX)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MiB"
    assert time.process_time() - started < 3


def test_the_budget_leaves_ordinary_expressions_alone():
    assert ex.render("${{ (inputs.hosts * 500)|join(',')|length }}", CTX) == 2999
    assert ex.render("${{ 2 ** 100 }}", CTX) == 2**100
    assert ex.render("${{ 'x' * 900000 }}", CTX) == "x" * 900000
    assert ex.render("${{ '%05d' % inputs.port }}", CTX) == "02376"
    assert ex.render("${{ inputs.name ~ '-' ~ inputs.port }}", CTX) == "vch02-2376"
    assert ex.render("${{ inputs.hosts|tojson }}", CTX) == '["h0", "h1"]'
    assert type(ex.render("${{ inputs.hosts|tojson }}", CTX)) is str  # not Markup


def test_integers_are_bounded_to_the_digits_python_prints():
    assert len(str(ex.render("${{ 10 ** 4299 }}", CTX))) == 4300
    with pytest.raises(ex.BudgetError, match="4,300"):
        ex.render("${{ 10 ** 4299 * 100 }}", CTX)


def test_an_expression_error_never_prints_a_secret(monkeypatch):
    """Jinja's messages quote the key they could not find, escaped: the masker knows the escaped forms."""
    from vicflow.flows.language.secrets import Secrets

    secret = "pw\\with'quote\"and\nnewline-0042"
    monkeypatch.setenv("VICFLOW_SECRET_PW", secret)
    context = {**CTX, "secrets": Secrets()}
    for source in ("${{ inputs[secrets.pw] }}", "${{ {}[secrets.pw] }}", "${{ steps[secrets.pw] }}"):
        with pytest.raises(ex.ExpressionError) as caught:
            ex.render(source, context)
        assert "0042" not in str(caught.value), str(caught.value)
        assert "***" in str(caught.value)


def test_a_format_width_from_an_argument_is_refused_and_escaped_braces_are_not():
    with pytest.raises(ex.BudgetError, match="a format width taken from an argument"):
        ex.render("${{ '{0:{1}}'.format('a', 10**9) }}", CTX)
    assert ex.render("${{ '{{x}}-{0}'.format(1) }}", CTX) == "{x}-1"
