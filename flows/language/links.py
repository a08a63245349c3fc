"""Where an operator can look at a run."""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path


def run_url(run_id: str) -> str:
    """The run's page in the Prefect UI, and how to start the UI when no server is running."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL  # the CLI imports this module: +2.2 s (Prefect)

    ui = PREFECT_UI_URL.value()
    if PREFECT_API_URL.value() and ui:
        return f"{ui.rstrip('/')}/runs/flow-run/{run_id}"
    return (
        f"http://127.0.0.1:4200/runs/flow-run/{run_id} "
        "(start the UI with `prefect server start`; it reads the same local database)"
    )


def configured_api_url() -> str | None:
    """The PREFECT_API_URL this process would use (``configured``)."""
    return configured("PREFECT_API_URL")


def configured(setting: str) -> str | None:
    """A Prefect client setting (PREFECT_API_URL, PREFECT_API_AUTH_STRING, ...) as this process would use it: the
    environment's, else the active Prefect profile's (read with tomllib while Prefect is not imported: importing it
    costs seconds), else Prefect's own settings."""
    if os.environ.get(setting):
        return os.environ[setting]
    if "prefect" in sys.modules:
        import prefect.settings  # imported already (checked above): costs nothing

        value = getattr(prefect.settings, setting).value()
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        return _text(value)
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    profile = profiles.get("profiles", {}).get(name, {})
    return _text(profile.get(setting) if isinstance(profile, dict) else None)


def _text(value: object) -> str | None:
    """A setting's value as the environment would spell it; None when unset (or false)."""
    if value is None or value is False or value == "":
        return None
    if value is True:
        return "true"
    return str(value) if isinstance(value, str | int | float) else None
