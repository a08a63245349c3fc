"""The engine on Prefect: its executor, the flow, deployments, the fork server, journal, children."""
