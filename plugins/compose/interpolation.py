"""``${VAR}`` interpolation as Compose does it, and ``.env`` files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from vicflow.plugins.compose.errors import Source

VAR_RE = re.compile(
    r"\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)  # noqa: E501


def interpolate(value: Any, env: dict[str, str], src: Source, path: tuple = (), warnings: list | None = None) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR:+alt} and $$.

    An unset ${VAR} becomes "" with a warning naming it and its file:line, as ``docker compose`` does.
    """
    warnings = [] if warnings is None else warnings
    if isinstance(value, dict):
        return {k: interpolate(v, env, src, (*path, k), warnings) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, src, (*path, i), warnings) for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        op, arg = match.group(3), match.group(4) or ""
        present = name in env
        val = env.get(name, "")
        if op in (":-", "-"):
            use_default = (not present) if op == "-" else (not val)
            return str(interpolate(arg, env, src, path, warnings)) if use_default else val
        if op in (":?", "?"):
            if (not present) if op == "?" else (not val):
                raise src.error(
                    path,
                    f"required variable {name} is missing: {arg or 'no message'}",
                    f"set {name} in the step's environment",
                )
            return val
        if op in (":+", "+"):
            return (
                str(interpolate(arg, env, src, path, warnings))
                if ((present and val) if op == ":+" else present)
                else ""
            )
        if not present:
            line, col = src.located.where(path)
            warnings.append(
                f"{src.path}:{line}:{col}: variable {name} is not set; using an empty string "
                f"(set it in the step's environment, or write ${{{name}:-default}})"
            )
            return ""
        return val

    return VAR_RE.sub(replace, value)


def read_dotenv(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if path.is_file():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or "=" not in line:
                continue
            key, _, val = line.removeprefix("export ").partition("=")
            values[key.strip()] = val.strip().strip("'\"")
    return values
