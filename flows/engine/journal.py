"""The resume journal: what each step of a run did (state, parameters' hash, masked outputs).

``vicflow run --resume RUN`` reads it to skip the steps that completed with the same parameters. Runs in
Prefect keep it in Prefect (flows/on_prefect/journal.py), so any worker can resume them; this file store is the
thread executor's (the engine without Prefect), one file a run under the state directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vicflow.plugins.errors import StepError


def state_dir() -> Path:
    return Path(os.environ.get("VICFLOW_STATE_DIR", Path.home() / ".local" / "state" / "vicflow"))


def load(run_ref: str) -> dict[str, Any]:
    """The journal of an earlier run, by flow-run id (a unique prefix is enough)."""
    runs = state_dir() / "runs"
    matches = sorted(runs.glob(f"{run_ref}*.json")) if runs.exists() else []
    if len(matches) != 1:
        found = "no run" if not matches else f"{len(matches)} runs"
        raise StepError(
            f"--resume {run_ref}: {found} with that id in {runs}", "pass the flow-run id that `vicflow run` printed"
        )
    return json.loads(matches[0].read_text())


def path_of(run_id: str) -> Path:
    return state_dir() / "runs" / f"{run_id}.json"


def save(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` (already masked) atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(json.dumps(data, default=str))  # the C encoder: json.dump streams in Python, 10x slower
    os.replace(tmp, path)


class FileJournal:
    """The journal store of runs without Prefect."""

    def save(self, run_id: str, data: dict[str, Any]) -> None:
        save(path_of(run_id), data)

    def flush(self) -> None:
        pass

    def load(self, ref: str) -> dict[str, Any]:
        return load(ref)
