"""RQ queues, rq-scheduler's scheduled jobs, and the names goalhub gives its jobs.

Three queues, in the order a worker takes them: ``<prefix>-lifecycle`` for
``activate_goal``/``end_goal`` (time-critical, so a worker takes them before anything else),
``<prefix>`` for ``create_goal`` and the receiver jobs, and ``<prefix>-backfill`` for past
events delivered to a newly installed or resumed receiver (taken last: it never crowds out
live goals). Job ids are derived from what the job does, so that enqueuing the same
work twice names the same job.

``Scheduler`` is rq-scheduler's job store to the sub-second: what ``get_scheduler()`` returns
enqueues at an exact time, cancels, and moves due jobs. The scheduler *process* (its
heartbeat, the reconciler, the embedded store's purge) is ``goalhub.scheduler``.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import rq_scheduler
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.scheduler import RQScheduler
from rq.utils import current_timestamp

from goalhub import config
from goalhub.connection import get_redis
from goalhub.logs import job_meta


def queue_names() -> list[str]:
    """Queue names in the order a worker takes them."""
    prefix = config.settings().QUEUE_PREFIX
    return [f"{prefix}-lifecycle", prefix, f"{prefix}-backfill"]


def get_queue(kind: str = "default") -> Queue:
    """``lifecycle``, ``default`` or ``backfill``."""
    lifecycle, default, backfill = queue_names()
    name = {"lifecycle": lifecycle, "backfill": backfill}.get(kind, default)
    connection, timeout = get_redis(), config.settings().JOB_TIMEOUT
    key = (name, id(connection), timeout)
    queue = _queues.get(key)
    if queue is None or queue.connection is not connection:
        queue = _queues[key] = Queue(name, connection=connection, default_timeout=timeout)
    return queue


# (name, client, timeout) -> its Queue: made once per process, not on every enqueue.
_queues: dict[tuple[str, int, int], Queue] = {}


def all_queues() -> list[Queue]:
    return [get_queue("lifecycle"), get_queue("default"), get_queue("backfill")]


class Scheduler(rq_scheduler.Scheduler):
    """rq-scheduler to the sub-second (the process that runs it: ``goalhub.scheduler``).
    rq-scheduler truncates a job's time and "now" to whole
    seconds, so it moved a job up to a second early and ``activate_goal`` waited out the rest
    inside a worker, holding it from other jobs. Here a job keeps its exact epoch time as its
    score and is moved once that time has come."""

    def enqueue_at(self, scheduled_time: datetime, func: Any, *args: Any, **kwargs: Any) -> Any:
        at = scheduled_time.timestamp() if scheduled_time.tzinfo else scheduled_time.replace(tzinfo=UTC).timestamp()
        # rq-scheduler stores whole seconds: give it the next one (never early), then the exact time.
        job = super().enqueue_at(datetime.fromtimestamp(math.ceil(at), tz=UTC), func, *args, **kwargs)
        self.connection.zadd(self.scheduled_jobs_key, {job.id: at})
        return job

    def get_jobs_to_queue(self, with_times: bool = False) -> Any:
        return self.get_jobs(time.time(), with_times=with_times)

    def enqueue_jobs(self) -> Any:
        """Move due lifecycle jobs, and the due jobs of RQ's own scheduled registries (the
        retries of failed receivers, after their backoff). goalhub's workers run without RQ's
        built-in scheduler, which lives in a process forked by a worker and outlives it when
        the worker is killed; this process is the one place that schedules."""
        jobs = super().enqueue_jobs()
        if not hasattr(self, "_rq_scheduler"):
            self._rq_scheduler = RQScheduler(all_queues(), connection=self.connection)
        self._rq_scheduler.acquire_locks()  # per queue, so two schedulers never move a retry twice
        try:
            self._rq_scheduler.enqueue_scheduled_jobs()
        finally:
            # A one-shot move lets go at once; the scheduler process (goalhub.scheduler) keeps
            # them between polls and lets go when it stops, so another need not wait for expiry.
            if not getattr(self, "_running", False):
                self._rq_scheduler.release_locks()
        return jobs

    def due(self) -> bool:
        """Whether a job is due to move: a lifecycle job whose time came, or a job of RQ's
        scheduled registries (a receiver's retry) whose whole second came, as RQ counts it.
        One round trip; ``enqueue_jobs`` moves them."""
        if not hasattr(self, "_registry_keys"):
            self._registry_keys = [queue.scheduled_job_registry.key for queue in all_queues()]
        now, whole_second = time.time(), current_timestamp()
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.zrangebyscore(self.scheduled_jobs_key, "-inf", now, start=0, num=1)
            for key in self._registry_keys:
                pipe.zrangebyscore(key, 0, whole_second, start=0, num=1)
            return any(pipe.execute())


def get_scheduler(interval: float | None = None) -> Scheduler:
    """The rq-scheduler that holds ``activate_goal``/``end_goal`` jobs until they are due, to
    enqueue, cancel or list them (the process that moves them: ``goalhub.scheduler.process``)."""
    return Scheduler(
        queue=get_queue("lifecycle"),
        connection=get_redis(),
        interval=interval if interval is not None else config.settings().SCHEDULER_INTERVAL,
    )


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{0,64}")


def job_id(kind: str, key: str) -> str:
    """An RQ job id (``[A-Za-z0-9_-]+``) for ``kind`` of work on ``key``."""
    if _PLAIN_KEY.fullmatch(key):
        return f"{kind}-{key}"
    return f"{kind}-{hashlib.sha1(key.encode()).hexdigest()}"


def job_parts(jid: str) -> tuple[str, str]:
    """(kind, key) of a job id ``job_id`` made (the key as given, or its digest if it was not plain)."""
    kind, _, key = jid.partition("-")
    return kind, key


def retry_policy() -> Retry | None:
    """How a failing job is retried: ``GOALHUB_RECEIVER_RETRIES`` times with backoff (0: never)."""
    retries = config.settings().RECEIVER_RETRIES
    return Retry(max=retries, interval=list(config.settings().RECEIVER_BACKOFF)) if retries > 0 else None


# Failed jobs are kept a week, for ``goalhub retry`` and the dashboard.
FAILURE_TTL = 7 * 24 * 3600

# Job states in which a job will still run: enqueuing it again would only run it twice.
PENDING = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED})


def enqueue_once(queue: Queue, func: Any, *args: Any, job_id: str, delay: float = 0, fresh: bool = False,
                 **options: Any) -> Job | None:
    """Enqueue ``func(*args)`` as ``job_id`` with goalhub's retry policy (after ``delay`` seconds:
    RQ's scheduled registry, moved by the scheduler process), unless a job of that id is still
    pending (then None). ``fresh``: the id was made just now, no job of it can exist, and the
    check (a round trip) is skipped. Failed jobs are kept a week for ``goalhub retry`` and the
    dashboard."""
    if not fresh:
        existing = Job.fetch_many([job_id], connection=queue.connection)[0]
        if existing is not None and existing.get_status(refresh=False) in PENDING:
            return None
    options.setdefault("retry", retry_policy())
    options.setdefault("failure_ttl", FAILURE_TTL)
    options["meta"] = job_meta(options.get("meta"))  # the request id travels with the job
    if delay > 0:
        return queue.enqueue_in(timedelta(seconds=delay), func, *args, job_id=job_id, **options)
    with queue.connection.pipeline() as pipe:  # one round trip: RQ alone makes two
        job = queue.enqueue(func, *args, job_id=job_id, pipeline=pipe, **options)
        pipe.zadd(enqueued_key(), {job_id: time.time()})  # watched until it starts (goalhub.recovery)
        pipe.execute()
    return job


def enqueued_key() -> str:
    """The jobs goalhub enqueued that have not been seen started yet (a sorted set by time):
    ``goalhub.recovery.requeue_lost_jobs`` looks there for a job a dying worker took off its queue."""
    return f"{config.settings().QUEUE_PREFIX}:enqueued"
