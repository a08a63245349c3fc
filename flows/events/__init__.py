"""Runs started by events: the intake (one run per event) and `vicflow listen`."""
