"""Expressions: native types, text rendering, the sandbox, and static reference extraction."""

import pytest
from vicflow.flows import expressions as ex

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
