"""Step types for the engine's tests: each records what it did in JOURNAL so tests can assert on it."""

from __future__ import annotations

import threading
import time
from typing import Any

from vicflow.plugins import Change, PermanentError, StepType, TransientError, hookimpl
from vicflow.plugins.step import Params

JOURNAL: list[tuple[str, str, float]] = []  # (action, name, monotonic time)
ATTEMPTS: dict[str, list[float]] = {}
_lock = threading.Lock()


def note(action: str, name: str) -> None:
    with _lock:
        JOURNAL.append((action, name, time.monotonic()))


class EchoParams(Params):
    message: str = ""
    value: Any = None


class Echo(StepType):
    """Returns its parameters as outputs."""

    Params = EchoParams
    outputs = {"message": "the message", "value": "the value"}

    def plan(self, params, ctx):
        return [Change("create", ctx.step_id, params.message)]

    def apply(self, params, ctx):
        note("apply", ctx.step_id)
        ctx.logger.info("echo %s", params.message)
        return {"message": params.message, "value": params.value}


class SleepParams(Params):
    seconds: float = 0.2
    name: str = ""


class Sleep(StepType):
    """Blocks the thread (time.sleep), as badly written network code would."""

    Params = SleepParams
    outputs = {"slept": "seconds slept"}

    def apply(self, params, ctx):
        note("start", params.name or ctx.step_id)
        time.sleep(params.seconds)
        note("end", params.name or ctx.step_id)
        return {"slept": params.seconds}


class FlakyParams(Params):
    key: str
    fail_times: int = 1
    permanent: bool = False


class Flaky(StepType):
    """Fails ``fail_times`` times (transiently unless ``permanent``), then succeeds."""

    Params = FlakyParams
    outputs = {"attempts": "attempts it took"}

    def apply(self, params, ctx):
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


class Undoable(StepType):
    """Records apply and rollback, for the order of rollbacks."""

    Params = UndoableParams
    outputs = {"name": "its name"}

    def apply(self, params, ctx):
        if params.fail:
            raise PermanentError(f"{params.name} failed on purpose (secret was {params.secret})")
        note("apply", params.name)
        ctx.state["created"] = params.name
        return {"name": params.name}

    def rollback(self, params, ctx):
        note("rollback", ctx.state["created"])


class TypedParams(Params):
    port: int
    host: str = "localhost"
    mode: str = "a"


class Typed(StepType):
    Params = TypedParams
    outputs = {"url": "host:port"}

    def apply(self, params, ctx):
        ctx.changed = False
        return {"url": f"{params.host}:{params.port}"}


class Noop(StepType):
    outputs = {}

    def apply(self, params, ctx):
        return {}


@hookimpl
def register_step_types(register):
    register("echo", Echo)
    register("sleep", Sleep)
    register("flaky", Flaky)
    register("undoable", Undoable)
    register("typed", Typed)
    register("noop", Noop)
