"""Implements a hook that does not exist (a typo of register_step_types)."""

from vicflow.plugins import hookimpl


@hookimpl
def register_step_type(register):
    pass
