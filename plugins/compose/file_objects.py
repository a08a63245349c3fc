"""Secrets and configs from files, as docker compose runs them outside swarm: read-only bind mounts.

A secret goes to ``/run/secrets/<target or name>``, a config to ``/<target or name>`` (an absolute target is
kept), as docker compose v2 does (``pkg/compose/create.go``: ``buildContainerSecretMounts``,
``buildContainerConfigMounts``) and docker-compose 1.29.2 for secrets (``service.py``: ``get_secret_volumes``).
``uid``, ``gid`` and ``mode`` cannot apply to a bind-mounted file: both tools ignore them with a warning, and so
does vicflow. The top-level definitions name a file (``file:``); the rest (``external``, ``environment``,
``content``) is refused by the shape checks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vicflow.plugins.compose.errors import Source
from vicflow.plugins.compose.model import Mount, Project
from vicflow.plugins.hints import did_you_mean

BASE = {"secrets": "/run/secrets/", "configs": "/"}


def definition(section: str, name: str, spec: dict[str, Any], src: Source, workdir: Path) -> str:
    """The absolute path of a top-level secret's or config's file, which must exist."""
    path = (workdir / os.path.expanduser(str(spec["file"]))).resolve()
    error = src.unreadable(
        (section, name, "file"),
        path,
        f"the file of {section[:-1]} {name!r}",
        "create it, or correct file: (relative to the compose file's folder)",
    )
    if error:
        raise error
    return str(path)


def mounts(service: str, section: str, refs: list, project: Project, src: Source, warnings: list[str]) -> list[Mount]:
    """A service's ``secrets:`` or ``configs:`` as read-only bind mounts of the defined files."""
    defined = project.secrets if section == "secrets" else project.configs
    out = []
    for index, ref in enumerate(refs):
        where = ("services", service, section, index)
        source, target = (ref, None) if isinstance(ref, str) else (ref["source"], ref.get("target"))
        if source not in defined:
            raise src.error(
                where,
                f"service {service!r} uses undeclared {section[:-1]} {source!r}",
                f"{did_you_mean(source, defined)}declare it under the top-level {section}: with file:",
            )
        if isinstance(ref, dict) and {"uid", "gid", "mode"} & ref.keys():
            line, col = src.located.where(where)
            warnings.append(
                f"{src.path}:{line}:{col}: uid, gid and mode of {section[:-1]} {source!r} ({service!r}) are ignored: "
                "the file is bind-mounted as it is on the host (docker compose does the same outside swarm)"
            )
        name = str(target or source)
        out.append(Mount("bind", defined[source], name if name.startswith("/") else BASE[section] + name, True, True))
    return out
