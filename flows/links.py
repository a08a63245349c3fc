"""Where an operator can look at a run."""

from __future__ import annotations


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
