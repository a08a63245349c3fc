"""vicflow's plugin API: the hook markers and the base class every step type derives from.

A plugin is a module (or package) with ``@hookimpl`` functions; see ``hookspecs`` for the hooks.
"""

import pluggy

PROJECT_NAME = "vicflow"  # one name for markers, manager and entry-point group

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

from vicflow.plugins.errors import (  # noqa: E402
    PermanentError,
    StepError,
    TransientError,
    VicflowError,
)
from vicflow.plugins.step import Change, StepContext, StepType  # noqa: E402  (after the markers)

__all__ = [
    "PROJECT_NAME",
    "Change",
    "PermanentError",
    "StepContext",
    "StepError",
    "StepType",
    "TransientError",
    "VicflowError",
    "hookimpl",
    "hookspec",
]
