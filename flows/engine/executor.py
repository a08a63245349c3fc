"""What the engine asks of an executor: run attempts of steps (``attempt.apply_step``) and undos
(``attempt.undo_step``) with their retries (``retry.RetryPolicy``), and say how they ended. Two implement it:
``ThreadSteps`` (thread_executor.py: a thread pool, no Prefect) and ``PrefectSteps`` (on_prefect/adapter.py: each
step a Prefect task run). An executor never writes a step's state: the run's transitions do (run.py)."""

from __future__ import annotations

from typing import Any, Protocol


class Executor(Protocol):
    journal: Any  # where the run's resume journal is kept (FileJournal, PrefectJournal)
    children: Any  # how a fleet step's children run (a ChildRunner, fleet.py)

    def submit(self, step_id: str, index: int | None, label: str) -> Any:
        """Start the attempts of one step (or of one for_each item); a future with ``add_done_callback``."""

    def outcome(self, future: Any) -> tuple[bool, Any, str]:
        """How a finished future ended: (completed, outputs, message when it did not)."""

    def skip(self, step_id: str, reason: str) -> None:
        """Show a step that does not run (its ``if:`` is false, it was resumed, what it needs failed)."""

    def rollback(self, step_id: str) -> tuple[bool, str]:
        """Undo a completed step, with its retries: (undone, message when it was not)."""

    def approve(self, step_id: str, approval: Any, rows: list[dict[str, Any]], digest: str) -> tuple[str, str, str]:
        """Show the plan ``rows`` (hash ``digest``) and wait for a human: ("approved" | "rejected" |
        "timed out", the comment or why, who answered)."""

    def event(self, name: str, resource: dict[str, str], payload: dict[str, Any]) -> None:
        """Send one of the run's events (Prefect's events; nothing without Prefect)."""

    def publish(self, summary: dict[str, Any]) -> None:
        """The finished run's summary (Prefect: artifacts)."""

    def close(self) -> None: ...
