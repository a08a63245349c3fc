"""The ``vicflow`` command line.  Prefect is imported only by the commands that run flows."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_CHANGES = 2  # plan --detailed-exitcode: the plan has changes


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
            "--set", action="append", default=[], metavar="NAME=VALUE", dest="sets", help="an input value (repeatable)"
        )
        p.add_argument("--inputs", metavar="FILE", help="a YAML file of input values")
        p.add_argument("--output", choices=("text", "json"), default="text")
        p.add_argument("-v", "--verbose", action="store_true", help="show Prefect's logs on the terminal")
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

    p = sub.add_parser(
        "worker", help="prefect worker start for a process pool, with runs forked from a preloaded process"
    )
    p.add_argument("--pool", default="vicflow", help="the process work pool (default: vicflow)")
    p.add_argument("--name", help="the worker's name in Prefect (default: Prefect's, ProcessWorker <uuid>)")
    p.add_argument("--limit", type=int, help="at most this many runs at once on this worker (default: no limit)")

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

    sub.add_parser("schema", help="print the JSON Schema of blueprints")
    p = sub.add_parser("plugins", help="list plugins, their step types and event sources")
    p.add_argument("--output", choices=("text", "json"), default="text")
    p.add_argument("--doc", metavar="STEP", help="a step type's parameters, outputs, rollback and an example")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # with plan --detailed-exitcode, 2 means "changes": every error is 1
    invalid = EXIT_FAILED if getattr(args, "detailed_exitcode", False) else EXIT_INVALID
    from vicflow.plugins import masking
    from vicflow.plugins.errors import ConfigError, PluginError, RunFailed, StepError, VicflowError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:  # a blueprint, inputs, the listen config, an expression, a secret
        if exc.problems:
            _report_problems(exc.problems, getattr(args, "output", "text"))
        else:
            _say("error", masking.mask(str(exc)), exc.hint)
        return invalid
    except PluginError as exc:
        _say("plugin error", str(exc), exc.hint)
        return invalid
    except StepError as exc:  # raised before any step ran (--resume, a secret): its text ends in its hint
        _say("error", masking.mask(str(exc)), None)
        return invalid
    except RunFailed as exc:
        _say("error", masking.mask(str(exc)), exc.hint)
        return EXIT_FAILED
    except VicflowError as exc:
        _say("error", masking.mask(str(exc)), exc.hint)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug of ours: one line, and the traceback only when asked for
        if os.environ.get("VICFLOW_DEBUG"):
            raise
        print(f"vicflow: internal error: {type(exc).__name__}: {masking.mask(str(exc))[:500]}", file=sys.stderr)
        print("  hint: this is a bug; run again with VICFLOW_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return EXIT_FAILED


def _say(kind: str, message: str, hint: str | None) -> None:
    print(f"vicflow: {kind}: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)


def _report_problems(problems, output: str) -> None:
    if output == "json":
        print(json.dumps({"valid": False, "problems": [p.as_dict() for p in problems]}, indent=2))
    else:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)


def cmd_validate(args) -> int:
    from vicflow.flows import blueprint as bp
    from vicflow.flows.blueprint import BlueprintError

    problems = []
    for file in args.files:
        try:
            document = bp.load(file)
            if args.output == "text":
                print(f"{file}: ok ({len(document.steps)} steps)")
        except BlueprintError as exc:
            problems.extend(exc.problems)
    if problems:
        _report_problems(problems, args.output)
        return EXIT_INVALID
    if args.output == "json":
        print(json.dumps({"valid": True, "files": args.files}))
    return EXIT_OK


def cmd_deploy(args) -> int:
    from vicflow.flows.deploy import UNRESPONSIVE, crash_unresponsive_runs, deploy

    for name, deployment_id in deploy(args.pool, args.blueprints).items():
        print(f"{name}: {deployment_id}")
    if args.unresponsive_after:
        print(f"automation {UNRESPONSIVE!r}: {crash_unresponsive_runs(args.unresponsive_after)}")
    return EXIT_OK


def cmd_schema(args) -> int:
    from vicflow.flows.blueprint import json_schema
    from vicflow.plugins.manager import default_registry

    print(json.dumps(json_schema(default_registry().step_types), indent=2))
    return EXIT_OK


def cmd_plugins(args) -> int:
    from vicflow.plugins.manager import default_registry

    registry = default_registry()
    if args.doc:
        from vicflow.flows import plugin_doc

        doc = plugin_doc.describe(args.doc, registry)
        print(json.dumps(doc, indent=2, default=str) if args.output == "json" else plugin_doc.as_text(doc))
        return EXIT_OK
    rows = [vars(info) for info in registry.plugins.values()]
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table("plugin", "version", "module", "step types", "event sources")
    for row in rows:
        table.add_row(
            row["name"],
            row["version"],
            row["module"],
            ", ".join(row["step_types"]) or "-",
            ", ".join(row["event_sources"]) or "-",
        )
    Console().print(table)
    return EXIT_OK


def _run_or_plan(args, dry_run: bool) -> int:
    from vicflow.flows import blueprint as bp
    from vicflow.flows import inputs, shipped

    document = bp.load(shipped.resolve(args.file))
    prepared = inputs.prepare(document, file=args.inputs, sets=args.sets)  # exit 2 before Prefect starts
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if not args.verbose:  # Prefect's console lines and tracebacks (still sent to the API) would bury the progress;
        # set before Prefect configures logging, since it may configure it again when its temporary server starts
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")

    from vicflow.flows import engine, prefect_journal

    if getattr(args, "resume", None):
        prefect_journal.load(args.resume)  # an unknown run is exit 2 before the run starts
    from vicflow.flows.progress import Progress
    from vicflow.plugins.manager import default_registry

    here = dry_run and not args.record  # a plan changes nothing: no Prefect server to start
    progress = Progress(document, quiet=args.output == "json", verbose=args.verbose)
    if not here:
        from vicflow.flows import cli_signals

        cli_signals.install(args.file, lambda: progress.run_id)
    default_registry().pm.register(progress, name="vicflow.cli.progress")
    try:
        with progress:
            if here:
                summary = _plan_here(document, prepared.values)
            else:
                inputs.hand_over(document, prepared)
                summary = _run_in_prefect(args, prepared.given, dry_run)
        code = EXIT_OK
    except engine.RunFailed as exc:
        summary, code = exc.summary, EXIT_FAILED
    finally:
        default_registry().pm.unregister(name="vicflow.cli.progress")
    progress.report(summary, args.output)
    if dry_run and code == EXIT_OK:
        return _plan_exit_code(summary["plan"], args.detailed_exitcode)
    return code


def _plan_exit_code(plan: list[dict[str, Any]], detailed: bool) -> int:
    """1 when a step could not be planned; with ``detailed``, 2 when something would change, else 0."""
    if any(change["action"] == "error" for change in plan):
        return EXIT_FAILED
    changes = any(change["action"] != "none" for change in plan)
    return EXIT_CHANGES if detailed and changes else EXIT_OK


def _plan_here(document, values: dict[str, Any]) -> dict[str, Any]:
    """The plan in this process, on the thread executor: every step's plan(), nothing recorded."""
    from vicflow.flows import engine
    from vicflow.flows.thread_executor import ThreadSteps
    from vicflow.plugins.manager import default_registry

    run_id = "local-plan-" + os.urandom(4).hex()
    return engine.execute(document, values, default_registry(), run_id, dry_run=True, executor=ThreadSteps)


def _run_in_prefect(args, values: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    from vicflow.flows import shipped
    from vicflow.flows.flow import run_blueprint
    from vicflow.plugins.errors import RunCancelled

    state: Any = run_blueprint(
        blueprint=str(shipped.resolve(args.file)),
        inputs=values,
        dry_run=dry_run,
        resume=getattr(args, "resume", None),
        approve=getattr(args, "approve", False),
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
    "listen": lambda args: __import__("vicflow.flows.listen", fromlist=["main"]).main(args),
    "deploy": cmd_deploy,
    "worker": lambda args: __import__("vicflow.flows.forkserver", fromlist=["run_worker"]).run_worker(
        args.pool, args.name, args.limit
    ),
}

if __name__ == "__main__":
    sys.exit(main())
