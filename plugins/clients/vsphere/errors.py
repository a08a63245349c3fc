"""pyVmomi's exceptions mapped into vicflow's error tree, once, where a call leaves the session's stub.

Every pyVmomi call goes through its stub's ``InvokeMethod`` (property reads too, StubAdapterAccessorImpl.py):
``map_stub_errors`` wraps it in ``vsphere_errors``, as httpx's transport wraps each request in
``map_exceptions``. A reset, a refused or timed-out connection, an EOF in TLS, a half-read answer (an
``OSError`` or ``http.client.HTTPException`` from pyVmomi/SoapAdapter.py) is the network, not the request:
``ConnectionLost``, worth another try once the connection is back. The server's own answers (``vim.fault``,
``vmodl.fault``) stay pyVmomi's: callers decide on them (a NotFound is "nothing to remove"), and a task's
fault becomes ``TaskFailed`` (``tasks.wait_task``).
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vicflow.plugins.errors import ConnectionLost


@contextmanager
def vsphere_errors(host: str) -> Iterator[None]:
    """A connection failure in the block leaves as ``ConnectionLost`` naming ``host`` (the original as its cause)."""
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        raise ConnectionLost(f"the connection to vSphere at {host} failed: {type(exc).__name__}: {exc}") from exc


def map_stub_errors(stub: Any, host: str) -> Any:
    """``stub`` (a pyVmomi SoapStubAdapter) with its ``InvokeMethod`` mapped by ``vsphere_errors``."""
    invoke = stub.InvokeMethod

    def invoke_mapped(*args, **kwargs):
        with vsphere_errors(host):
            return invoke(*args, **kwargs)

    stub.InvokeMethod = invoke_mapped
    return stub
