"""Prometheus metrics of `vicflow worker` and `vicflow listen` (docs/metrics.md lists them; tests/test_docs.py
compares the two). Off unless an address is given: ``--metrics-port PORT`` or ``VICFLOW_METRICS_ADDR``.

A worker's runs are processes of their own (forked by flows/on_prefect/forkserver.py), so their numbers reach the
worker's endpoint through prometheus-client's multiprocess mode: ``vicflow worker`` makes a directory, hands it to the
fork server, `prefect worker` and so every run as ``PROMETHEUS_MULTIPROC_DIR``, and its endpoint sums what the
processes wrote there (docs/decisions.md). `vicflow listen` is one process: its endpoint serves its own registry.
Recording is a counter or histogram update in memory (an mmap'ed file in a worker's runs), never a network call.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    multiprocess,
    start_http_server,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from vicflow.plugins.errors import ConfigError

ADDR_ENV = "VICFLOW_METRICS_ADDR"  # HOST:PORT or PORT (then on 127.0.0.1)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
DEFAULT_HOST = "127.0.0.1"
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)

# of the worker (recorded in its runs' processes)
RUNS = Counter("vicflow_runs", "Runs that ended, by blueprint and final state", ["blueprint", "state"], registry=None)
STEP_SECONDS = Histogram(
    "vicflow_step_duration_seconds",
    "How long steps ran, from start to final state, by step type and final state",
    ["step_type", "state"],
    buckets=STEP_BUCKETS,
    registry=None,
)
RETRIES = Counter(
    "vicflow_step_retries", "Step attempts after the first (retries), by step type", ["step_type"], registry=None
)
ROLLBACKS = Counter(
    "vicflow_rollbacks",
    "Steps undone after a failure, by step type and outcome",
    ["step_type", "outcome"],
    registry=None,
)
LAG = Histogram(
    "vicflow_event_run_lag_seconds",
    "From an event's occurred time to the run it started beginning its steps",
    buckets=LAG_BUCKETS,
    registry=None,
)
APPROVALS = Gauge(
    "vicflow_approvals_waiting",
    "Approval gates waiting for a human, by blueprint",
    ["blueprint"],
    multiprocess_mode="livesum",  # the runs alive now; a dead run's file is dropped (forkserver._reap)
    registry=None,
)
# of `vicflow listen`; events dropped as duplicates in a run's intake are counted by the worker
RECEIVED = Counter(
    "vicflow_events_received", "Events the listener's sources emitted to Prefect", ["source"], registry=None
)
FOLDED = Counter("vicflow_events_folded", "Queued runs folded into a newer run for the same target", registry=None)
REDELIVERED = Counter(
    "vicflow_events_redelivered",
    "Events sent again because no run came of them (flows/events/delivery.py)",
    registry=None,
)
DROPPED = Counter(
    "vicflow_events_dropped",
    "Events that start no run of their own: already queued or already taken",
    ["reason"],
    registry=None,
)

WORKER = (RUNS, STEP_SECONDS, RETRIES, ROLLBACKS, LAG, APPROVALS, DROPPED)
LISTENER = (RECEIVED, FOLDED, REDELIVERED, DROPPED)
METRICS = (*WORKER, RECEIVED, FOLDED, REDELIVERED)


class Only:
    """A collector that passes on only ``names``' families: every process defines every metric (one module),
    so the worker's files also hold the listener's unlabelled ones (at 0), which its endpoint leaves out."""

    def __init__(self, collector: Collector, metrics: tuple[MetricWrapperBase, ...]):
        self.collector = collector
        self.names = {family.name for metric in metrics for family in metric.describe()}

    def collect(self) -> Iterator[Metric]:
        for family in self.collector.collect():
            if family.name in self.names:
                yield family


def catalogue() -> list[tuple[str, str, tuple[str, ...]]]:
    """(name as Prometheus shows it, type, label names) of each metric, as docs/metrics.md lists them."""
    found = []
    for metric in METRICS:
        [family] = list(metric.describe())
        name = family.name + ("_total" if family.type == "counter" else "")
        found.append((name, family.type, tuple(metric._labelnames)))
    return found


def address(port: int | None) -> tuple[str, int] | None:
    """Where to serve: ``--metrics-port`` (on 127.0.0.1), else ``VICFLOW_METRICS_ADDR``; None: metrics are off."""
    if port is not None:
        return DEFAULT_HOST, port
    text = os.environ.get(ADDR_ENV, "").strip()
    if not text:
        return None
    host, _, number = text.rpartition(":")
    host = host.strip("[]") or DEFAULT_HOST
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise ConfigError(f"{ADDR_ENV}={text!r} is not HOST:PORT or PORT", f"e.g. {ADDR_ENV}={DEFAULT_HOST}:9464")
    return host, int(number)


def worker_dir() -> str:
    """The directory a worker's processes write their numbers to: PROMETHEUS_MULTIPROC_DIR when set (it must be
    one only this worker uses, emptied before it starts), else a new one."""
    return os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="vicflow-metrics-")


def serve_worker(where: tuple[str, int], folder: str) -> None:
    """The worker's endpoint: the sum of what its processes (fork server, runs) wrote to ``folder``."""
    registry = CollectorRegistry()
    registry.register(Only(multiprocess.MultiProcessCollector(None, path=folder), WORKER))
    start_http_server(where[1], addr=where[0], registry=registry)


def serve_listener(where: tuple[str, int]) -> None:
    """`vicflow listen`'s endpoint: the listener's metrics and prometheus-client's process metrics."""
    registry = CollectorRegistry()
    for metric in LISTENER:
        registry.register(metric)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    start_http_server(where[1], addr=where[0], registry=registry)


def process_ended(pid: int) -> None:
    """A run's process was reaped: its share of the live gauges (approvals waiting) goes with it."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)


# ------------------------------------------------------------------------------------------- recording


def run_ended(blueprint: str, state: str) -> None:
    RUNS.labels(blueprint, state).inc()


def step_ended(step_type: str, state: str, seconds: float) -> None:
    STEP_SECONDS.labels(step_type, state).observe(seconds)


def retried(step_type: str) -> None:
    RETRIES.labels(step_type).inc()


def rolled_back(step_type: str, undone: bool) -> None:
    ROLLBACKS.labels(step_type, "rolled_back" if undone else "failed").inc()


@contextmanager
def approval_waiting(blueprint: str) -> Iterator[None]:
    with APPROVALS.labels(blueprint).track_inprogress():
        yield


def run_started(event: dict[str, Any] | None) -> None:
    """A run began its steps: the lag since its event occurred (a run without an event has none)."""
    occurred = (event or {}).get("occurred")
    if isinstance(occurred, str):
        try:
            occurred = datetime.fromisoformat(occurred.replace("Z", "+00:00"))
        except ValueError:
            return
    if not isinstance(occurred, datetime):
        return
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    LAG.observe(max(0.0, (datetime.now(UTC) - occurred).total_seconds()))


def received(source: str) -> None:
    RECEIVED.labels(source).inc()


def folded(count: int = 1) -> None:
    FOLDED.inc(count)


def redelivered() -> None:
    REDELIVERED.inc()


def dropped(reason: str) -> None:
    DROPPED.labels(reason).inc()
