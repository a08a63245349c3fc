"""vicflow's plugin API: everything a plugin author needs, from one place.

A plugin is a module (or package) with ``@hookimpl`` functions; ``hookspecs`` documents the hooks. A step
type derives from ``StepType[MyParams]`` with ``MyParams(Params)``; an event source from ``EventSource``
with its settings in a ``SourceConfig``. Errors a plugin raises come from the tree in ``errors``.
"""

import pluggy

PROJECT_NAME = "vicflow"  # one name for markers, manager and entry-point group

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

# after the markers: the modules below may import them
from vicflow.plugins.errors import (  # noqa: E402
    ConfigError,
    PermanentError,
    PluginError,
    StepError,
    TransientError,
    VicflowError,
)
from vicflow.plugins.paths import BlueprintFile  # noqa: E402
from vicflow.plugins.source import EventSource, SourceConfig  # noqa: E402
from vicflow.plugins.step import Change, Kind, Params, StepContext, StepType  # noqa: E402

__all__ = [
    "PROJECT_NAME",
    "BlueprintFile",
    "Change",
    "ConfigError",
    "EventSource",
    "Kind",
    "Params",
    "PermanentError",
    "PluginError",
    "SourceConfig",
    "StepContext",
    "StepError",
    "StepType",
    "TransientError",
    "VicflowError",
    "hookimpl",
    "hookspec",
]
