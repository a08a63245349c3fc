"""Finds plugins and collects the step types and event sources they register.

Built-in plugins are registered exactly like third-party ones: from ``DEFAULT_PLUGINS``, then
modules named in ``VICFLOW_PLUGINS`` (comma-separated, as pytest's ``PYTEST_PLUGINS``), then the
``vicflow`` entry-point group.  ``VICFLOW_PLUGINS_ALLOW`` / ``VICFLOW_PLUGINS_DENY`` take
comma-separated plugin names or globs (``vicflow.plugins.builtin.*``).
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.metadata
import logging
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Any

import pluggy
from pydantic import BaseModel
from vicflow.plugins import PROJECT_NAME, hookspecs
from vicflow.plugins.errors import PluginError
from vicflow.plugins.step import StepType

log = logging.getLogger("vicflow.plugins")

DEFAULT_PLUGINS: tuple[str, ...] = (
    "vicflow.plugins.builtin.firewall",
    "vicflow.plugins.builtin.vch",
    "vicflow.plugins.builtin.compose",
    "vicflow.plugins.builtin.health",
    "vicflow.plugins.builtin.http_request",
    "vicflow.plugins.builtin.registry_swap",
    "vicflow.plugins.builtin.sources",
)

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class PluginInfo:
    name: str
    module: str
    version: str
    step_types: list[str] = field(default_factory=list)
    event_sources: list[str] = field(default_factory=list)


@dataclass
class Registry:
    """Everything the installed plugins provide, by name."""

    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    step_types: dict[str, type[StepType]] = field(default_factory=dict)
    event_sources: dict[str, type] = field(default_factory=dict)

    def emit(self, event: dict[str, Any]) -> None:
        """Call every ``on_run_event`` observer; one that raises is logged and skipped."""
        for impl in self.pm.hook.on_run_event.get_hookimpls():
            try:
                impl.function(event=event)
            except Exception as exc:  # an observer must never break a run
                log.warning("plugin %s failed in on_run_event: %s", impl.plugin_name, exc)


def _names(var: str) -> list[str]:
    return [n.strip() for n in os.environ.get(var, "").split(",") if n.strip()]


def _permitted(name: str) -> bool:
    allow, deny = _names("VICFLOW_PLUGINS_ALLOW"), _names("VICFLOW_PLUGINS_DENY")
    if any(fnmatch.fnmatchcase(name, pat) for pat in deny):
        return False
    return not allow or any(fnmatch.fnmatchcase(name, pat) for pat in allow)


def _import(module_name: str, origin: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except SystemExit as exc:  # a plugin must not end the process while it is imported
        raise PluginError(
            f"plugin module {module_name!r} ({origin}) called sys.exit({exc.code}) while imported"
        ) from None
    except Exception as exc:
        raise PluginError(
            f"cannot import plugin module {module_name!r} ({origin}): {type(exc).__name__}: {exc}"
        ) from None


def load_registry(extra_plugins: tuple[str | ModuleType, ...] = (), entry_points: bool = True) -> Registry:
    """Build a plugin manager and collect what its plugins register; errors raise PluginError.

    ``extra_plugins``: modules to load besides ``VICFLOW_PLUGINS``, by name, or a module object that is
    registered as it is (vicflow.flows.testing registers a test's step type so)."""
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    plugins: dict[str, PluginInfo] = {}
    own_version = _version("vicflow")

    def add(name: str, obj: Any, version: str) -> None:
        if not _permitted(name):
            log.info("plugin %s is not permitted by VICFLOW_PLUGINS_ALLOW/DENY", name)
            return
        if name in plugins:
            raise PluginError(f"plugin name {name!r} is registered twice")
        pm.register(obj, name=name)
        plugins[name] = PluginInfo(name, getattr(obj, "__name__", type(obj).__name__), version)

    for module_name in DEFAULT_PLUGINS:
        add(module_name, _import(module_name, "built-in"), own_version)
    for plugin in (*_names("VICFLOW_PLUGINS"), *extra_plugins):
        if isinstance(plugin, ModuleType):
            add(plugin.__name__, plugin, "-")
        elif plugin not in plugins:
            add(plugin, _import(plugin, "VICFLOW_PLUGINS"), "-")
    if entry_points:
        for ep in importlib.metadata.entry_points(group=PROJECT_NAME):
            if _permitted(ep.name):
                add(ep.name, _load_entry_point(ep), ep.dist.version if ep.dist else "?")

    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{exc} (a misspelt hook name? see vicflow.plugins.hookspecs)") from exc

    registry = Registry(pm, plugins)
    _collect(registry, "register_step_types", registry.step_types, _check_step_type, "step_types")
    _collect(registry, "register_event_sources", registry.event_sources, _check_source, "event_sources")
    return registry


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> Any:
    """The entry point's object; a failure (even sys.exit) is a PluginError naming it."""
    try:
        return ep.load()
    except SystemExit as exc:
        raise PluginError(f"entry point {ep.name!r} ({ep.value}) called sys.exit({exc.code}) while loaded") from None
    except Exception as exc:
        raise PluginError(f"cannot load entry point {ep.name!r} ({ep.value}): {type(exc).__name__}: {exc}") from None


def _collect(registry: Registry, hook: str, into: dict, check, listing: str) -> None:
    owner: dict[str, str] = {}
    for impl in getattr(registry.pm.hook, hook).get_hookimpls():

        def register(name: str, cls: type, _plugin: str = impl.plugin_name) -> None:
            if not isinstance(name, str) or not NAME_RE.match(name):
                raise PluginError(
                    f"plugin {_plugin} registered {name!r}: names are lower_snake_case ({NAME_RE.pattern})"
                )
            if name in into:
                raise PluginError(
                    f"{listing[:-1].replace('_', ' ')} {name!r} is registered by both "
                    f"{owner[name]} and {_plugin}; deny one with VICFLOW_PLUGINS_DENY"
                )
            check(name, cls, _plugin)
            into[name], owner[name] = cls, _plugin
            getattr(registry.plugins[_plugin], listing).append(name)

        try:
            impl.function(register=register)
        except PluginError:
            raise
        except (Exception, SystemExit) as exc:  # a plugin's bug is reported as the plugin's, not as a traceback
            raise PluginError(f"plugin {impl.plugin_name} failed in {hook}: {type(exc).__name__}: {exc}") from None


def _check_step_type(name: str, cls: type, plugin: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, StepType)):
        raise PluginError(f"plugin {plugin}: step type {name!r} must subclass vicflow.plugins.StepType")
    if not (isinstance(cls.Params, type) and issubclass(cls.Params, BaseModel)):
        raise PluginError(f"plugin {plugin}: step type {name!r} needs a pydantic Params model")


def _check_source(name: str, cls: type, plugin: str) -> None:
    if not (isinstance(cls, type) and callable(getattr(cls, "run", None))):
        raise PluginError(f"plugin {plugin}: event source {name!r} must be a class with run()")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@lru_cache(maxsize=1)
def default_registry() -> Registry:
    """The registry of this process (built-ins, VICFLOW_PLUGINS, entry points), built once.

    ``VICFLOW_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points (as pytest's variable of that name).
    """
    return load_registry(entry_points=os.environ.get("VICFLOW_DISABLE_PLUGIN_AUTOLOAD") != "1")
