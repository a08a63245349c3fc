"""Where an operator can look at a run."""

from __future__ import annotations

import os
import sys


def run_url(run_id: str) -> str:
    """The run's page in the Prefect UI, and how to start the UI when no server is running."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    if PREFECT_API_URL.value() and ui:
        return f"{ui.rstrip('/')}/runs/flow-run/{run_id}"
    return (
        f"http://127.0.0.1:4200/runs/flow-run/{run_id} "
        "(start the UI with `prefect server start`; it reads the same local database)"
    )


def configured_api_url() -> str | None:
    """The PREFECT_API_URL this process would use: the environment's, else the active Prefect profile's (read with
    tomllib while Prefect is not imported: importing it costs seconds), else Prefect's own settings."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    import tomllib
    from pathlib import Path

    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    try:
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    profile = profiles.get("profiles", {}).get(name, {})
    url = profile.get("PREFECT_API_URL") if isinstance(profile, dict) else None
    return url if isinstance(url, str) and url else None
