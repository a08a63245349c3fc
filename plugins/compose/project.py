"""Compose files: interpolation, merge of several -f files, and a normalised project model.

Pure logic (no Docker). A key we do not support is an error naming it and its file:line:column; nothing is
silently ignored. ``load_project`` is the entry point; the model, the key lists, the interpolation, the
shape checks and the reading of one service live in their own modules beside this one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from vicflow.plugins import dag, yamlpos
from vicflow.plugins.compose import deploy_spec, file_objects
from vicflow.plugins.compose.checks import check_file
from vicflow.plugins.compose.errors import ComposeError, Source, shape_errors
from vicflow.plugins.compose.interpolation import interpolate, read_dotenv
from vicflow.plugins.compose.keys import LIST_KEYS
from vicflow.plugins.compose.model import Mount, Port, Project, Resource, Service
from vicflow.plugins.compose.services import build_service, dictify, listify, mapping, resource
from vicflow.plugins.hints import did_you_mean

__all__ = ["Mount", "Port", "Project", "Resource", "Service", "load_project"]


def load_project(
    files: list[str],
    project_name: str | None = None,
    environment: dict[str, str] | None = None,
    use_os_environ: bool = True,
    vch: bool = False,
) -> Project:
    """Read, interpolate, check and merge compose files in order (as ``docker compose -f a -f b``).

    ``vch``: the engine is a VCH, so keys VIC 1.1 does not support are errors too.
    """
    if not files:
        raise ComposeError("no compose files given", "set files: [docker-compose.yml]")
    paths = [Path(f).resolve() for f in files]
    workdir = paths[0].parent
    env = {**(os.environ if use_os_environ else {}), **read_dotenv(workdir / ".env"), **(environment or {})}
    warnings: list[str] = []
    merged, sources = _read_and_merge(paths, env, warnings, vch)
    name = project_name or merged.get("name") or workdir.name
    name = re.sub(r"[^a-z0-9_-]", "", name.lower())
    if not name:
        raise ComposeError("the project name is empty after normalisation", "set project: to a-z, 0-9, _ or -")
    project = Project(name, [str(p) for p in paths], str(workdir), {}, {}, {}, warnings, vch=vch)
    for section, into in (("networks", project.networks), ("volumes", project.volumes)):
        for key, spec in (merged.get(section) or {}).items():
            with shape_errors(sources[f"{section}.{key}"], (section, key), f"{section[:-1]} {key!r}"):
                into[key] = resource(name, key, spec or {})
    for section, defined in (("secrets", project.secrets), ("configs", project.configs)):
        for key, spec in (merged.get(section) or {}).items():
            defined[key] = file_objects.definition(section, key, spec, sources[f"{section}.{key}"], workdir)
    for key, spec in (merged.get("services") or {}).items():
        src = sources[f"services.{key}"]
        with shape_errors(src, ("services", key), f"service {key!r}"):
            project.services[key] = service = build_service(key, spec or {}, project, src, workdir, env)
            _swarm_keys(service, spec or {}, project, src)
    if not project.services:
        raise ComposeError(f"{paths[0]}: no services defined", "add services: with at least one service")
    _check_dependencies(project, sources)
    return project


def _read_and_merge(
    paths: list[Path], env: dict[str, str], warnings: list[str], vch: bool
) -> tuple[dict[str, Any], dict[str, Source]]:
    """The files read, interpolated, checked and merged in order; and where each service, network and volume
    was last defined (its errors point there)."""
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for path in paths:
        try:
            located = yamlpos.load(yamlpos.read_text(path, "compose file"))
        except yamlpos.YAMLSyntaxError as exc:
            raise ComposeError(f"{path}:{exc.line}:{exc.column}: {exc}", exc.hint or None) from None
        src = Source(str(path), located)
        data = located.data or {}
        if not isinstance(data, dict):
            raise src.error((), "a compose file is a mapping with services:")
        data = interpolate(data, env, src, (), warnings)
        with shape_errors(src, (), "compose file"):
            check_file(data, src, vch, warnings)
            for section in ("services", "networks", "volumes", "secrets", "configs"):
                for key in data.get(section) or {}:
                    sources[f"{section}.{key}"] = src
            merged = _merge_file(merged, data)
    return merged, sources


def _swarm_keys(service: Service, spec: dict, project: Project, src: Source) -> None:
    """The compose-spec keys docker compose honours outside swarm: deploy, secrets and configs from files."""
    if spec.get("deploy"):
        deploy_spec.apply(service, spec["deploy"], src, project.warnings)
    for section in ("secrets", "configs"):
        refs = spec.get(section) or []
        service.mounts.extend(file_objects.mounts(service.name, section, refs, project, src, project.warnings))


def _check_dependencies(project: Project, sources: dict[str, Source]) -> None:
    """depends_on names services that exist, and no cycle."""
    for service in project.services.values():
        for dep in service.depends_on:
            if dep not in project.services:
                raise sources[f"services.{service.name}"].error(
                    ("services", service.name, "depends_on"),
                    f"service {service.name!r} depends on unknown service {dep!r}",
                    f"{did_you_mean(dep, project.services)}".strip(),
                )
    cycle = dag.find_cycle({n: list(s.depends_on) for n, s in project.services.items()})
    if cycle:
        raise sources[f"services.{cycle[0]}"].error(
            ("services", cycle[0], "depends_on"),
            f"depends_on cycle: {' -> '.join([*cycle, cycle[0]])} (each depends on the next)",
            "remove one of these depends_on to break the cycle",
        )


def _merge_file(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key == "services":
            services = dict(out.get("services") or {})
            for name, spec in (value or {}).items():
                services[name] = _merge_service(services.get(name) or {}, spec or {})
            out["services"] = services
        elif key in ("networks", "volumes", "secrets", "configs"):
            section = dict(out.get(key) or {})
            for name, spec in (value or {}).items():
                section[name] = {**(section.get(name) or {}), **(spec or {})}
            out[key] = section
        else:
            out[key] = value
    return out


def _mount_target(spec: Any) -> str:
    """A volume's target, short form (SOURCE:TARGET[:MODE] or TARGET) or long: what override files merge by."""
    if isinstance(spec, dict):
        return str(spec.get("target"))
    parts = str(spec).split(":")
    return parts[1] if len(parts) > 1 else parts[0]


