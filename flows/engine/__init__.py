"""The engine: a run, its scheduler, planner, attempts, retries, executors and journal (no Prefect)."""
