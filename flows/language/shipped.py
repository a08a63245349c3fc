"""Find a blueprint by path or by the name of one that ships with vicflow."""

from __future__ import annotations

from pathlib import Path

import vicflow.blueprints
from vicflow.plugins.errors import BlueprintError


def shipped_dir() -> Path:
    """The shipped blueprints: the vicflow.blueprints package (blueprints/ in a checkout installed editable)."""
    return Path(vicflow.blueprints.__file__).parent


def shipped() -> dict[str, Path]:
    return {p.stem: p for p in sorted(shipped_dir().glob("*.yaml"))}


def resolve(ref: str) -> Path:
    """``ref`` as a file path, else as a shipped blueprint name (``gogs`` -> blueprints/gogs.yaml)."""
    path = Path(ref)
    try:
        if path.is_file():
            return path
    except (OSError, ValueError):  # a name too long, a NUL: not a file, and no shipped name either
        pass
    known = shipped()
    name = path.stem if path.suffix in (".yaml", ".yml") else ref
    if name in known and len(path.parts) == 1:
        return known[name]
    from vicflow.flows.language.problems import Problem  # the CLI imports this module: +84 ms (jinja2, via expressions)

    raise BlueprintError(
        [
            Problem(
                ref[:300],
                1,
                1,
                "no such blueprint file or shipped blueprint",
                f"shipped blueprints: {', '.join(known) or 'none'}",
            )
        ]
    )
