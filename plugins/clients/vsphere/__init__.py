"""The vSphere client: pyVmomi behind a pinned certificate, one session per run. Import each name from the
module that defines it:

- ``connection``: the step's settings (``VSphereParams``), logging in and out, the run's ``Sessions``;
- ``pinning``: the SHA-1 thumbprint a connection must present, for the API and the datastore's HTTPS;
- ``errors``: pyVmomi's connection failures mapped into the tree (``ConnectionLost``), where every call leaves;
- ``inventory``: lookups by name and path, and bulk property reads (PropertyCollector);
- ``tasks``: waiting for a vSphere task, and its fault as ``TaskFailed``.
"""
