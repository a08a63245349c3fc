"""Bad invocations of the CLI end in one clear message and exit 2, never a traceback (no server needed); a
failed run is exit 1, with the failed step's error.  Every kind of vicflow's error tree has a case here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def vicflow(*args: str, tmp: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{REPO}", "VICFLOW_STATE_DIR": str(tmp / "state"), **env}
    environ.pop("VICFLOW_PLUGINS", None)
    if "PREFECT_API_URL" not in env:
        environ.pop("PREFECT_API_URL", None)
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "vicflow.flows.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
    )


def files(tmp: Path) -> dict[str, str]:
    (tmp / "exiting.py").write_text("import sys\nsys.exit(3)\n")
    (tmp / "raising.py").write_text(
        "from vicflow.plugins import hookimpl\n\n@hookimpl\ndef register_step_types(register):\n    raise RuntimeError('boom')\n"
    )
    (tmp / "intkey.yaml").write_text("1: x\n")
    (tmp / "latin1.yaml").write_bytes("docker_host: caf\xe9\n".encode("latin-1"))
    (tmp / "badtag.yaml").write_text("http_port: !!int 'abc'\n")
    (tmp / "wrongtype.yaml").write_text("http_port: abc\n")
    (tmp / "listen-list.yaml").write_text("- docker\n")
    (tmp / "listen-unknown.yaml").write_text("docker:\n  bogus: 1\n")
    (tmp / "listen-alias.yaml").write_text("a: &a [*a]\n")
    (tmp / "mixed-names.yaml").write_text(
        "name: mixed\ninputs:\n  1: {type: string, default: x}\n  a: {type: string, default: y}\nsteps:\n"
        "  - {id: s, uses: http_request, with: {url: 'http://${{ inputs.a }}/'}}\n"
    )
    (tmp / "loop-parent.yaml").write_text("name: p\nsteps:\n  - {id: a, uses: 'blueprint:loop1.yaml'}\n")
    for link, to in (("loop1.yaml", "loop2.yaml"), ("loop2.yaml", "loop1.yaml")):
        if not (tmp / link).is_symlink():
            (tmp / link).symlink_to(tmp / to)
    policy = tmp / "policy"
    policy.mkdir(exist_ok=True)
    (policy / "site.rego").write_text(
        "package vicflow.plan\n\nimport rego.v1\n\ndeny contains msg if {\n  msg := \n}\n"
    )
    (tmp / "other-package").mkdir(exist_ok=True)
    (tmp / "other-package" / "site.rego").write_text("package site\n\nimport rego.v1\n\ndeny contains 1 if { true }\n")
    fifo = tmp / "fifo.yaml"
    if not fifo.exists():
        os.mkfifo(fifo)
    names = ("intkey.yaml", "latin1.yaml", "badtag.yaml", "wrongtype.yaml", "fifo.yaml", "listen-list.yaml",
             "listen-unknown.yaml", "listen-alias.yaml", "mixed-names.yaml", "loop-parent.yaml", "policy",
             "other-package")  # fmt: skip
    return {f"@{name}": str(tmp / name) for name in names}


CASES = [
    (
        "plugin exits at import",
        ["validate", "blueprints/vch.yaml"],
        {"VICFLOW_PLUGINS": "exiting"},
        "called sys.exit(3)",
    ),
    (
        "plugin hook raises",
        ["validate", "blueprints/vch.yaml"],
        {"VICFLOW_PLUGINS": "raising"},
        "failed in register_step_types: RuntimeError: boom",
    ),
    (
        "inputs with an int key",
        ["plan", "gogs-health", "--inputs", "@intkey.yaml"],
        {},
        "intkey.yaml:1:1: input names are text",
    ),
    (
        "inputs not UTF-8",
        ["plan", "gogs-health", "--inputs", "@latin1.yaml"],
        {},
        "latin1.yaml:1:17: byte 0xe9 is not UTF-8",
    ),
    (
        "inputs with a bad tag",
        ["plan", "gogs-health", "--inputs", "@badtag.yaml"],
        {},
        "badtag.yaml:1:12: YAML syntax error: !!int cannot hold 'abc'",
    ),
    (
        "inputs of the wrong type",
        ["plan", "gogs-health", "--inputs", "@wrongtype.yaml", "--set", "docker_host=x"],
        {},
        "input 'http_port' must be an integer, got 'abc'",
    ),
    ("a FIFO as the blueprint", ["validate", "@fifo.yaml"], {}, "it is not a regular file"),
    ("a folder as the blueprint", ["validate", "blueprints"], {}, "it is a folder"),
    (
        "an unknown --resume id",
        ["run", "gogs-health", "--set", "docker_host=x", "--resume", "0000dead"],
        {},
        "--resume 0000dead: no run with that id",
    ),
    (
        "an expression with an unknown name",
        ["plan", "gogs-health", "--set", "docker_host=${{ nope.x }}"],
        {},
        "${{ nope.x }} cannot be used here",
    ),
    ("an unclosed expression", ["plan", "gogs-health", "--set", "docker_host=${{ secrets.x"], {}, "never closed"),
    (
        "a secret that is not set",
        ["plan", "gogs-health", "--set", "docker_host=${{ secrets.nope }}"],
        {},
        "--set:1:1: input 'docker_host': '${{ secrets.nope }}': secret 'nope' is not set: no VICFLOW_SECRET_NOPE "
        "variable, and no Prefect server to hold a Secret block (PREFECT_API_URL is not set)\n"
        "    hint: set VICFLOW_SECRET_NOPE, or set PREFECT_API_URL to the server that holds the Secret block 'nope'",
    ),
    (
        "a listen config with an unknown key",
        ["listen", "--config", "@listen-unknown.yaml"],
        {},
        "listen-unknown.yaml:2:3: unknown key 'bogus'",
    ),
    (
        "a device as the listen config",
        ["listen", "--config", "/dev/zero"],
        {},
        "/dev/zero:1:1: cannot read the listen config: it is not a regular file",
    ),
    (
        "a recursive alias in the listen config",
        ["listen", "--config", "@listen-alias.yaml"],
        {},
        "listen-alias.yaml:1:4: a recursive alias: this value contains itself",
    ),
    (
        "a child blueprint in a symlink loop",
        ["validate", "@loop-parent.yaml"],
        {},
        "no blueprint 'loop1.yaml' (cannot follow 'loop1.yaml': Symlink loop",
    ),
    ("worker --limit -1", ["worker", "--limit", "-1"], {}, "argument --limit: -1 is not a positive number"),
    (
        "a policy with a syntax error",
        ["plan", "gogs-health", "--set", "docker_host=x", "--policy", "@policy"],
        {},
        "policy/site.rego:6:",
    ),
    (
        "a policy of another package",
        ["run", "gogs-health", "--set", "docker_host=x", "--policy", "@other-package"],
        {},
        "no file declares package vicflow.plan",
    ),
    (
        "a policy that is no folder",
        ["plan", "gogs-health", "--set", "docker_host=x", "--policy", "/dev/null"],
        {},
        "policy /dev/null: not a directory",
    ),
    (
        "invalid UTF-8 in --set for a typed input",
        ["plan", "gogs-health", "--set", "docker_host=x", "--set", "http_port=\udcff"],
        {},
        "--set:1:11: --set 'http_port': the value is not UTF-8",
    ),
    (
        "input names mixing integers and text",
        ["plan", "@mixed-names.yaml"],
        {},
        "mixed-names.yaml:3:3: inputs.1.[key]: Input should be a valid string",
    ),
    (
        "a listen config that is not a mapping",
        ["listen", "--config", "@listen-list.yaml"],
        {},
        "listen-list.yaml:1:1: the listen config maps source names to their settings",
    ),
]


@pytest.mark.parametrize(("args", "env", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_invocation_is_one_clear_message(tmp_path, args, env, expected):
    paths = files(tmp_path)
    result = vicflow(*[paths.get(a, a) for a in args], tmp=tmp_path, **env)
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    assert result.returncode == 2, (result.returncode, output[-2000:])
    assert expected in output, output[-2000:]
    assert len(output) < 64 * 1024


def test_an_unreachable_prefect_api_is_one_line_naming_it(tmp_path):
    """run, plan --record, run --resume and deploy: one line with the URL and what to check, at once."""
    for args in (["run", "gogs-health", "--set", "docker_host=x"], ["plan", "gogs-health", "--record", "--set",
                 "docker_host=x"], ["run", "gogs-health", "--set", "docker_host=x", "--resume", "abc"], ["deploy"]):  # fmt: skip
        result = vicflow(*args, tmp=tmp_path, PREFECT_API_URL="http://127.0.0.1:9/api")
        assert result.returncode == 1, (args, result.stderr[-2000:])
        assert result.stderr.startswith("vicflow: error: cannot reach the Prefect API at http://127.0.0.1:9/api"), (
            result.stderr
        )
        assert "check PREFECT_API_URL" in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.splitlines()) == 2, result.stderr


def test_a_closed_pipe_and_a_full_disk(tmp_path):
    """vicflow schema | head: quiet; > /dev/full: one line saying the disk is full."""
    environ = {**os.environ, "PYTHONPATH": str(REPO)}
    piped = subprocess.run(
        f"{sys.executable} -m vicflow.flows.cli.main schema | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        env=environ,
    )
    assert piped.stdout == '{\n  "$defs', piped.stdout
    assert piped.stderr == "", piped.stderr
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "vicflow.flows.cli.main", "schema"], stdout=full, stderr=subprocess.PIPE, text=True, env=environ)  # fmt: skip
    assert result.returncode == 1
    assert (
        result.stderr
        == "vicflow: error: cannot write the output: No space left on device\n  hint: free some space, or write elsewhere\n"
    )


def test_terminal_control_characters_and_markup_are_shown_not_obeyed(tmp_path):
    (tmp_path / "t.yaml").write_text(
        'name: t\nsteps:\n  - id: a\n    uses: http_request\n    with: {url: "http://h/[/]\\e]0;pwned\\a\\e[2J\\u202e"}\n'
    )
    result = vicflow("plan", str(tmp_path / "t.yaml"), tmp=tmp_path, COLUMNS="300")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not {"\x1b", "\x07", "\u202e"} & set(result.stderr), result.stderr
    assert r"http://h/[/]\x1b]0;pwned\x07\x1b[2J\u202e" in result.stderr, result.stderr


def test_twenty_thousand_set_flags_and_a_missing_secret_are_quick_and_quiet(tmp_path):
    flags = [f"--set=n{i}=v" for i in range(20_000)]
    result = vicflow("plan", "gogs-health", *flags, tmp=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\nerror: ") + result.stderr.startswith("error: ") == 51  # 50 problems and a count
    assert "... and 19,951 more problems" in result.stderr
    result = vicflow("plan", "gogs-health", "--set", "docker_host=${{ secrets.nope }}", tmp=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 3 and "locked" not in result.stderr, result.stderr


def test_a_normal_run_leaves_no_traceback_on_stderr(tmp_path):
    """Prefect's ephemeral server used to print CancelledError tracebacks when it shut down after a run."""
    result = vicflow("run", "tests/data/engine-demo.yaml", tmp=tmp_path, VICFLOW_PLUGINS="tests.plugins.engine_steps")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "CancelledError" not in result.stderr, result.stderr[-3000:]


def test_a_failed_run_is_exit_1_with_the_steps_error_and_no_traceback(tmp_path):
    with __import__("socket").socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (tmp_path / "fails.yaml").write_text(
        "name: fails\nsteps:\n  - id: closed\n    uses: health_check\n"
        f"    with: {{kind: tcp, host: 127.0.0.1, port: {port}, deadline_seconds: 1}}\n"
    )
    result = vicflow("run", str(tmp_path / "fails.yaml"), tmp=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert f"127.0.0.1:{port}" in result.stderr and "closed" in result.stderr, result.stderr[-2000:]


def test_every_error_vicflow_defines_is_under_one_root():
    """The error tree (vicflow.plugins.errors): one root, so `except VicflowError` catches all of ours."""
    import importlib
    import inspect
    import pkgutil

    import vicflow.flows
    import vicflow.plugins
    from vicflow.plugins.errors import VicflowError

    outside = []
    for package in (vicflow.flows, vicflow.plugins):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            outside += [
                f"{info.name}.{name}"
                for name, value in vars(module).items()
                if inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == info.name
                and not issubclass(value, VicflowError)
            ]
    assert not outside, outside
