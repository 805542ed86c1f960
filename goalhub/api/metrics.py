"""``GET /metrics``: Prometheus metrics of every goalhub process on this machine.

With ``GOALHUB_METRICS_TOKEN`` set, only ``Authorization: Bearer <that token>`` opens it: a
credential of its own, which opens nothing else. Unset, it is protected like the dashboard
(HTTP Basic with ``GOALHUB_DASHBOARD_USER``/``PASSWORD``, or a bearer token with the ADMIN
scope). Prometheus sends either (``authorization`` or ``basic_auth`` in its scrape config). The counters and histograms come from the
multiprocess files of every process (``goalhub.metrics``); the gauges are read from Redis
at each scrape: queue depth, scheduled lifecycle jobs, the scheduler's last poll.
"""

from __future__ import annotations

import hmac
import os
import platform
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import psutil
from flask import Blueprint, Response, request

from goalhub import breaker, config, liveness, metrics
from goalhub.api.access import require_dashboard_access
from goalhub.errors import Unauthorized
from goalhub.queues import all_queues, get_scheduler

blueprint = Blueprint("metrics", __name__)


class RedisCollector:
    """Gauges collected at scrape time from Redis (never stale, nothing to keep in step)."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily  # deferred: heavy (goalhub.metrics._metrics)

        depth = GaugeMetricFamily("goalhub_queue_depth", "Jobs waiting in each RQ queue", labels=["queue"])
        failed = GaugeMetricFamily("goalhub_failed_jobs", "Jobs in each queue's failed registry", labels=["queue"])
        for queue in all_queues():
            depth.add_metric([queue.name], queue.count)
            failed.add_metric([queue.name], queue.failed_job_registry.count)
        yield depth
        yield failed
        yield GaugeMetricFamily("goalhub_scheduled_jobs", "Lifecycle jobs waiting in rq-scheduler",
                                value=get_scheduler().count())
        beats = liveness.beats()
        age = min((time.time() - beat["last_poll"] for beat in beats), default=float("inf"))
        yield GaugeMetricFamily("goalhub_scheduler_last_poll_age_seconds",
                                "Seconds since the most recent poll of any scheduler (+Inf: none)", value=age)
        tripped = GaugeMetricFamily("goalhub_receiver_tripped",
                                    "1 for a receiver paused by its circuit breaker (goalhub resume closes it)",
                                    labels=["receiver"])
        for receiver_id in breaker.tripped():
            tripped.add_metric([receiver_id], 1)
        yield tripped
        yield from work_metrics()


def work_metrics() -> Iterator[Any]:
    """Who does the work (``goalhub.liveness``), what runs (build info), and what each goalhub
    process on this machine costs (resident memory, CPU, open files), read at scrape time."""
    # Deferred: heavy, and imported only after metrics.registry set prometheus-client's mode.
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

    work = liveness.work()
    workers = GaugeMetricFamily("goalhub_workers", "Live RQ workers listening on each queue", labels=["queue"])
    for queue, count in work["workers"].items():
        workers.add_metric([queue], count)
    yield workers
    yield GaugeMetricFamily("goalhub_schedulers", "Schedulers that polled within GOALHUB_LIVENESS_WINDOW",
                            value=work["schedulers"])
    versions = {"version": _version("goalhub"), "python": platform.python_version(), "rq": _version("rq"),
                "rq_scheduler": _version("rq-scheduler")}
    yield InfoMetricFamily("goalhub_build", "The goalhub, Python, RQ and rq-scheduler versions of this API process",
                           value=versions)
    rss = GaugeMetricFamily("goalhub_process_resident_memory_bytes", "Resident memory of each goalhub process on "
                            "this machine", labels=["role", "pid"])
    cpu = CounterMetricFamily("goalhub_process_cpu_seconds", "CPU time (user + system) of each goalhub process on "
                              "this machine", labels=["role", "pid"])
    fds = GaugeMetricFamily("goalhub_process_open_fds", "Open file descriptors of each goalhub process on this "
                            "machine", labels=["role", "pid"])
    started = GaugeMetricFamily("goalhub_process_start_time_seconds", "Start time (Unix epoch) of each goalhub "
                                "process on this machine", labels=["role", "pid"])
    for role, pid in _local_processes():
        sample = _process_sample(pid)
        if sample is None:
            continue
        labels = [role, str(pid)]
        rss.add_metric(labels, sample["rss"])
        cpu.add_metric(labels, sample["cpu"])
        fds.add_metric(labels, sample["fds"])
        started.add_metric(labels, sample["started"])
    yield from (rss, cpu, fds, started)


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "unknown"


def _local_processes() -> list[tuple[str, int]]:
    """(role, pid) of the API processes serving with this one, and of the workers and schedulers
    registered in Redis from this host."""
    api = {os.getpid()}
    if metrics.prefork_parent:
        try:
            api |= {child.pid for child in psutil.Process(metrics.prefork_parent).children()}
        except psutil.Error:
            pass
    found = [("api", pid) for pid in sorted(api)]
    for role, pids in liveness.local_processes().items():
        found += [(role, pid) for pid in sorted(set(pids))]
    return found


def _process_sample(pid: int) -> dict[str, float] | None:
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            times = process.cpu_times()
            return {"rss": process.memory_info().rss, "cpu": times.user + times.system,
                    "fds": process.num_fds(), "started": process.create_time()}
    except psutil.Error:
        return None


def _authenticate() -> None:
    """``GOALHUB_METRICS_TOKEN`` when set (compared in constant time), else the dashboard's check."""
    token = config.settings().METRICS_TOKEN
    if token is None:
        require_dashboard_access()
        return
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise Unauthorized("/metrics needs its bearer token (GOALHUB_METRICS_TOKEN)", code="token_missing")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized("wrong /metrics token", code="metrics_token")


@blueprint.get("/metrics")
def scrape() -> Response:
    _authenticate()
    registry = metrics.registry(RedisCollector())
    # Deferred: heavy, and imported only after metrics.registry set prometheus-client's mode.
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
