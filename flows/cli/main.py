"""The ``vicflow`` command line.  Prefect is imported only by the commands that run flows."""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import json
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from vicflow.flows.cli import terminal
from vicflow.flows.governance import integrity
from vicflow.flows.governance.audit import AuditLog
from vicflow.flows.governance.policy import Policy, for_run
from vicflow.flows.language import shipped
from vicflow.flows.language.links import configured, configured_api_url
from vicflow.flows.on_prefect import journal as prefect_journal
from vicflow.plugins import masking
from vicflow.plugins.errors import ConfigError, PluginError, RunCancelled, RunFailed, StepError, VicflowError
from vicflow.plugins.manager import default_registry

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_CHANGES = 2  # plan --detailed-exitcode: the plan has changes
API_COMMANDS = ("deploy", "worker")  # commands that always talk to the Prefect API (run and plan --record too)


class _Append(argparse.Action):
    """``--set`` repeated: argparse's own "append" copies the list at every flag (20,000 flags: 13 s)."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest, None)
        if items is None:
            items = []
            setattr(namespace, self.dest, items)
        items.append(values)


def _take_sets(argv: list[str]) -> tuple[list[str], list[str]]:
    """``run``/``plan``'s ``--set`` values taken out before argparse sees them: argparse looks for the next option
    from the start of the list at every option, so 20,000 flags took 20 s."""
    if not argv or argv[0] not in ("run", "plan"):
        return argv, []
    rest, sets = [argv[0]], []
    index = 1
    while index < len(argv):
        token = argv[index]
        if token == "--":
            rest += argv[index:]
            break
        if token == "--set" and index + 1 < len(argv):
            sets.append(argv[index + 1])
            index += 2
            continue
        if token.startswith("--set="):
            sets.append(token[len("--set=") :])
        else:
            rest.append(token)
        index += 1
    return rest, sets


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1-65535)")
    return value


METRICS_HELP = (
    "serve Prometheus metrics on 127.0.0.1:PORT (default: VICFLOW_METRICS_ADDR, HOST:PORT; unset: no metrics; "
    "docs/metrics.md)"
)


OTLP_HELP = (
    "export OpenTelemetry traces over OTLP/HTTP to URL, e.g. http://127.0.0.1:4318 (sets OTEL_EXPORTER_OTLP_ENDPOINT "
    "for this process and its runs; default: the OTEL_ variables; unset: no traces; docs/tracing.md)"
)


def _url(text: str) -> str:
    if not text.startswith(("http://", "https://")) or len(text) > 2000:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not an http:// or https:// URL")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vicflow",
        description="Deploy container applications onto "
        "vSphere Integrated Containers from YAML blueprints, run as Prefect flows.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check blueprints without touching any server")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--output", choices=("text", "json"), default="text")

    for name, text in (("run", "run a blueprint"), ("plan", "show what a run would change (dry run)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("file", metavar="FILE", help="a blueprint file or the name of a shipped blueprint")
        p.add_argument(
            "--set", action=_Append, default=None, metavar="NAME=VALUE", dest="sets", help="an input value (repeatable)"
        )
        p.add_argument("--inputs", metavar="FILE", help="a YAML file of input values")
        p.add_argument("--output", choices=("text", "json"), default="text")
        p.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs on the terminal")
        p.add_argument(
            "--policy",
            metavar="DIR",
            help="a directory of Rego policy files that judges the plan and its blast radius before any step applies "
            "(allow, warn, require approval, deny; docs/policy.md)",
        )
        if name == "run":
            p.add_argument("--resume", metavar="RUN", help="skip steps that completed in RUN with the same inputs")
            p.add_argument("--approve", action="store_true", help="approve every approval gate in advance (scripts)")
        else:
            p.add_argument(
                "--record", action="store_true", help="plan as a Prefect flow run (recorded, with the plan artifact)"
            )
            p.add_argument(
                "--detailed-exitcode",
                action="store_true",
                help="exit 0 when nothing would change, 2 when something would, 1 on any error (as terraform plan)",
            )

    p = sub.add_parser("listen", help="run event sources and emit Prefect events (stop with Ctrl-C / SIGTERM)")
    p.add_argument("--config", required=True, metavar="FILE", help="YAML: one section per source (docs/events.md)")
    p.add_argument("sources", nargs="*", help="source names (default: every section of the config)")
    p.add_argument(
        "--redeliver-after",
        type=float,
        metavar="SECONDS",
        help="send an event again when no run came of it in this time (default 120; 0: never; docs/events.md)",
    )
    p.add_argument("--metrics-port", type=_port, metavar="PORT", help=METRICS_HELP)
    p.add_argument("--otlp-endpoint", type=_url, metavar="URL", help=OTLP_HELP)

    p = sub.add_parser(
        "worker", help="prefect worker start for a process pool, with runs forked from a preloaded process"
    )
    p.add_argument("--pool", default="vicflow", help="the process work pool (default: vicflow)")
    p.add_argument("--name", help="the worker's name in Prefect (default: Prefect's, ProcessWorker <uuid>)")
    p.add_argument("--limit", type=_positive, help="at most this many runs at once on this worker (default: no limit)")
    p.add_argument("--metrics-port", type=_port, metavar="PORT", help=METRICS_HELP)
    p.add_argument("--otlp-endpoint", type=_url, metavar="URL", help=OTLP_HELP)

    p = sub.add_parser("deploy", help="one deployment per shipped blueprint, its run form made of its inputs")
    p.add_argument("--pool", default="vicflow", help="the work pool (default: vicflow)")
    p.add_argument("blueprints", nargs="*", help="shipped blueprint names or blueprint files (default: all shipped)")
    p.add_argument(
        "--unresponsive-after",
        type=int,
        default=600,
        metavar="SECONDS",
        help="mark a run Crashed after this long without a heartbeat (an automation; 0: none; default: 600, "
        "more than 3 of Prefect's default 180 s heartbeats)",
    )

    p = sub.add_parser(
        "audit", help="the audit trail of approvals, rejections, policy outcomes, resumes, cancellations"
    )
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit.add_parser("verify", help="check the trail's hash chain: names an edited or removed record")
    verify.add_argument(
        "--log", metavar="FILE", help="the trail (default: VICFLOW_AUDIT_LOG, or the state directory's)"
    )

    sub.add_parser("schema", help="print the JSON Schema of blueprints")
    p = sub.add_parser("plugins", help="list plugins, their step types and event sources")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.add_argument("--doc", metavar="STEP", help="a step type's parameters, outputs, rollback and an example")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The error boundary: every failure ends in one located message and an exit code, never a traceback.
    Output goes through flows/cli/terminal.py (escaped, capped); a closed pipe ends the command quietly."""

    terminal.install()
    try:
        code = _main(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:  # vicflow schema | head: the reader has what it wanted
        _silence_stdout()
        return EXIT_FAILED
    except OSError as exc:
        if exc.errno not in OUTPUT_ERRNOS:
            raise
        _silence_stdout()
        terminal.say("error", f"cannot write the output: {exc.strerror}", "free some space, or write elsewhere")
        return EXIT_FAILED


def _silence_stdout() -> None:
    """What is still buffered for a closed pipe or a full disk is dropped (Python would complain at exit)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _main(argv: list[str] | None) -> int:
    argv, sets = _take_sets(list(sys.argv[1:] if argv is None else argv))
    args = _parser().parse_args(argv)
    if sets:
        args.sets = [*(args.sets or []), *sets]
    if getattr(args, "otlp_endpoint", None):  # the standard variable: the SDK's exporter and the runs read it
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = args.otlp_endpoint
    try:
        _mask_api_credential()
        if _needs_api(args):
            _check_api()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _failure(exc, args)


def _failure(exc: Exception, args) -> int:
    """The one message (and exit code) of each kind of failure."""

    # with plan --detailed-exitcode, 2 means "changes": every error is 1
    invalid = EXIT_FAILED if getattr(args, "detailed_exitcode", False) else EXIT_INVALID
    if isinstance(exc, ConfigError):  # a blueprint, inputs, the listen config, an expression, a secret
        if exc.problems:
            _report_problems(exc.problems, getattr(args, "output", "text"))
        else:
            terminal.say("error", masking.mask(str(exc)), exc.hint)
        return invalid
    if isinstance(exc, PluginError | StepError):  # a plugin; or before any step ran (--resume, a secret)
        kind = "plugin error" if isinstance(exc, PluginError) else "error"
        terminal.say(kind, masking.mask(str(exc)), exc.hint if isinstance(exc, PluginError) else None)
        return invalid
    if isinstance(exc, VicflowError):  # RunFailed and the rest of ours
        terminal.say("error", masking.mask(str(exc)), exc.hint)
        return EXIT_FAILED
    if isinstance(exc, OSError):
        if exc.errno in OUTPUT_ERRNOS and exc.filename is None:
            raise exc  # the output itself: main() says it
        where = f": {exc.filename}" if exc.filename else ""
        terminal.say("error", masking.mask(f"{exc.strerror or type(exc).__name__}{where}"), None)
        return EXIT_FAILED
    api = _api_failure(exc)
    if api:
        terminal.say("error", masking.mask(api), API_HINT)
        return EXIT_FAILED
    if os.environ.get("VICFLOW_DEBUG"):
        raise exc
    # a bug of ours: one line, and the traceback only when asked for
    terminal.say("internal error", f"{type(exc).__name__}: {masking.mask(str(exc))[:500]}")
    print("  hint: this is a bug; run again with VICFLOW_DEBUG=1 for the traceback and report it", file=sys.stderr)
    return EXIT_FAILED


OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)
API_HINT = (
    "check PREFECT_API_URL (it ends in /api), that the server runs there (prefect server start) and that this "
    "machine reaches it (over https: PREFECT_API_SSL_CERT_FILE names the CA that signed its certificate); unset it "
    "to run on a temporary local server"
)
AUTH_HINT = (
    "set PREFECT_API_AUTH_STRING (environment or `prefect config set`) to the server's PREFECT_SERVER_API_AUTH_STRING"
)


def _needs_api(args) -> bool:
    """Whether the command talks to a Prefect server that PREFECT_API_URL names (else it starts its own)."""
    if args.command in API_COMMANDS:
        return True
    return args.command == "run" or (args.command == "plan" and args.record)


def _api_url() -> str | None:

    return configured_api_url()


def _mask_api_credential() -> None:
    """Prefect's auth string is a secret of this process (and of the runs a worker forks): masked wherever it
    would be logged or shown, as typed and in the base64 of its Authorization header."""

    auth = configured("PREFECT_API_AUTH_STRING")
    if auth:
        masking.add_secret(auth)


def _check_api() -> None:
    """The server's health check and one closed read, before anything starts: an unreachable PREFECT_API_URL, a
    certificate this machine does not trust or a refused auth string is one line naming it (Prefect's client would
    retry for a while, then fail deep inside the run)."""
    url = _api_url()
    if not url:
        return
    import httpx  # start-up: +170 ms (only the commands that talk to the API)

    # what Prefect's client sends and trusts (prefect/client/orchestration/__init__.py, PrefectClient.__init__):
    # Authorization: Basic base64(PREFECT_API_AUTH_STRING); PREFECT_API_SSL_CERT_FILE (default SSL_CERT_FILE)
    headers = {}
    auth = configured("PREFECT_API_AUTH_STRING")
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    try:
        with httpx.Client(verify=_api_trust(), headers=headers, timeout=10) as client:
            response = client.get(url.rstrip("/") + "/health")  # open to anyone, as a load balancer's probe
            if response.status_code == 200:
                response = client.get(url.rstrip("/") + "/admin/version")  # closed when the server has an auth string
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        raise VicflowError(f"cannot reach the Prefect API at {url}: {type(exc).__name__}: {exc}", API_HINT) from None
    if response.status_code == 401:
        given = "a wrong PREFECT_API_AUTH_STRING" if auth else "no PREFECT_API_AUTH_STRING"
        raise VicflowError(
            f"the Prefect API at {url} refused this client (401 Unauthorized): it sent {given}", AUTH_HINT
        )
    if response.status_code != 200:
        path = response.request.url.path.removeprefix(httpx.URL(url).path)
        raise VicflowError(f"the Prefect API at {url} answered {response.status_code} to {path}", API_HINT)


def _api_trust() -> ssl.SSLContext | bool:
    """The TLS verification of Prefect's client: none with PREFECT_API_TLS_INSECURE_SKIP_VERIFY, else the CAs of
    PREFECT_API_SSL_CERT_FILE (or SSL_CERT_FILE), else certifi's (httpx's default)."""

    if (configured("PREFECT_API_TLS_INSECURE_SKIP_VERIFY") or "").lower() in ("1", "true", "yes", "on"):
        return False
    cafile = configured("PREFECT_API_SSL_CERT_FILE") or os.environ.get("SSL_CERT_FILE")
    if not cafile:
        return True
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise VicflowError(
            f"cannot read the CA file {cafile} (PREFECT_API_SSL_CERT_FILE): {reason}",
            "name a PEM file of the CA that signed the Prefect API's certificate",
        ) from None


def _api_failure(exc: BaseException) -> str | None:
    """The one-line message of a failure to talk to the Prefect API (httpx's, or Prefect's own wrapping)."""
    names = {kind.__name__ for kind in type(exc).__mro__}
    text = str(exc)
    prefect_said = isinstance(exc, RuntimeError) and ("Failed to reach API" in text or "Prefect API server" in text)
    if names & {"HTTPError", "TransportError", "PrefectHTTPStatusError"} or prefect_said:
        url = _api_url() or "the temporary server of this command"
        return f"the Prefect API at {url} failed: {type(exc).__name__}: {text[:300]}"
    return None


def _report_problems(problems, output: str) -> None:
    from vicflow.flows.language.problems import capped  # start-up: +89 ms (jinja2, via expressions)

    problems = capped(list(problems))
    if output == "json":
        rows = [masking.mask(p.as_dict()) for p in problems]
        print(json.dumps(terminal.for_json({"valid": False, "problems": rows}), indent=2))
    else:
        for problem in problems:
            print(f"error: {terminal.clean(masking.mask(str(problem)))}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)


def cmd_validate(args) -> int:
    from vicflow.flows.language import blueprint as bp  # start-up: +94 ms (pydantic models, jinja2)
    from vicflow.flows.language.blueprint import BlueprintError

    problems = []
    for file in dict.fromkeys(args.files):  # the same file given 400 times is read once
        try:
            document = bp.load(file)
            if args.output == "text":
                print(f"{terminal.clean(file)}: ok ({len(document.steps)} steps)")
        except BlueprintError as exc:
            problems.extend(exc.problems)
    if problems:
        _report_problems(problems, args.output)
        return EXIT_INVALID
    if args.output == "json":
        print(json.dumps(terminal.for_json({"valid": True, "files": list(dict.fromkeys(args.files))})))
    return EXIT_OK


def cmd_deploy(args) -> int:
    from vicflow.flows.on_prefect.deploy import (  # start-up: +5.0 s (Prefect, the flow)
        UNRESPONSIVE,
        crash_unresponsive_runs,
        deploy,
    )

    for name, deployment_id in deploy(args.pool, args.blueprints).items():
        print(f"{name}: {deployment_id}")
    if args.unresponsive_after:
        print(f"automation {UNRESPONSIVE!r}: {crash_unresponsive_runs(args.unresponsive_after)}")
    return EXIT_OK


def cmd_audit(args) -> int:
    """``vicflow audit verify``: 0 when every record chains to the one before it, 1 naming what does not."""

    log = AuditLog(args.log)
    result = log.verify()
    if result.ok:
        print(f"{terminal.clean(str(result.path))}: {result.records} records, chain intact (head {result.head[:16]})")
        return EXIT_OK
    for problem in result.problems:
        terminal.say("error", problem)
    print(f"{terminal.clean(str(result.path))}: {len(result.problems)} problem(s) in {result.records} records",
          file=sys.stderr)  # fmt: skip
    return EXIT_FAILED


def cmd_schema(args) -> int:
    from vicflow.flows.language.blueprint import json_schema  # start-up: +94 ms (pydantic models, jinja2)

    print(json.dumps(json_schema(default_registry().step_types), indent=2))
    return EXIT_OK


def cmd_plugins(args) -> int:

    registry = default_registry()
    if args.doc:
        from vicflow.flows.cli import plugin_doc  # start-up: +22 ms

        doc = plugin_doc.describe(args.doc, registry)
        print(
            json.dumps(doc, indent=2, default=str)
            if args.output == "json"
            else terminal.clean(plugin_doc.as_text(doc), None)
        )
        return EXIT_OK
    rows = [vars(info) for info in registry.plugins.values()]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.console import Console  # start-up: +72 ms (rich; the table only)
    from rich.table import Table

    table = Table("plugin", "version", "module", "step types", "event sources")
    for row in rows:
        table.add_row(
            terminal.text(row["name"]),
            terminal.text(row["version"]),
            terminal.text(row["module"]),
            terminal.text(", ".join(row["step_types"]) or "-"),
            terminal.text(", ".join(row["event_sources"]) or "-"),
        )
    Console().print(table)
    return EXIT_OK


def _run_or_plan(args, dry_run: bool) -> int:
    """``vicflow run`` and ``vicflow plan``: the blueprint loaded once and its inputs prepared once, here (a
    mistake is exit 2 before Prefect starts); the flow run is handed both."""
    from vicflow.flows.language import blueprint as bp  # start-up: +94 ms (pydantic models, jinja2)
    from vicflow.flows.language import inputs

    registry = default_registry()
    path = shipped.resolve(args.file)
    document = bp.load(path, registry)
    prepared = inputs.prepare(document, file=args.inputs, sets=args.sets or [])
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect gives its temporary server 20 s to answer; on a busy 2-core host its start (database migration
    # included) takes longer, and the run would fail before its first step. A user's own setting wins.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    if not args.verbose:  # Prefect's console lines and tracebacks (still sent to the API) would bury the progress;
        # set before Prefect configures logging, since it may configure it again when its temporary server starts
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

    args.policy, note = for_run(args.policy)
    if note:
        terminal.say("warning", note)
    if args.policy:
        args.policy = str(Path(args.policy).resolve())
        Policy(args.policy)  # a policy that does not load is exit 2, located, before anything starts
    if getattr(args, "resume", None):
        # an unknown run is exit 2, a journal that was edited exit 1, before the run starts
        integrity.check_journal(prefect_journal.load(args.resume), args.resume)
    from vicflow.flows.cli.progress import Progress  # start-up: +55 ms (rich's live display)

    here = dry_run and not args.record  # a plan changes nothing: no Prefect server to start
    progress = Progress(document, quiet=args.output == "json", verbose=args.verbose)
    if not here:
        from vicflow.flows.cli import signals  # start-up: +2.2 s (Prefect; the flow next needs it too)

        signals.install(args.file, lambda: progress.run_id)
    registry.pm.register(progress, name="vicflow.cli.progress")
    try:
        with progress:
            if here:
                summary = _plan_here(document, prepared.values, registry, args.policy)
            else:
                summary = _run_in_prefect(args, str(path), document, prepared, registry, dry_run)
        code = EXIT_OK
    except RunFailed as exc:  # RunCancelled too
        summary, code = exc.summary, EXIT_FAILED
    finally:
        registry.pm.unregister(name="vicflow.cli.progress")
    progress.report(summary, args.output)
    if dry_run and code == EXIT_OK:
        if (summary.get("policy") or {}).get("decision") == "deny":
            return EXIT_FAILED  # the plan is shown, with why the policy would stop the run
        return _plan_exit_code(summary["plan"], args.detailed_exitcode)
    return code


def _plan_exit_code(plan: list[dict[str, Any]], detailed: bool) -> int:
    """1 when a step could not be planned; with ``detailed``, 2 when something would change, else 0."""
    if any(change["action"] == "error" for change in plan):
        return EXIT_FAILED
    changes = any(change["action"] != "none" for change in plan)
    return EXIT_CHANGES if detailed and changes else EXIT_OK


def _plan_here(document, values: dict[str, Any], registry, policy: str | None) -> dict[str, Any]:
    """The plan in this process, on the thread executor: every step's plan(), nothing recorded."""
    from vicflow.flows.engine import execution  # start-up: +258 ms (the engine, metrics, tracing)
    from vicflow.flows.engine.thread_executor import ThreadSteps

    run_id = "local-plan-" + os.urandom(4).hex()
    return execution.execute(document, values, registry, run_id, dry_run=True, policy=policy, executor=ThreadSteps)


