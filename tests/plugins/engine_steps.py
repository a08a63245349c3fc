"""Step types for the engine's tests: each records what it did in JOURNAL so tests can assert on it."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from vicflow.plugins import (
    BlueprintFile,
    Change,
    Params,
    PermanentError,
    StepContext,
    StepType,
    TransientError,
    hookimpl,
)

JOURNAL: list[tuple[str, str, float]] = []  # (action, name, monotonic time)
ATTEMPTS: dict[str, list[float]] = {}
_lock = threading.Lock()


def note(action: str, name: str) -> None:
    with _lock:
        JOURNAL.append((action, name, time.monotonic()))


class EchoParams(Params):
    message: str = ""
    value: Any = None


class Echo(StepType[EchoParams]):
    """Returns its parameters as outputs."""

    Params = EchoParams
    outputs = {"message": "the message", "value": "the value"}

    def plan(self, params: EchoParams, ctx: StepContext):
        return [Change("create", ctx.step_id, params.message)]

    def apply(self, params: EchoParams, ctx: StepContext):
        note("apply", ctx.step_id)
        ctx.logger.info("echo %s", params.message)
        return {"message": params.message, "value": params.value}


class SleepParams(Params):
    seconds: float = 0.2
    name: str = ""


class Sleep(StepType[SleepParams]):
    """Blocks the thread (time.sleep), as badly written network code would."""

    Params = SleepParams
    outputs = {"slept": "seconds slept"}

    def apply(self, params: SleepParams, ctx: StepContext):
        note("start", params.name or ctx.step_id)
        time.sleep(params.seconds)
        note("end", params.name or ctx.step_id)
        return {"slept": params.seconds}


class FlakyParams(Params):
    key: str
    fail_times: int = 1
    permanent: bool = False


class Flaky(StepType[FlakyParams]):
    """Fails ``fail_times`` times (transiently unless ``permanent``), then succeeds."""

    Params = FlakyParams
    outputs = {"attempts": "attempts it took"}

    def apply(self, params: FlakyParams, ctx: StepContext):
        with _lock:
            tries = ATTEMPTS.setdefault(params.key, [])
            tries.append(time.monotonic())
            count = len(tries)
        if count <= params.fail_times:
            error = PermanentError if params.permanent else TransientError
            raise error(f"{params.key}: failure {count} of {params.fail_times}", "this is a test")
        return {"attempts": count}


class UndoableParams(Params):
    name: str
    fail: bool = False
    secret: str = ""


class Undoable(StepType[UndoableParams]):
    """Records apply and rollback, for the order of rollbacks."""

    Params = UndoableParams
    outputs = {"name": "its name"}

    def apply(self, params: UndoableParams, ctx: StepContext):
        if params.fail:
            raise PermanentError(f"{params.name} failed on purpose (secret was {params.secret})")
        note("apply", params.name)
        ctx.state["created"] = params.name
        return {"name": params.name}

    def rollback(self, params: UndoableParams, ctx: StepContext):
        note("rollback", ctx.state["created"])


class TypedParams(Params):
    port: int
    host: str = "localhost"
    mode: str = "a"


class Typed(StepType[TypedParams]):
    Params = TypedParams
    outputs = {"url": "host:port"}

    def apply(self, params: TypedParams, ctx: StepContext):
        ctx.changed = False
        return {"url": f"{params.host}:{params.port}"}


class Noop(StepType):
    outputs = {}

    def apply(self, params, ctx: StepContext):
        return {}


class ReadParams(Params):
    file: BlueprintFile


class Read(StepType[ReadParams]):
    """Reads a file named relative to the blueprint (the path type's test)."""

    Params = ReadParams
    outputs = {"text": "the file's text", "path": "the path the step was given"}

    def apply(self, params: ReadParams, ctx: StepContext):
        with open(params.file) as f:
            return {"text": f.read(), "path": params.file}


class Picky(StepType[EchoParams]):
    """Its plan fails, as vch_create's does while the firewall it needs is still closed."""

    Params = EchoParams

    def plan(self, params: EchoParams, ctx: StepContext):
        raise PermanentError(f"cannot plan: {params.message}")

    def apply(self, params: EchoParams, ctx: StepContext):
        return {}


class WriteParams(Params):
    file: BlueprintFile
    text: str


class WriteFile(StepType[WriteParams]):
    """Writes a file; its plan compares it with what is there (the approval tests change it meanwhile)."""

    Params = WriteParams
    outputs = {"file": "the file written"}

    def plan(self, params: WriteParams, ctx: StepContext):
        path = Path(params.file)
        current = path.read_text() if path.exists() else None
        if current == params.text:
            return [Change("none", params.file, "as wanted")]
        return [Change("create" if current is None else "update", params.file, f"{current!r} -> {params.text!r}")]

    def apply(self, params: WriteParams, ctx: StepContext):
        with open(params.file, "w") as out:
            out.write(params.text)
        return {"file": params.file}


class WhereParams(Params):
    peer: str  # an address the host reaches (the Prefect server's)
    file: BlueprintFile


class Where(StepType[WhereParams]):
    """Appends the address this host reaches ``peer`` from to ``file``: which host ran the step, and how often."""

    Params = WhereParams
    outputs = {"address": "this host's address toward peer"}

    def apply(self, params: WhereParams, ctx: StepContext):
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((params.peer, 9))  # UDP: picks the route and the source address, sends nothing
            address = probe.getsockname()[0]
        with open(params.file, "a") as out:
            out.write(f"{address}\n")
        return {"address": address}


class TouchParams(Params):
    targets: list[str]
    kind: str  # a plugins.step.Kind value
    action: str = "update"


class Touch(StepType[TouchParams]):
    """Plans one change of ``kind`` per target (the blast radius and policies count them); apply records it."""

    Params = TouchParams

    def plan(self, params: TouchParams, ctx: StepContext):
        return [Change(params.action, name, f"{params.kind} {params.action}", params.kind) for name in params.targets]

    def apply(self, params: TouchParams, ctx: StepContext):
        note("apply", ctx.step_id)
        return {}


@hookimpl
def register_step_types(register):
    register("echo", Echo)
    register("sleep", Sleep)
    register("flaky", Flaky)
    register("undoable", Undoable)
    register("typed", Typed)
    register("noop", Noop)
    register("read", Read)
    register("picky", Picky)
    register("write_file", WriteFile)
    register("where", Where)
    register("touch", Touch)
