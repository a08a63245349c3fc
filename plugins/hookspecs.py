"""The hooks a vicflow plugin may implement."""

from collections.abc import Callable
from typing import Any

from vicflow.plugins import hookspec


@hookspec
def register_step_types(register: Callable[[str, type], None]) -> None:
    """Call ``register(name, StepTypeClass)`` for each step type this plugin provides."""


@hookspec
def register_event_sources(register: Callable[[str, type], None]) -> None:
    """Call ``register(name, EventSourceClass)`` for each event source this plugin provides."""


@hookspec
def on_run_event(event: dict[str, Any]) -> None:
    """Observe a run event (step started/succeeded/failed/skipped, run finished).

    ``event`` has ``event`` (the name), ``blueprint``, ``run_id``, ``step`` (or None) and
    ``payload``; secret values are already masked.  Exceptions raised here are logged, not fatal.
    """