def _merge_service(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key in ("environment", "labels", "sysctls"):
            out[key] = {**mapping(base.get(key)), **mapping(value)}
        elif key == "ulimits" and isinstance(value, dict):
            out[key] = {**(base.get(key) or {}), **value}
        elif key == "logging" and isinstance(value, dict) and isinstance(base.get(key), dict):
            same = value.get("driver") in (None, base[key].get("driver"))  # compose merges options of one driver
            options = (
                {**(base[key].get("options") or {}), **(value.get("options") or {})} if same else value.get("options")
            )
            out[key] = {**base[key], **value, "options": options}
        elif key in LIST_KEYS - {"volumes"}:  # volumes merge by target, below
            merged = list(listify(base.get(key)))
            merged += [v for v in listify(value) if v not in merged]
            out[key] = merged
        elif key == "volumes":
            by_target = {_mount_target(v): v for v in listify(base.get(key))}
            by_target.update({_mount_target(v): v for v in listify(value)})
            out[key] = list(by_target.values())
        elif key in ("depends_on", "networks"):
            out[key] = {**dictify(base.get(key)), **dictify(value)}
        elif key == "healthcheck" and isinstance(value, dict):
            out[key] = {**(base.get(key) or {}), **value}
        elif key == "deploy" and isinstance(value, dict) and isinstance(base.get(key), dict):
            out[key] = _deep_merge(base[key], value)
        elif key in ("secrets", "configs") and isinstance(value, list):
            replaced = {_reference(v) for v in value}  # a later file's entry replaces the same secret's
            out[key] = [v for v in listify(base.get(key)) if _reference(v) not in replaced] + value
        else:
            out[key] = value
    return out


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _reference(ref: Any) -> str:
    """The secret or config a service's entry names (short or long syntax)."""
    return str(ref.get("source")) if isinstance(ref, dict) else str(ref)
