"""``GET /metrics``: Prometheus metrics of every goalhub process on this machine.

Protected like the dashboard (HTTP Basic with ``GOALHUB_DASHBOARD_USER``/``PASSWORD``, or a
bearer token with the ADMIN scope): Prometheus sends either (``basic_auth`` or
``authorization`` in its scrape config). The counters and histograms come from the
multiprocess files of every process (``goalhub.metrics``); the gauges are read from Redis
at each scrape: queue depth, scheduled lifecycle jobs, the scheduler's last poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response

from goalhub import breaker, metrics, scheduler
from goalhub.api.access import require_dashboard_access
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
        beats = scheduler.schedulers()
        age = min((time.time() - beat["last_poll"] for beat in beats), default=float("inf"))
        yield GaugeMetricFamily("goalhub_scheduler_last_poll_age_seconds",
                                "Seconds since the most recent poll of any scheduler (+Inf: none)", value=age)
        tripped = GaugeMetricFamily("goalhub_receiver_tripped",
                                    "1 for a receiver paused by its circuit breaker (goalhub resume closes it)",
                                    labels=["receiver"])
        for receiver_id in breaker.tripped():
            tripped.add_metric([receiver_id], 1)
        yield tripped


@blueprint.get("/metrics")
def scrape() -> Response:
    require_dashboard_access()
    registry = metrics.registry(RedisCollector())
    # Deferred: heavy, and imported only after metrics.registry set prometheus-client's mode.
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
