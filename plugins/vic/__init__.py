"""What vic-machine knows, as a library for the vch and firewall steps: a VCH's settings and checks, its build,
and the ESXi firewall ruleset it needs."""