def _run_in_prefect(args, path: str, document, prepared, registry, dry_run: bool) -> dict[str, Any]:
    """The run as a flow run of run-blueprint, for the document and values prepared here."""
    from vicflow.flows.cli import signals  # start-up: +2.2 s (Prefect)
    from vicflow.flows.on_prefect.flow import for_prepared  # start-up: +3.9 s (Prefect)

    # the flow run takes back SIGTERM from Prefect's handler (signals.py)
    run_blueprint = for_prepared(document, prepared.values, registry, before=signals.reclaim_sigterm)
    state: Any = run_blueprint(
        blueprint=path,
        inputs=prepared.given,  # its parameters in Prefect, secret values hidden
        dry_run=dry_run,
        resume=getattr(args, "resume", None),
        approve=getattr(args, "approve", False),
        policy=args.policy,
        return_state=True,
    )
    if state.is_cancelled():  # an approval gate said no (the flow's Cancelled state holds the summary)
        summary = state.result(raise_on_failure=False)
        if not isinstance(summary, dict):
            summary = {"blueprint": args.file, "state": "cancelled", "error": state.message, "steps": []}
        raise RunCancelled(summary)
    return state.result()  # a failed run raises its RunFailed here


COMMANDS = {
    "validate": cmd_validate,
    "schema": cmd_schema,
    "plugins": cmd_plugins,
    "run": lambda args: _run_or_plan(args, dry_run=False),
    "plan": lambda args: _run_or_plan(args, dry_run=True),
    "listen": lambda args: __import__("vicflow.flows.events.listen", fromlist=["main"]).main(args),
    "deploy": cmd_deploy,
    "audit": cmd_audit,
    "worker": lambda args: __import__("vicflow.flows.on_prefect.forkserver", fromlist=["run_worker"]).run_worker(
        args.pool, args.name, args.limit, args.metrics_port
    ),
}

if __name__ == "__main__":
    sys.exit(main())
