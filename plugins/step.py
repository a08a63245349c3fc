"""The contract between the engine and a step type."""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from vicflow.plugins.errors import PermanentError, TransientError


class Params(BaseModel):
    """Base for step parameter models: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Kind(StrEnum):
    """What a plan row touches: the one vocabulary step types, the blast radius and policies share.

    A third-party step type may give a kind of its own (any string); the blast radius counts these."""

    HOST_FIREWALL = "host_firewall"  # an ESXi host's firewall (the vSPC ruleset)
    VCH = "vch"  # a Virtual Container Host (its endpoint VM)
    CONTAINER = "container"  # a container, or a container VM of a VCH
    VOLUME = "volume"  # a Docker volume (on a VCH, a VMDK in a volume store)
    VOLUME_STORE = "volume_store"  # a VCH's volume store (a datastore folder)
    NETWORK = "network"  # a Docker network
    REGISTRY_IMAGE = "registry_image"  # the image a registry service runs


@dataclass
class Change:
    """One thing ``plan()`` says ``apply()`` would do."""

    action: str  # create | update | delete | none
    target: str
    detail: str = ""
    kind: str = ""  # what is touched (a ``Kind``); empty when a step type does not say


@dataclass
class StepContext:
    """What a running step knows about its run.

    ``state`` is private to the step: ``apply()`` records there what it did, ``rollback()`` reads it.
    ``deadline`` is a ``time.monotonic()`` value or None; blocking code should pass
    ``remaining()`` as the timeout of its network calls.
    """

    step_id: str
    run_id: str
    blueprint: str
    logger: logging.Logger | logging.LoggerAdapter
    deadline: float | None = None
    attempt: int = 1
    dry_run: bool = False
    changed: bool = True
    state: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # shared per run (e.g. vSphere sessions)
    base_dir: str = "."  # the blueprint's folder: relative file parameters are resolved against it
    # What the step built and could not remove, one line each with how to remove it. The engine keeps
    # one list per step across attempts and rollback, and shows it in the run's summary.
    leftovers: list[str] = field(default_factory=list)

    def path(self, value: str) -> str:
        """``value`` resolved against the blueprint's folder (absolute paths are kept)."""
        import os

        return value if os.path.isabs(value) else os.path.normpath(os.path.join(self.base_dir, value))

    def add_secret(self, value: str) -> None:
        """Hide ``value`` from now on in every log line, summary, artifact and event (a token the step got)."""
        from vicflow.plugins import masking

        masking.add_secret(value)

    def remaining(self, default: float = 60.0, cap: float | None = None) -> float:
        """Seconds left before the deadline (``default`` without one), never below 0.1."""
        left = default if self.deadline is None else max(0.1, self.deadline - time.monotonic())
        return min(left, cap) if cap is not None else left


P = TypeVar("P", bound=BaseModel)


class StepType(ABC, Generic[P]):
    """Base class of every step type, built-in or third-party: ``class Copy(StepType[CopyParams])``.

    Subclasses set ``Params`` (the pydantic model ``P``, ``extra="forbid"``) and ``outputs`` (name ->
    description), and implement ``apply`` (abstract) and ``plan``; ``rollback`` where they can undo.

    Which errors are worth another attempt is decided where they enter: the clients in ``plugins/clients``
    map their library's exceptions into ``TransientError``/``PermanentError`` (plugins/errors.py), and a step
    type raises those. ``is_transient`` only asks which one it got.
    """

    Params: ClassVar[type[BaseModel]] = Params
    outputs: ClassVar[dict[str, str]] = {}

    def plan(self, params: P, ctx: StepContext) -> list[Change]:
        """What ``apply`` would change, read-only."""
        return [Change("unknown", ctx.step_id, "this step type cannot plan")]

    @abstractmethod
    def apply(self, params: P, ctx: StepContext) -> dict[str, Any]:
        """Make it so; returns the step's outputs. Runs again on a retry or a second run: idempotent."""

    def rollback(self, params: P, ctx: StepContext) -> None:
        """Undo what ``apply`` did in this run (from ``ctx.state``)."""
        raise NotImplementedError

    @classmethod
    def can_rollback(cls) -> bool:
        return cls.rollback is not StepType.rollback

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        """A ``TransientError``; or a socket's own timeout or dropped connection that no client mapped."""
        if isinstance(exc, PermanentError):
            return False
        return isinstance(exc, TransientError | TimeoutError | ConnectionError)
