"""Prometheus metrics, in prometheus-client's multiprocess mode.

Every goalhub process (the API processes, RQ workers and their forked work-horses, the
scheduler) writes its samples to files under one directory, ``PROMETHEUS_MULTIPROC_DIR``:
``GOALHUB_METRICS_DIR``, else ``<GOALHUB_HOME>/metrics``, chosen when the process first
records a sample and inherited by what it starts. ``/metrics`` (``goalhub.api.metrics``)
adds them up at each scrape, with the gauges read from Redis then (queue depth, scheduled
jobs, the scheduler's last poll).

Recording never raises: a metric that cannot be written is logged, the work goes on.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from typing import Any

from goalhub import config

log = logging.getLogger(__name__)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


def multiprocess_dir() -> str:
    """The directory every process writes its samples to (set in the environment on first use)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = str(config.metrics_dir())
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.makedirs(path, exist_ok=True)
    return path


@cache
def _metrics() -> dict[str, Any]:
    multiprocess_dir()  # before prometheus_client's first import: it picks its mode then
    from prometheus_client import Counter, Histogram

    return {
        "goals": Counter("goalhub_goals_created", "Goals stored by create_goal", ["goal_type"]),
        "outcomes": Counter("goalhub_receiver_outcomes", "Receiver runs by how they ended",
                            ["plugin", "receiver", "status"]),
        "duration": Histogram("goalhub_receiver_duration_seconds", "Time a receiver ran",
                              ["plugin", "receiver"], buckets=DURATION_BUCKETS),
        "lateness": Histogram("goalhub_activation_lateness_seconds", "activated_at - nbf of activated goals",
                              buckets=LATENESS_BUCKETS),
        "reconciled": Counter("goalhub_reconciled", "Overdue goals the reconciler activated or ended late",
                              ["action"]),
        "http": Counter("goalhub_http_requests", "HTTP requests by route and status",
                        ["method", "route", "status"]),
        "http_duration": Histogram("goalhub_http_request_duration_seconds", "HTTP request handling time",
                                   ["route"], buckets=DURATION_BUCKETS),
    }


def prepare() -> None:
    """Load prometheus-client now (a worker, before it forks): each work-horse would import it anew."""
    _metrics()


def _record(name: str, labels: dict[str, str] | None, method: str, value: float = 1.0) -> None:
    try:
        metric = _metrics()[name]
        target = metric.labels(**labels) if labels else metric
        getattr(target, method)(value)
    except Exception:
        log.exception("could not record metric %s", name)


def goal_created(goal_type: str) -> None:
    """A goal was created (``create_goal`` stored it)."""
    _record("goals", {"goal_type": goal_type or "unknown"}, "inc")


def receiver_outcome(plugin: str, receiver: str, status: str, seconds: float | None = None) -> None:
    """A receiver run ended with ``status`` (ok, failed, retrying, timed out, paused, skipped)."""
    _record("outcomes", {"plugin": plugin, "receiver": receiver, "status": status}, "inc")
    if seconds is not None:
        _record("duration", {"plugin": plugin, "receiver": receiver}, "observe", max(seconds, 0.0))


def activation(lateness_seconds: float) -> None:
    """A goal was activated ``lateness_seconds`` after its ``nbf``."""
    _record("lateness", None, "observe", max(lateness_seconds, 0.0))


def reconciled(action: str) -> None:
    """The reconciler activated (``activate``) or ended (``end``) an overdue goal late."""
    _record("reconciled", {"action": action}, "inc")


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    _record("http", {"method": method, "route": route, "status": str(status)}, "inc")
    _record("http_duration", {"route": route}, "observe", seconds)


def process_dead(pid: int) -> None:
    """An API process exited: its live gauges are dropped (counters stay)."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, multiprocess_dir())
    except Exception:
        log.exception("could not mark API process %s dead for metrics", pid)
