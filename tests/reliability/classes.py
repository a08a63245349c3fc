"""Hostile input by class (issue 27): generators and the checks that say whether a case ended cleanly.

One module serves the hypothesis suite (tests/reliability/test_hostile_classes.py draws cases with hypothesis)
and the measurement (``python tests/reliability/classes.py --cases 300`` draws them with ``random``, and prints
a table per class). It imports nothing of the test suite, so it can measure another checkout's vicflow too
(``/work/main/.venv/bin/python tests/reliability/classes.py``).

Every case runs in a forked child (``isolated``) with a memory cap (1 GiB more than the child starts with) and
a wall-clock cap, so a case that hangs or eats memory is counted, not fatal. A case is clean when it ends in
vicflow's own error (or succeeds) within LIMIT_SECONDS, LIMIT_MIB and LIMIT_OUTPUT; for the CLI, with exit 0, 1
or 2, no traceback, no "internal error", no terminal control character printed raw; and when no secret marker
(its random core, or its base64 at any alignment) appears in anything it printed or raised.

Classes:
- ``secrets``: a secret holding every character class (space, /, ?, %, é, [, $, \\, quotes, newline, ``${{ }}``,
  lists), sent through an encoding (URL as urllib, requests and urllib3 encode it, JSON, repr, Basic auth,
  a list's text) and masked; quoted by expression errors and input checks; used in ``target:``.
- ``budget``: amplifying expressions composed at random (repetition, powers, format widths, indent, center,
  join, replace, map, sum, slice, batch, nesting) in ``with:``, ``for_each``, input defaults; rendered and planned.
- ``output``: markup, ESC/OSC/CSI, bidi and C1 characters, bytes that are not UTF-8 and huge values in what the
  CLI prints (plan tables, errors, ``--output json``, the same file many times).
- ``loader``: every YAML the CLI reads (listen config, ``--inputs``, child blueprints) mutated, and the files
  that are not files (FIFO, device, folder, symlink loop, long names, deep chains of children).
- ``cli``: bad invocations (``--limit``, invalid UTF-8 in ``--set``, thousands of ``--set``, missing secrets
  without a server, an unreachable PREFECT_API_URL, closed pipes, a full disk, input names mixing int and text).
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

LIMIT_SECONDS = 5.0  # CPU seconds of one case in its own process (a hang is caught by KILL_SECONDS)
LIMIT_MIB = 300  # memory growth of one case
LIMIT_OUTPUT = 8 * 2**20  # bytes one CLI case may print (both streams)
KILL_SECONDS = 20.0  # a case still running then is killed and counted unclean

# Each class of character the issue names, and a core that is never part of any legitimate output
SECRET_PIECES = [" ", "/", "?", "%", "é", "[", "]", "$", "\\", "'", '"', "\n", "${{ 1/0 }}", "${{", "}}", "%41",
                 "#", "&", "=", "+", ":", "@", "<", "\t", "ü", "€", "[/]", "\\x", "%0A"]  # fmt: skip
CONTROL = ["\x1b[2J", "\x1b]0;pwned\x07", "\x1b]8;;http://evil\x1b\\", "\u202e", "\u2066", "\x9b31m", "\x07",
           "\x08", "\r", "\x85", "\u200b", "[/]", "[bold]", "[link=x]", "[/link]", "\\[", "%s", "{0}"]  # fmt: skip


class Draw:
    """What a generator asks of its source of randomness (random.Random or hypothesis' data)."""

    def __init__(self, pick: Callable[[list], Any], integer: Callable[[int, int], int]):
        self.pick, self.integer = pick, integer

    def boolean(self) -> bool:
        return self.integer(0, 1) == 1

    def some(self, options: list, most: int) -> list:
        return [self.pick(options) for _ in range(self.integer(0, most))]


def random_draw(rng: random.Random) -> Draw:
    return Draw(rng.choice, rng.randint)


def hypothesis_draw(data) -> Draw:
    from hypothesis import strategies as st

    return Draw(lambda options: data.draw(st.sampled_from(options)), lambda a, b: data.draw(st.integers(a, b)))


@dataclass
class Outcome:
    clean: bool
    why: str = ""
    markers: int = 0
    seconds: float = 0.0
    mib: float = 0.0


@dataclass
class Case:
    """``run(tmp)`` returns (what it printed or raised, exit code or None); ``secrets`` must not appear in it."""

    label: str
    run: Callable[[Path], tuple[str, int | None]]
    secrets: list[str] = field(default_factory=list)
    cli: bool = False


# ------------------------------------------------------------------------------------------------ checks


def marker_forms(secret: str) -> list[str]:
    """What would betray ``secret``: its random core (kept by percent-encoding, JSON, repr), and its base64 at each
    alignment (Basic auth)."""
    core = secret.split("~")[1] if "~" in secret else secret
    found = [core]
    data = secret.encode()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data + b"\0\0")
        found.append(encoded[-(-8 * offset // 6) : (8 * (offset + len(data))) // 6].decode())
    return [f for f in found if len(f) >= 8]


RAW_CONTROL = [chr(c) for c in (*range(0, 9), *range(11, 32), *range(127, 160))] + [
    "\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069"]  # fmt: skip


def judge(case: Case, text: str, code: int | None, seconds: float, mib: float) -> Outcome:
    markers = sum(1 for s in case.secrets for f in marker_forms(s) if f in text)
    why = ""
    if markers:
        why = f"secret in clear: {text[:300]!r}"
    elif seconds > LIMIT_SECONDS:
        why = f"{seconds:.1f} s"
    elif mib > LIMIT_MIB:
        why = f"{mib:.0f} MiB"
    elif len(text.encode("utf-8", "surrogatepass")) > LIMIT_OUTPUT:
        why = f"{len(text):,} characters of output"
    elif case.cli and code not in (0, 1, 2):
        why = f"exit {code}: {text[-300:]!r}"
    elif case.cli and ("Traceback" in text or "internal error" in text):
        why = f"traceback: {text[-500:]!r}"
    elif case.cli and any(c in text for c in RAW_CONTROL):
        control = next(c for c in RAW_CONTROL if c in text)
        why = f"control character {control!r} printed raw"
    return Outcome(not why, why, markers, seconds, mib)


def ours(exc: BaseException) -> bool:
    from vicflow.plugins.errors import VicflowError

    return isinstance(exc, VicflowError)


def isolated(case: Case) -> Outcome:
    """Run ``case`` in a forked child, with a memory cap and a kill after KILL_SECONDS."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run, report as one JSON line, exit without cleanup
        os.close(read_end)
        code = 0
        try:
            report = _child(case)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            report = {"clean": False, "why": f"the harness failed: {type(exc).__name__}: {exc}"}
            code = 1
        os.write(write_end, json.dumps(report).encode() + b"\n")
        os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + KILL_SECONDS
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        os.set_blocking(pipe.fileno(), False)
        while time.monotonic() < deadline:
            finished, status = os.waitpid(pid, os.WNOHANG)
            data = pipe.read() or b""
            chunks.append(data)
            if finished:
                chunks.append(pipe.read() or b"")
                break
            time.sleep(0.005)
        else:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return Outcome(False, f"killed after {KILL_SECONDS:g} s", seconds=KILL_SECONDS)
    line = b"".join(chunks).strip()
    if not line:
        return Outcome(False, f"the case's process died ({_status(status)}): out of memory?")
    return Outcome(**json.loads(line))


def _status(status: int) -> str:
    return f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"exit {os.WEXITSTATUS(status)}"


def _child(case: Case) -> dict[str, Any]:
    vm = _vm_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))
    tmp = Path(tempfile.mkdtemp(prefix="vicflow-case-"))
    rss = _rss_mib()
    started = _cpu_seconds()
    try:
        text, code = case.run(tmp)
    except MemoryError:
        text, code = "MemoryError", None
        return {"clean": False, "why": "MemoryError (over 1 GiB)", "seconds": _cpu_seconds() - started}
    except BaseException as exc:  # noqa: BLE001 - the case's own failure is what is judged
        if not ours(exc):
            return {"clean": False, "why": f"{type(exc).__name__}: {str(exc)[:300]}"}
        text, code = str(exc), None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a full run made about 700 of them, left in /tmp
    outcome = judge(case, text, code, _cpu_seconds() - started, _rss_mib() - rss)
    return vars(outcome)


def _cpu_seconds() -> float:
    """CPU time of this (forked) process: what a case costs, whatever else the shared machine runs meanwhile."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    return 4 * 2**30


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cli(argv: list[str], env: dict[str, str] | None = None, stdout: str | None = None) -> tuple[str, int | None]:
    """``vicflow ARGV`` in this (forked) process, its stdout and stderr captured; ``stdout``: a path to write
    stdout to instead (``/dev/full``), or ``"closed-pipe"``."""
    os.environ.update(env or {})
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        if stdout == "closed-pipe":
            reader, writer = os.pipe()
            os.close(reader)
            os.dup2(writer, 1)
        elif stdout:
            os.dup2(os.open(stdout, os.O_WRONLY), 1)
        else:
            os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", errors="strict")
        sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", errors="backslashreplace")
        from vicflow.flows.cli import main as vicflow_cli

        try:
            code = vicflow_cli.main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        ignored = ""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError as exc:  # what Python prints at exit, with exit status 120
                ignored, code = f"\nException ignored in: {stream!r}\n{type(exc).__name__}: {exc}\n", 120
        out.seek(0)
        err.seek(0)
        return out.read().decode("utf-8", "replace") + err.read().decode("utf-8", "replace") + ignored, code


# ------------------------------------------------------------------------------------------------ secrets


def a_secret(draw: Draw) -> str:
    """A secret with a unique core between ``~``: every character class of the issue around it."""
    core = "mk" + uuid.uuid4().hex[:14]
    before = "".join(draw.some(SECRET_PIECES, 4))
    after = "".join(draw.some(SECRET_PIECES, 4))
    return f"{before}~{core}~{after}"


def _encoded(secret: str, draw: Draw) -> str:
    """The secret as some library would put it in a message."""
    import requests

    how = draw.integer(0, 11)
    if how == 0:
        return requests.Request("GET", f"http://h.example/hooks/{secret}").prepare().url or ""
    if how == 1:
        return requests.Request("GET", "http://h.example/x", params={"token": secret}).prepare().url or ""
    if how == 2:
        auth = ("user", secret.encode("utf-8", "surrogatepass"))  # as the registry client sends it
        return requests.Request("GET", "http://h.example/", auth=auth).prepare().headers["Authorization"]
    if how == 3:
        return json.dumps({"password": secret})
    if how == 4:
        return repr(secret)
    if how == 5:
        return repr(repr(secret))
    if how == 6:
        return quote(secret, safe=draw.pick(["", "/"]))
    if how == 7:
        return quote_plus(secret)
    if how == 8:
        return str([secret, "x"])
    if how == 9:
        return f"HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: /{quote(secret, safe='/?=&')}"
    if how == 10:
        return base64.b64encode(f"{draw.pick(['u', 'us', 'use'])}:{secret}".encode()).decode()
    return json.dumps(json.dumps(secret))


SECRET_EXPRESSIONS = [
    "${{ inputs[secrets.s] }}", "${{ secrets.s|int }}", "${{ secrets.s + 1 }}", "${{ steps[secrets.s] }}",
    "${{ secrets.s.nope }}", "${{ {}[secrets.s] }}", "${{ secrets.s|attr('x') }}", "x${{ secrets.s - 1 }}",
    "${{ (secrets.s ~ '!')|int + 1 }}", "${{ secrets.s|float / 0 }}", "${{ secrets.s * 'x' }}",
    "${{ [secrets.s]|map('int')|list }}", "${{ inputs.nope|default(secrets.s)|int + 'a' }}",
]  # fmt: skip


def secrets_case(draw: Draw) -> Case:
    secret = a_secret(draw)
    kind = draw.integer(0, 4)
    if kind == 0:
        text = f"GET {_encoded(secret, draw)} answered 404"

        def run(tmp: Path) -> tuple[str, int | None]:
            from vicflow.plugins import masking

            masking.add_secret(secret)
            return masking.mask(text), None

        return Case("an encoded secret, masked", run, [secret])
    if kind == 1:
        source = draw.pick(SECRET_EXPRESSIONS)

        def run(tmp: Path) -> tuple[str, int | None]:
            from vicflow.flows.language import expressions
            from vicflow.flows.language.secrets import Secrets

            os.environ["VICFLOW_SECRET_S"] = secret
            expressions.render(source, {"inputs": {}, "steps": {}, "secrets": Secrets(), "event": {}})
            return "", None

        return Case(f"an expression error quoting a secret: {source}", run, [secret])
    if kind == 2:
        return _input_check_case(draw, secret)
    if kind == 3:
        target = f"{draw.pick(['t-', 'vch/', ''])}${{{{ inputs.pw }}}}{draw.pick(['', '/gogs'])}"

        def run(tmp: Path) -> tuple[str, int | None]:
            from vicflow.flows.language import expressions
            from vicflow.flows.on_prefect import flow
            from vicflow.plugins import masking

            masking.add_secret(secret)
            rendered = str(expressions.render(target, {"inputs": {"pw": secret}, "event": {}}))
            name_of = getattr(flow, "limit_name", None)
            if name_of is None:  # the name the flow gave a target before it had limit_name
                import re

                return "vicflow-target-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", rendered)[:100], None
            return name_of(rendered), None

        return Case(f"a secret in target: {target}", run, [secret])
    return _plan_secret_case(draw, secret)


def _input_check_case(draw: Draw, secret: str) -> Case:
    """A secret input refused by a check (enum, type) or holding an expression: the problem names no secret."""
    listed = draw.boolean()
    spec = draw.pick(
        ["{type: secret, enum: [a, b]}", "{type: secret}", "{type: integer}", "{type: secret, default: x}"]
    )
    how = draw.pick(["set", "file", "reference"])
    if "secret" not in spec:  # a secret given to an input of another type comes from ${{ secrets.x }}
        how, listed = "reference", False

    def run(tmp: Path) -> tuple[str, int | None]:
        from vicflow.flows.language import blueprint as bp
        from vicflow.flows.language import inputs

        path = tmp / "b.yaml"
        path.write_text(
            f"name: b\ninputs:\n  pw: {spec}\nsteps:\n  - {{id: a, uses: http_request, with: {{url: x}}}}\n"
        )
        document = bp.load(path)
        value: Any = [secret, "second-" + secret] if listed else secret
        if how == "reference":
            os.environ["VICFLOW_SECRET_PW"] = secret
            inputs.prepare(document, sets=["pw=${{ secrets.pw }}"])
        elif how == "file" or listed:
            (tmp / "in.yaml").write_text(json.dumps({"pw": value}))
            inputs.prepare(document, file=tmp / "in.yaml")
        else:
            inputs.prepare(document, sets=[f"pw={secret}"])
        return "", None

    return Case(f"an input check on a secret ({spec}, {how}, list={listed})", run, [secret])


def _plan_secret_case(draw: Draw, secret: str) -> Case:
    """A plan (CLI, text or JSON) whose http_request URL, target and error hold the secret."""
    output = draw.pick(["text", "json"])
    reference = draw.boolean()
    url = draw.pick(["http://h.example/hooks/${{ inputs.pw }}", "http://u:${{ inputs.pw }}@h.example/",
                     "http://h.example/?t=${{ inputs.pw }}", "${{ inputs.pw }}"])  # fmt: skip

    def run(tmp: Path) -> tuple[str, int | None]:
        path = tmp / "b.yaml"
        path.write_text(
            "name: b\ninputs:\n  pw: {type: secret}\ntarget: t-${{ inputs.pw }}\nsteps:\n"
            f"  - id: a\n    uses: http_request\n    with: {{url: {json.dumps(url)}}}\n"
            "  - id: b\n    uses: http_request\n    with: {url: '${{ inputs.pw|int }}'}\n"
        )
        set_secret = "pw=${{ secrets.pw }}" if reference else f"pw={secret}"
        return cli(["plan", str(path), "--output", output, "--set", set_secret], env={"VICFLOW_SECRET_PW": secret})

    return Case(f"a plan with the secret in {url} ({output})", run, [secret], cli=True)


# ------------------------------------------------------------------------------------------------ budget

AMPLIFIERS = [
    "'a' * {n}", "[1] * {n}", "[[1] * {n}] * {n}", "9 ** {n}", "'%0*d' | format({n}, 0)", "'%{n}d' % 1",
    "('a\\n' * {m}) | indent({n})", "'x' | center({n})", "(['a'] * {m}) | join('x' * {n})",
    "('ab' * {m}) | replace('a', 'x' * {n})", "(['%{m}d'] * {m}) | map('format', 1) | list",
    "(['a\\nb'] * {m}) | map('indent', {n}) | list", "([9 ** {m}] * {m}) | sum", "[1] | slice({n}) | list",
    "'a' | batch({n}) | list", "('1' * {n}) | int", "('1' * {n}) | int(base=2)", "'{{:>{n}}}'.format(1)",
    "'x'.ljust({n})", "'a\\tb'.expandtabs({n})", "(9 ** {m}) * (9 ** {m})", "('a' * {m}) ~ ('b' * {m})",
    "(('a' * {m}) | list | sort | sort | sort | sort | length)", "('x' * {m}) | wordwrap(1)", "{n} * {n} * {n}",
    "('a' * {m}) | tojson", "(['a'] * {m}) | unique | list", "('a' * {m}) | urlize",
    "'{{0:{{1}}}}'.format('a', {n})", "'%-*s' % ({n}, 'a')", "('a' * {m}) | center({n}) | wordcount",
    "(['a' * {m}] * {m}) | map('upper') | join", "({{'k': 'v' * {m}}} | dictsort) * {m}",
]  # fmt: skip
SIZES = [1, 7, 999, 4_301, 99_999, 499_999, 999_999, 9_999_999, 900_000_000, 10**12]


def an_amplifier(draw: Draw) -> str:
    expression = draw.pick(AMPLIFIERS).format(n=draw.pick(SIZES), m=draw.pick(SIZES[:7]))
    for _ in range(draw.integer(0, 2)):
        outer = draw.pick(AMPLIFIERS)
        if "{m}" in outer:
            expression = outer.format(n=draw.pick(SIZES), m="\0").replace("\0", f"(({expression}) | length)")
    return expression


def budget_case(draw: Draw) -> Case:
    expression = an_amplifier(draw)
    where = draw.pick(["render", "with", "for_each", "default", "if", "target", "output"])
    if where == "render":

        def run(tmp: Path) -> tuple[str, int | None]:
            from vicflow.flows.language import expressions

            expressions.render("${{ " + expression + " }}", {"inputs": {}, "steps": {}, "secrets": {}, "event": {}})
            return "", None

        return Case(f"render {expression}", run)
    value = json.dumps("${{ " + expression + " }}")
    step = "  - id: a\n    uses: http_request\n    with: {url: http://h.example/}\n"
    head = "name: b\ninputs:\n  x: {type: string, default: ok}\n"
    if where == "with":
        step = f"  - id: a\n    uses: http_request\n    with: {{url: {value}}}\n"
    elif where == "for_each":
        step = (
            f"  - id: a\n    uses: http_request\n    for_each: {value}\n    with: {{url: 'http://h/${{{{ item }}}}'}}\n"
        )
    elif where == "if":
        step += f"    if: {value}\n"
    elif where == "default":
        head = f"name: b\ninputs:\n  x: {{type: {draw.pick(['string', 'integer', 'list'])}, default: {value}}}\n"
    elif where == "target":
        head += f"target: {value}\n"
    text = head + "steps:\n" + step + (f"outputs: {{o: {value}}}\n" if where == "output" else "")

    output = draw.pick(["text", "json"])

    def run(tmp: Path) -> tuple[str, int | None]:
        (tmp / "b.yaml").write_text(text)
        return cli(["plan", str(tmp / "b.yaml"), "--output", output])

    return Case(f"plan with {expression} in {where}", run, cli=True)


# ------------------------------------------------------------------------------------------------ output


def hostile_text(draw: Draw) -> str:
    parts = draw.some(CONTROL, 4) + [draw.pick(["x", "é", "ü", "\u00a0"]) * draw.pick([1, 3, 200, 100_000])]
    return "".join(parts[: draw.integer(1, len(parts))]) + "".join(draw.some(CONTROL, 3))


def output_case(draw: Draw) -> Case:
    kind = draw.integer(0, 5)
    hostile = hostile_text(draw)
    if kind == 0:  # in a URL a plan shows (text or json), many times
        count = draw.pick([1, 5, 50])
        output = draw.pick(["text", "json"])
        url = json.dumps("http://h.example/" + hostile)
        steps = "".join(f"  - id: s{i}\n    uses: http_request\n    with: {{url: {url}}}\n" for i in range(count))

        def run(tmp: Path) -> tuple[str, int | None]:
            (tmp / "b.yaml").write_text("name: b\nsteps:\n" + steps)
            return cli(["plan", str(tmp / "b.yaml"), "--output", output])

        return Case(f"plan of {count} URLs with {hostile[:40]!r} ({output})", run, cli=True)
    if kind == 1:  # a --set value quoted by an error
        return Case(f"--set quoting {hostile[:40]!r}", lambda tmp: cli(["plan", "gogs-health", "--set", f"docker_host={hostile}", "--set", f"http_port={hostile}"]), cli=True)  # fmt: skip
    if kind == 2:  # in step ids and keys that errors quote, many errors
        count = draw.pick([1, 50, 60])
        key = json.dumps(hostile)
        steps = "".join(f"  - id: {key}\n    uses: nope\n    with: {{{key}: 1}}\n" for _ in range(count))
        output = draw.pick(["text", "json"])

        def run(tmp: Path) -> tuple[str, int | None]:
            (tmp / "b.yaml").write_text("name: b\nsteps:\n" + steps)
            return cli(["validate", str(tmp / "b.yaml"), "--output", output])

        return Case(f"{count} bad step ids {hostile[:40]!r}", run, cli=True)
    if kind == 3:  # the same bad file many times
        times = draw.pick([2, 50, 400])

        def run(tmp: Path) -> tuple[str, int | None]:
            (tmp / "bad.yaml").write_text("name: b\nsteps:\n" + "  - {id: a, uses: nope}\n" * 60)
            return cli(["validate", *[str(tmp / "bad.yaml")] * times])

        return Case(f"the same file {times} times", run, cli=True)
    if kind == 4:  # a huge secret name, an unknown name in an expression
        name = draw.pick(["a" * 1_000_000, hostile, "x" * 100])
        return Case("a huge secret name", lambda tmp: cli(["plan", "gogs-health", "--set", "docker_host=${{ secrets['" + name.replace("'", "") + "'] }}"]), cli=True)  # fmt: skip
    stream = draw.pick(["closed-pipe", "/dev/full"])
    command = draw.pick([["schema"], ["plugins"], ["validate", "blueprints/gogs.yaml"], ["plugins", "--doc", "http_request"]])  # fmt: skip
    return Case(f"{' '.join(command)} to {stream}", lambda tmp: cli(command, stdout=stream), cli=True)


# ------------------------------------------------------------------------------------------------ loaders

FRAGMENTS = [
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
    "f: [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
    "loop: &loop [1, *loop]\n", "x: !!int 'abc'\n", "x: !!int 0b" + "1" * 20_000 + "\n", "x: " + "9" * 5_000 + "\n",
    "x: !!python/object:os.system ls\n", "\tx: tab\n", "x: a\nx: b\n", "x: " + "[" * 400 + "]" * 400 + "\n",
    "x: '" + "y" * 200_000 + "'\n", "? [a, b]\n: c\n", "1: int key\n", "? {a: 1}\n: c\n", "null: x\n",
    "docker: {bogus: 1}\n", "docker: [1, 2]\n", "docker: {poll_seconds: abc}\n", "vsphere: {password: ${{ secrets.nope }}}\n",
    "docker_host: ${{ 9**999999 }}\n", "http_port: ${{ '1' * 5000 }}\n", "x: \"\\e]0;t\\a\"\n",
]  # fmt: skip
BYTES = [b"\x00", b"\x1b[31m", b"\xff\xfe", b"\xe9", b"\xef\xbf\xbe", b"\r", b"\t", b"\xc2\x85", b"\xc3\x28"]
BASES = {
    "listen config": "docker:\n  docker_host: unix:///run/docker.sock\n  poll_seconds: 5\n",
    "inputs file": "docker_host: tcp://127.0.0.1:2375\napp_host: 127.0.0.1\nhttp_port: 10080\n",
    "child blueprint": "name: child\ninputs:\n  host: {type: string}\nsteps:\n  - id: a\n    uses: http_request\n"
    "    with: {url: 'http://${{ inputs.host }}/'}\n",
}


def mutated(draw: Draw, base: str) -> bytes:
    lines = base.splitlines(keepends=True)
    for _ in range(draw.integer(1, 3)):
        at = draw.integer(0, len(lines))
        kind = draw.integer(0, 3)
        if kind == 0:
            indent = " " * draw.pick([0, 2, 4])
            lines[at:at] = [indent + line + "\n" for line in draw.pick(FRAGMENTS).splitlines()]
        elif kind == 1 and lines:
            del lines[at : at + draw.integer(1, 3)]
        elif kind == 2:
            lines.insert(at, draw.pick(["  ", "\t", "- ", "x: ", '"', "&a ", "*a "]) + (lines[at - 1] if at else "\n"))
        else:
            lines = lines[:at]
    data = "".join(lines).encode("utf-8", "surrogatepass")
    if draw.boolean():
        cut = draw.integer(0, len(data))
        data = data[:cut] + draw.pick(BYTES) + data[cut:]
    return data


SPECIAL = ["fifo", "/dev/zero", "folder", "symlink loop", "long name", "missing", "deep chain", "self", "empty"]


def _special(tmp: Path, kind: str, what: str) -> Path:
    """A path that is not a plain file of the kind asked for."""
    if kind == "fifo":
        os.mkfifo(tmp / "fifo.yaml")
        return tmp / "fifo.yaml"
    if kind == "/dev/zero":
        return Path("/dev/zero")
    if kind == "folder":
        (tmp / "dir.yaml").mkdir()
        return tmp / "dir.yaml"
    if kind == "symlink loop":
        (tmp / "a.yaml").symlink_to(tmp / "b.yaml")
        (tmp / "b.yaml").symlink_to(tmp / "a.yaml")
        return tmp / "a.yaml"
    if kind == "long name":
        return tmp / ("x" * 300 + ".yaml")
    if kind == "deep chain" and what == "child blueprint":
        for i in range(400):
            body = (f"name: c{i}\nsteps:\n  - {{id: a, uses: 'blueprint:c{i + 1}.yaml'}}\n" if i < 399
                    else "name: c399\nsteps:\n  - {id: a, uses: http_request, with: {url: x}}\n")  # fmt: skip
            (tmp / f"c{i}.yaml").write_text(body)
        return tmp / "c0.yaml"
    if kind == "self" and what == "child blueprint":
        (tmp / "self.yaml").write_text("name: me\nsteps:\n  - {id: a, uses: 'blueprint:self.yaml'}\n")
        return tmp / "self.yaml"
    if kind == "empty":
        (tmp / "empty.yaml").write_text("")
        return tmp / "empty.yaml"
    return tmp / "missing.yaml"


def loader_case(draw: Draw, what: str | None = None) -> Case:
    what = what or draw.pick(list(BASES))
    special = draw.pick(SPECIAL) if draw.integer(0, 4) == 0 else None
    data = mutated(draw, BASES[what])

    def run(tmp: Path) -> tuple[str, int | None]:
        path = _special(tmp, special, what) if special else tmp / "file.yaml"
        if not special:
            path.write_bytes(data)
        if what == "listen config":
            from vicflow.flows.events import listen

            return json.dumps(listen.load_config(str(path), []), default=str)[:1000], None
        if what == "inputs file":
            return cli(["plan", "gogs-health", "--inputs", str(path), "--output", "json"])
        parent = tmp / "parent.yaml"
        parent.write_text(f"name: parent\nsteps:\n  - id: child\n    uses: 'blueprint:{path.name}'\n    with: {{host: h}}\n")  # fmt: skip
        if special in ("deep chain", "self"):
            parent = path
        return cli(["validate", str(parent)])

    return Case(f"{what}: {special or data[:80]!r}", run, cli=what != "listen config")


# ------------------------------------------------------------------------------------------------ cli


def cli_case(draw: Draw) -> Case:
    kind = draw.integer(0, 7)
    if kind == 0:
        limit = draw.pick(["-1", "0", "x", "1e9", "-99999999999999999999999", "\udcff"])
        return Case(f"worker --limit {limit}", lambda tmp: cli(["worker", "--limit", limit]), cli=True)
    if kind == 1:
        raw = draw.pick([b"\xff", b"\xc3\x28", b"caf\xe9", b"\xed\xa0\x80"])
        value = raw.decode("utf-8", "surrogateescape")
        name = draw.pick(["http_port", "docker_host", "app_host", "x\udcff"])
        return Case(f"--set {name} holding {raw!r}", lambda tmp: cli(["plan", "gogs-health", "--set", "docker_host=x", "--set", f"{name}={value}"]), cli=True)  # fmt: skip
    if kind == 2:
        count = draw.pick([100, 2_000, 20_000])
        sets = [f"--set=n{i}=v" for i in range(count)]
        return Case(f"{count} --set flags", lambda tmp: cli(["plan", "gogs-health", *sets]), cli=True)
    if kind == 3:
        command = draw.pick([["plan", "gogs-health"], ["run", "gogs-health"], ["plan", "gogs-health", "--record"]])
        argv = [*command, "--set", "docker_host=${{ secrets.nope }}"]
        return Case(f"a missing secret without a server: {command}", lambda tmp: cli(argv), cli=True)
    if kind == 4:
        url = draw.pick(["http://127.0.0.1:9/api", "http://127.0.0.1:1/api", "not a url", "http://[::1:9/api"])
        command = draw.pick([["run", "gogs-health", "--set", "docker_host=x"], ["plan", "gogs-health", "--record", "--set", "docker_host=x"],
                             ["run", "gogs-health", "--set", "docker_host=x", "--resume", "abc"], ["deploy"]])  # fmt: skip
        return Case(f"PREFECT_API_URL={url} {command[0]}", lambda tmp: cli(command, env={"PREFECT_API_URL": url}), cli=True)  # fmt: skip
    if kind == 5:
        names = draw.some(["1", "a", "2", "b", "true", "null", "1.5", "[x]"], 5) or ["1"]

        def run(tmp: Path) -> tuple[str, int | None]:
            inputs = "".join(f"  {n}: {{type: string, default: x}}\n" for n in names)
            (tmp / "b.yaml").write_text(f"name: b\ninputs:\n{inputs}steps:\n  - {{id: a, uses: http_request, with: {{url: 'http://${{{{ inputs.a }}}}'}}}}\n")  # fmt: skip
            (tmp / "in.yaml").write_text("".join(f"{n}: v\n" for n in names))
            return cli(["plan", str(tmp / "b.yaml"), "--inputs", str(tmp / "in.yaml")])

        return Case(f"input names {names}", run, cli=True)
    if kind == 6:
        argv = draw.pick([["run"], ["plan", "nope"], ["validate"], ["listen"], ["plugins", "--doc", "nope"], ["plan", "gogs-health", "--set", "noequals"], ["validate", "/dev/null"], ["plan", "gogs-health", "--inputs", "/dev/zero"]])  # fmt: skip
        return Case(" ".join(argv), lambda tmp: cli(argv), cli=True)
    hostile = hostile_text(draw)
    return Case(f"a file named {hostile[:30]!r}", lambda tmp: cli(["validate", hostile[:200]]), cli=True)


CLASSES: dict[str, Callable[[Draw], Case]] = {
    "secrets": secrets_case,
    "budget": budget_case,
    "output": output_case,
    "loader: listen config": lambda draw: loader_case(draw, "listen config"),
    "loader: inputs file": lambda draw: loader_case(draw, "inputs file"),
    "loader: child blueprint": lambda draw: loader_case(draw, "child blueprint"),
    "cli": cli_case,
}


def measure(cases: int, seed: int, only: list[str]) -> None:
    """Draw ``cases`` per class, run each isolated, print a table (the before/after of issue 27)."""
    rng = random.Random(seed)
    print(f"{'class':<26} {'cases':>6} {'unclean':>8} {'markers':>8} {'worst s':>8}")
    for name, generate in CLASSES.items():
        if only and name not in only:
            continue
        unclean = markers = 0
        worst = 0.0
        examples: dict[str, str] = {}
        for _ in range(cases):
            case = generate(random_draw(rng))
            outcome = isolated(case)
            unclean += not outcome.clean
            markers += outcome.markers > 0
            worst = max(worst, outcome.seconds)
            if not outcome.clean and len(examples) < 5:
                examples.setdefault(outcome.why[:60], f"{case.label[:80]}: {outcome.why[:200]}")
        print(f"{name:<26} {cases:>6} {unclean:>8} {markers:>8} {worst:>8.2f}", flush=True)
        for example in examples.values():
            print(f"    e.g. {example!r}", flush=True)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--class", dest="only", action="append", default=[])
    options = parser.parse_args()
    os.environ.setdefault("VICFLOW_DISABLE_PLUGIN_AUTOLOAD", "1")
    os.environ.pop("VICFLOW_PLUGINS", None)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["VICFLOW_STATE_DIR"] = tempfile.mkdtemp()
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp()
    os.chdir(Path(__file__).resolve().parents[2])
    from vicflow.flows.cli import main as _preload  # noqa: F401 - imported once, before the forks
    from vicflow.flows.language import expressions as _preload2  # noqa: F401

    measure(options.cases, options.seed, options.only)
