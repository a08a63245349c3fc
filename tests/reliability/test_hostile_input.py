"""Generated hostile and careless input: every one ends in our own located error (or loads), never a traceback,
within 2 s, 200 MiB and 64 KB of output.

Inputs are mutations of the shipped blueprints, the test blueprints and the compose corpus: wrong types, deep
nesting, YAML aliases (recursive ones and alias bombs), merge keys, duplicate keys, tabs, non-UTF-8 bytes,
control characters, bad explicit tags, huge scalars, cyclic and unknown ``needs``, and hostile expressions.
The CI profile runs a few thousand cases per test; ``make fuzz`` runs the full count (VICFLOW_FUZZ=full), ``make check``
a reduced one (VICFLOW_FUZZ=quick).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vicflow.flows.language import blueprint as bp
from vicflow.flows.language import expressions
from vicflow.plugins.compose.errors import ComposeError
from vicflow.plugins.compose.project import load_project
from vicflow.plugins.manager import default_registry

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = {"full": 10_000, "quick": 300}.get(os.environ.get("VICFLOW_FUZZ", ""), 1_500)
settings.register_profile(
    "vicflow", max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
settings.load_profile("vicflow")

SEEDS = [p.read_text() for p in sorted((REPO / "blueprints").glob("*.yaml"))] + [
    p.read_text() for p in sorted((REPO / "tests" / "data").glob("*.yaml"))
]
COMPOSE = [p for p in sorted((REPO / "tests" / "data" / "compose-corpus").glob("*.yml"))]
REGISTRY = default_registry()

HOSTILE_EXPRESSIONS = [
    "${{ 'a'*10**10 }}",
    "${{ 9**(9**9) }}",
    "${{ '%900000000d'|format(1) }}",
    "${{ 'x'|center(10**10) }}",
    "${{ '{:>900000000}'.format(1) }}",
    "${{ ().__class__.__mro__[1].__subclasses__() }}",
    "${{ inputs.__class__.__init__.__globals__ }}",
    "${{ cycler.__init__.__globals__.os }}",
    "${{ lipsum.__globals__['os'].popen('id').read() }}",
    "${{ joiner.__init__.__globals__ }}",
    "${{ namespace.__init__.__globals__ }}",
    "${{ self.__init__.__globals__.__builtins__ }}",
    "${{ inputs|attr('__class__') }}",
    "${{ '%s'|format(inputs.__class__) }}",
    "${{ range(10**9)|list }}",
    "${{ " + "(" * 500 + "1" + ")" * 500 + " }}",
    "${{ " + "[" * 400 + "]" * 400 + " }}",
    "${{ inputs.nope ((( }}",
    "${{" * 2000,
    "\x00${% for i in [1] %}x${% endfor %}\x00",
    "${{ steps.missing.outputs.x }}",
    "${{ secrets }}",
    "{% raw %}${{ 1 }}{% endraw %}",
]
FRAGMENTS = [
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
    "loop: &loop [1, *loop]\n",
    "m: &m {k: v}\nn: {<<: *m, k2: v2}\n",
    "x: !!int 'abc'\n",
    "x: !!bool maybe\n",
    "x: !!timestamp x\n",
    "x: !!binary 'zz'\n",
    "x: !!python/object:os.system ls\n",
    "\tname: tabbed\n",
    "name: a\nname: b\n",
    "x: " + "[" * 400 + "]" * 400 + "\n",
    "x: " + "{a: " * 200 + "1" + "}" * 200 + "\n",
    "x: '" + "y" * 200_000 + "'\n",
    "? [a, b]\n: c\n",
    "steps: {not: a list}\n",
    "steps:\n  - id: a\n    uses: health_check\n    needs: [a]\n",
    "steps:\n  - {id: a, uses: health_check, needs: [b]}\n  - {id: b, uses: health_check, needs: [a]}\n",
    "inputs: {p: {type: integer, default: abc}}\n",
    "target: ${{ nope.x }}\n",
]
BYTES = [b"\x00", b"\x1b[31m", b"\xff\xfe", b"\xe9", "\ufffe".encode(), b"\r", b"\t", b"\x85", b"\xc3\x28"]


@st.composite
def mutated(draw, seeds: list[str]) -> bytes:
    text = draw(st.sampled_from(seeds))
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.integers(0, 8))
        at = draw(st.integers(0, max(0, len(lines))))
        if kind == 0 and lines:  # drop lines
            del lines[at : at + draw(st.integers(1, 5))]
        elif kind == 1:  # a hostile YAML fragment, indented like its neighbour
            indent = " " * draw(st.sampled_from([0, 2, 4, 6]))
            lines[at:at] = [indent + line + "\n" for line in draw(st.sampled_from(FRAGMENTS)).splitlines()]
        elif kind == 2 and lines:  # a value replaced by a hostile expression
            line = lines[min(at, len(lines) - 1)]
            if ":" in line:
                key = line.split(":", 1)[0]
                lines[min(at, len(lines) - 1)] = f'{key}: "{draw(st.sampled_from(HOSTILE_EXPRESSIONS))}"\n'
        elif kind == 3 and lines:  # a value of the wrong type
            line = lines[min(at, len(lines) - 1)]
            if ":" in line:
                key = line.split(":", 1)[0]
                value = draw(st.sampled_from(["[]", "{}", "null", "1e400", "-1", "true", "'  '", "[1, [2, [3]]]"]))
                lines[min(at, len(lines) - 1)] = f"{key}: {value}\n"
        elif kind == 4 and lines:  # a line duplicated (duplicate keys) or re-indented (tabs, spaces)
            line = lines[min(at, len(lines) - 1)]
            lines.insert(at, draw(st.sampled_from([line, "\t" + line, " " + line, line.lstrip()])))
        elif kind == 5:  # random text
            lines.insert(at, draw(st.text(max_size=40)) + "\n")
        elif kind == 6:
            lines.insert(
                at,
                f"      needs: [{', '.join(draw(st.lists(st.sampled_from(['app', 'vch', 'x', 'web']), max_size=4)))}]\n",
            )
        elif kind == 7:  # truncation
            lines = lines[:at]
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.sampled_from(BYTES)) + data[cut:]
    return data


STATS: dict[str, list[float]] = {}  # per test: cases, worst seconds, worst MiB, errors


WALL_LIMIT = 30


def bounded(fn, test: str) -> tuple[str, float, float]:
    """Run ``fn``; returns (outcome, CPU seconds, peak MiB).  Any exception but ours propagates (a failure).

    The bound is on CPU time, as the rendering budget's is: on a shared 2-core host a case may wait for a core
    far longer than it computes. A hang (no CPU spent) still fails: ``WALL_LIMIT`` seconds of wall time."""
    tracemalloc.start()
    started, cpu_started = time.monotonic(), time.process_time()
    try:
        outcome = fn()
    finally:
        seconds, wall = time.process_time() - cpu_started, time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    assert wall < WALL_LIMIT, f"a case hung for {wall:.0f} s in {test}"
    stats = STATS.setdefault(test, [0, 0.0, 0.0, 0])
    stats[0] += 1
    stats[1], stats[2] = max(stats[1], seconds), max(stats[2], peak)
    stats[3] += outcome != "ok"
    return outcome, seconds, peak


def teardown_module():
    for test, (cases, seconds, mib, errors) in STATS.items():
        print(f"\n{test}: {cases} cases ({errors} refused with our error), worst {seconds:.3f} s, {mib:.1f} MiB")


def validate(tmp: Path, data: bytes) -> str:
    path = tmp / "blueprint.yaml"
    path.write_bytes(data)
    try:
        bp.load(path, REGISTRY)
        return "ok"
    except bp.BlueprintError as exc:
        message = str(exc)
        assert all(p.line >= 1 and p.column >= 1 and p.file for p in exc.problems)
        assert len(message) <= 64 * 1024, f"{len(message)} bytes of errors"
        return message


@given(data=mutated(SEEDS))
def test_blueprint_loader_and_validator(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("fuzz", numbered=True)
    outcome, seconds, peak = bounded(lambda: validate(tmp, data), "blueprints")
    assert seconds < 2, f"{seconds:.1f}s for {data[:200]!r}"
    assert peak < 200, f"{peak:.0f} MiB for {data[:200]!r}"


@given(source=st.one_of(st.sampled_from(HOSTILE_EXPRESSIONS), st.text(max_size=60).map(lambda t: "${{ " + t + " }}")))
def test_expression_renderer(source):
    context = {"inputs": {"x": "abc", "n": 5, "l": [1, 2]}, "steps": {}, "secrets": {}, "event": {}}

    def render():
        try:
            expressions.render(source, context)
            list(expressions.references(source))
            return "ok"
        except expressions.ExpressionError as exc:
            assert len(str(exc)) < 4096
            return str(exc)

    outcome, seconds, peak = bounded(render, "expressions")
    assert seconds < 2 and peak < 200, (source[:100], seconds, peak)


def load_compose(tmp: Path, data: bytes) -> str:
    path = tmp / "docker-compose.yml"
    path.write_bytes(data)
    try:
        load_project([str(path)], project_name="fuzz", environment={"KC_PASSWORD": "x"}, use_os_environ=False)
        return "ok"
    except ComposeError as exc:
        assert str(exc).startswith(str(path)) or "compose file" in str(exc), str(exc)[:300]
        return str(exc)


@given(data=mutated([p.read_text() for p in COMPOSE]))
def test_compose_loader(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("compose", numbered=True)
    (tmp / "web.env").write_text("A=1\n")
    outcome, seconds, peak = bounded(lambda: load_compose(tmp, data), "compose files")
    assert seconds < 2 and peak < 200, (data[:200], seconds, peak)
