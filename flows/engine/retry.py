"""How a step is retried, in one place: how many more attempts, the wait before each, and which errors are
worth another attempt. Both executors follow it: the thread executor in its own loop, the Prefect adapter
through a task's ``retries``, ``retry_delay_seconds`` and ``retry_condition_fn``.

The waits are a number, a list, or exponential backoff with jitter. Prefect's client-side
``retry_jitter_factor`` does nothing, so the jitter is applied here, when the waits are drawn, and Prefect
receives the final list. Each submission draws its own (the items of a ``for_each`` do not retry in step).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from vicflow.flows.language.spec import Backoff, StepSpec
from vicflow.plugins.errors import AttemptFailed, AttemptStillRunning


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, ``delays[n]`` seconds before retry n + 1."""

    retries: int
    delays: tuple[float, ...]

    @classmethod
    def of(cls, step: StepSpec, rng: random.Random | None = None) -> RetryPolicy:
        return cls(step.retries, tuple(delays(step.retry_delay_seconds, step.retries, rng)))

    def wait_before_retry(self, error: AttemptFailed, attempts: int) -> float | None:
        """Seconds to wait before another attempt, after ``attempts`` attempts that ended in ``error``; None
        when there is none (the error is not worth it, or the retries are spent)."""
        if not error.transient or attempts > self.retries:
            return None
        return self.delays[attempts - 1]


def worth_retrying(exc: BaseException, step_type: Any) -> bool:
    """Whether another attempt may help after ``exc``: a timeout may pass, and the step type says of the rest
    (``StepType.is_transient``: a TransientError, or a dropped connection). Not an attempt
    that is still running (a second would run beside it), nor anything that is not an Exception."""
    if isinstance(exc, AttemptStillRunning) or not isinstance(exc, Exception):
        return False
    return isinstance(exc, TimeoutError) or step_type.is_transient(exc)


def delays(spec: float | list[float] | Backoff, retries: int, rng: random.Random | None = None) -> list[float]:
    """The wait before each of ``retries`` retries."""
    if retries <= 0:
        return []
    if isinstance(spec, int | float):
        return [float(spec)] * retries
    if isinstance(spec, list):
        if not spec:
            return [0.0] * retries
        return [float(spec[min(i, len(spec) - 1)]) for i in range(retries)]
    rng = rng or random.Random()
    out = []
    for attempt in range(retries):
        base = min(spec.max, spec.base * spec.factor**attempt)
        spread = base * spec.jitter
        out.append(max(0.0, base + rng.uniform(-spread, spread)))
    return out
