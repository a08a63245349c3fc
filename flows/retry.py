"""Retry delays: a number, a list, or exponential backoff with jitter.

Prefect's client-side ``retry_jitter_factor`` does nothing, so the jitter is applied here, when
the delays are computed, and Prefect receives the final list.
"""

from __future__ import annotations

import random

from vicflow.flows.blueprint import Backoff


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
