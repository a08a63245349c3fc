"""Live progress of a run on the terminal (rich), fed by the ``on_run_event`` hook."""

from __future__ import annotations

import json
import logging
from typing import Any

from rich.console import Console
from rich.progress import Progress as RichProgress
from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from vicflow.flows.cli.terminal import CleanFilter, for_json, markup, text
from vicflow.flows.governance.blast_radius import BlastRadius
from vicflow.flows.language.links import run_url
from vicflow.plugins import hookimpl, masking

ICONS = {
    "succeeded": "[green]✓[/]",
    "failed": "[red]✗[/]",
    "skipped": "[yellow]–[/]",
    "rolled-back": "[magenta]↺[/]",
    "rollback-failed": "[red]↺✗[/]",
}


class Progress:
    """A plugin object the CLI registers for the duration of one run."""

    def __init__(self, blueprint, quiet: bool = False, verbose: bool = False):
        self.console = Console(stderr=True)
        self.quiet, self.verbose = quiet, verbose
        self.blueprint = blueprint
        self.bar = RichProgress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.console, disable=quiet
        )
        self.tasks: dict[str, Any] = {}
        self.run_id: str | None = None

    def __enter__(self):
        if not self.verbose:  # Prefect's console lines (and its tracebacks) would bury the progress display;
            for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # they still reach the API
                for handler in logging.getLogger(name).handlers:
                    if type(handler).__name__ == "PrefectConsoleHandler":
                        handler.setLevel(logging.CRITICAL)
        for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):  # -v: log lines shown, not obeyed
            for handler in logging.getLogger(name).handlers:
                if isinstance(handler, logging.StreamHandler) and not any(
                    isinstance(f, CleanFilter) for f in handler.filters
                ):
                    handler.addFilter(CleanFilter())
        self.bar.start()
        return self

    def __exit__(self, *exc):
        self.bar.stop()

    @hookimpl
    def on_run_event(self, event: dict[str, Any]) -> None:
        name, step = event["event"], event.get("step")
        if self.run_id is not None and event.get("run_id") != self.run_id:
            return  # a child run of a fleet step (flows/language/fleet.py) in this process: the summary shows it
        if name == "vicflow.run.started":
            self.run_id = event["run_id"]
            if self.run_id.startswith("local-plan-"):
                self.console.print(f"[bold]{markup(event['blueprint'])}[/]: plan (not recorded; --record records it)")
            else:
                self.console.print(f"[bold]{markup(event['blueprint'])}[/]: flow run {self.run_id}", highlight=False)
        if not step:
            return
        kind = name.rsplit(".", 1)[1]
        if kind == "started":
            self.tasks[step] = self.bar.add_task(markup(f"{step} ({self.blueprint.step(step).uses})", 200), total=1)
        elif kind in ICONS:
            task = self.tasks.get(step)
            line = f"{ICONS[kind]} {markup(step, 200)}"
            error = masking.mask(event["payload"].get("error"))
            if kind == "failed" and error:
                line += f": [red]{markup(str(error).splitlines()[0] if str(error) else '', 150)}[/]"
            if task is None:
                self.tasks[step] = self.bar.add_task(line, total=1, completed=1)
            else:
                self.bar.update(task, description=line, completed=1)

    def _governance(self, summary: dict[str, Any]) -> None:
        """A plan's blast radius, what its policy said, and the hash an approval of it is bound to."""
        radius = summary.get("blast_radius")
        if radius is not None:
            table = Table("what", "how many", title="blast radius")
            for what, count in BlastRadius.from_dict(radius).lines():
                table.add_row(text(what), text(count, 1000))
            self.console.print(table)
        outcome = summary.get("policy")
        if outcome:
            self.console.print(text(f"policy {outcome['policy']}: {outcome['decision']}", 500), highlight=False)
            for rule, found in outcome["messages"].items():
                for message in found:
                    self.console.print(text(f"  {rule}: {message}", 1000), highlight=False, soft_wrap=True)
        if summary.get("plan_hash"):
            self.console.print(text(f"plan hash {summary['plan_hash']}"), highlight=False)

    def report(self, summary: dict[str, Any], output: str) -> None:
        summary = masking.mask(summary)
        if output == "json":
            print(json.dumps(for_json(summary), indent=2, default=str))
            return
        table = Table("step", "state", "attempts", "seconds", "changed", "note / error")
        for row in summary["steps"]:
            table.add_row(
                text(row["id"], 200),
                text(row["state"]),
                str(row["attempts"]),
                f"{row['duration_s']:.1f}",
                {True: "yes", False: "no", None: "-"}[row["changed"]],
                text(row["error"] or row["note"] or "", 200),
            )
        self.console.print(table)
        if summary.get("outputs"):
            outputs = Table("output", "value", title="outputs")
            for name, value in summary["outputs"].items():
                outputs.add_row(text(name, 200), text(json.dumps(value, default=str), 500))
            self.console.print(outputs)
        if "plan" in summary:
            plan = Table("step", "action", "target", "detail", title="plan (nothing was changed)")
            for change in summary["plan"]:
                plan.add_row(text(change["step"], 200), text(change["action"]), text(change["target"], 500),
                             text(change["detail"], 500))  # fmt: skip
            self.console.print(plan)
            self._governance(summary)
        left = [f"{row['id']}: {line}" for row in summary["steps"] for line in row.get("left_behind", [])]
        left += summary.get("left_behind", [])
        if left:
            self.console.print("[red]left behind[/] (nothing else was leaked):", highlight=False)
            for line in left:
                self.console.print(text(f"  - {line}", 1000), highlight=False, soft_wrap=True)

        self.console.print(text(f"{summary['blueprint']}: {summary['state']} in {summary['duration_s']:.1f}s"))
        if summary["state"] in ("cancelled", "denied") and summary.get("error"):  # why: a gate or the policy
            self.console.print(text(f"  {summary['error']}", 2000), highlight=False, soft_wrap=True)
        if not summary["run_id"].startswith("local-plan-"):
            self.console.print(f"see the run: {run_url(summary['run_id'])}", highlight=False, soft_wrap=True)
