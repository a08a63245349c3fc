"""Client libraries the step types and event sources use: vSphere (pyVmomi sessions, pinning, lookups),
the Docker Engine API (docker-py), the registry's token flow, and certificates.  They know nothing of
steps or the engine; the test bed uses them too."""
