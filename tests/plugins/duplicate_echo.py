"""Registers a step type named like one of engine_steps' (for the duplicate test)."""

from vicflow.plugins import hookimpl

from tests.plugins.engine_steps import Echo


@hookimpl
def register_step_types(register):
    register("echo", Echo)
