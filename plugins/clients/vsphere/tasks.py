"""Waiting for a vSphere task on a logged-in session; a task's fault becomes ``TaskFailed``."""

from __future__ import annotations

import time
from typing import Any

from vicflow.plugins.clients.vsphere.connection import content
from vicflow.plugins.errors import PermanentError, TransientError


class TaskFailed(PermanentError):  # drawn in plugins/errors.py's tree
    """A vSphere task ended in error; ``fault`` is vSphere's (callers accept some, e.g. FileNotFound)."""

    def __init__(self, message: str, fault: Any):
        super().__init__(message)
        self.fault = fault


def _task_fields(task) -> dict:
    """state, error and result of a task, read without the rest of TaskInfo.

    Reading only these paths is lighter, and avoids TaskInfo fields that some servers fill with
    an unexpected type (the 0.24 simulator's DeleteDatastoreFile_Task sets entity to the FileManager).
    """
    from pyVmomi import vim, vmodl

    collector = content(vim.ServiceInstance("ServiceInstance", task._stub)).propertyCollector
    spec = vmodl.query.PropertyCollector.FilterSpec(
        objectSet=[vmodl.query.PropertyCollector.ObjectSpec(obj=task)],
        propSet=[
            vmodl.query.PropertyCollector.PropertySpec(
                type=vim.Task, pathSet=["info.state", "info.error", "info.result"]
            )
        ],
    )
    found = collector.RetrieveContents([spec])
    return {prop.name: prop.val for prop in found[0].propSet} if found else {}


def wait_task(task, what: str, timeout: float = 300):
    """Wait up to ``timeout`` s for a vSphere task; its fault becomes a PermanentError naming ``what``."""

    deadline = time.monotonic() + timeout
    while True:
        fields = _task_fields(task)
        state = fields.get("info.state")
        if state == "success":
            return fields.get("info.result")
        if state == "error":
            fault = fields.get("info.error")
            raise TaskFailed(f"{what} failed: {getattr(fault, 'msg', None) or type(fault).__name__}", fault)
        if time.monotonic() > deadline:
            raise TransientError(f"{what} did not finish in time (task {task._moId} is {state})")
        time.sleep(0.2)
