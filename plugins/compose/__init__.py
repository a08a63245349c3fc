"""The Compose model: a project loaded from real compose files (interpolation, extends, env files,
VIC's key rules), with positions for every error.  compose_up / compose_down deploy it."""
