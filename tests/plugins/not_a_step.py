"""Registers something that is not a StepType."""

from vicflow.plugins import hookimpl


@hookimpl
def register_step_types(register):
    register("plain", dict)
