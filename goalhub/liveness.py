"""Who is doing the work: live RQ workers by queue, schedulers that polled, and the verdict
``/healthz/deep`` and ``/readyz`` give on them (issue 24).

The schedulers' heartbeats live here: ``record_poll`` (called by ``goalhub.scheduler`` at each
poll), ``beats`` and ``lock_holder`` (the dashboard, ``/metrics``).

A worker is dead (``worker_dead``) when its registration is gone or marks its death, when its
last heartbeat is older than ``GOALHUB_WORKER_TTL`` (or ``GOALHUB_JOB_TIMEOUT``, if longer) + 60 s
(a live goalhub worker beats at least every ``GOALHUB_WORKER_TTL - 15`` s, and while a forking
worker's horse runs, every 30 s), or when it ran on this host and its process no longer runs.
Recovery (``goalhub.recovery``) and a worker taking over a dead one's name act on the same verdict: one owner for "is this worker dead".

``work()`` says what is missing: ``no_worker`` when no live worker has been seen for
``GOALHUB_LIVENESS_WINDOW`` seconds (a worker restarting under systemd is not a problem),
``no_scheduler`` when no scheduler polled within that window.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

from rq import Worker
from rq.worker import BaseWorker
from rq_scheduler import Scheduler as RQScheduler  # its lock key

from goalhub import config, processes
from goalhub.connection import get_redis
from goalhub.queues import queue_names

BEAT_EVERY = 1.0
BEAT_TTL = 60


def key(*parts: str) -> str:
    """A Redis key of goalhub's liveness records (under the queue prefix)."""
    return ":".join((config.settings().QUEUE_PREFIX, *parts))


def beats() -> list[dict[str, Any]]:
    """The schedulers that polled within the last minute, most recent first."""
    connection = get_redis()
    found = []
    for beat_key in connection.scan_iter(match=key("scheduler", "*"), count=100):
        raw: dict[bytes, bytes] = connection.hgetall(beat_key)  # type: ignore[assignment]
        if not raw:
            continue
        beat = {k.decode(): v.decode() for k, v in raw.items()}
        found.append({"name": beat.get("name", ""), "host": beat.get("host", ""),
                      "pid": int(beat.get("pid", 0) or 0), "last_poll": float(beat.get("last_poll", 0) or 0),
                      "interval": float(beat.get("interval", 0) or 0)})
    return sorted(found, key=lambda b: -b["last_poll"])


def lock_holder() -> dict[str, Any]:
    """Who took rq-scheduler's lock last, when, and whether the lock is held right now."""
    connection = get_redis()
    values: list[bytes | None] = connection.mget(  # type: ignore[assignment]
        key("scheduler-lock-holder"), key("scheduler-lock-taken"))
    holder, taken = values
    return {"holder": holder.decode() if holder else None, "taken_at": float(taken) if taken else None,
            "held_now": bool(connection.exists(RQScheduler.scheduler_lock_key))}


def record_poll(scheduler: Any, *, holds_lock: bool, force: bool = False) -> bool:
    """Record that ``scheduler`` (goalhub's rq-scheduler process) polled, and whether it holds
    rq-scheduler's lock; at most once every ``BEAT_EVERY`` seconds unless it holds the lock or
    ``force``. Returns whether it was recorded."""
    now = time.time()
    if not force and not holds_lock and now - getattr(scheduler, "_goalhub_beat", 0.0) < BEAT_EVERY:
        return False
    connection = scheduler.connection
    with connection.pipeline() as pipe:
        pipe.hset(key("scheduler", scheduler.name), mapping={
            "name": scheduler.name, "host": socket.gethostname(), "pid": scheduler.pid,
            "last_poll": now, "interval": scheduler._interval,
        })
        pipe.expire(key("scheduler", scheduler.name), BEAT_TTL)
        if holds_lock:
            pipe.set(key("scheduler-lock-holder"), scheduler.name, ex=BEAT_TTL)
            pipe.set(key("scheduler-lock-taken"), now, ex=BEAT_TTL)
        pipe.execute()
    scheduler._goalhub_beat = now
    return True


def _age(moment: datetime | None) -> float:
    if moment is None:
        return float("inf")
    return (datetime.now(UTC) - moment.replace(tzinfo=UTC) if moment.tzinfo is None
            else datetime.now(UTC) - moment).total_seconds()


def worker_dead(worker: BaseWorker | None) -> bool:
    """Whether a worker is surely gone (see the module's docstring). A pid equal to this very
    process's is dead too: a container's pid 1 restarted finds its former self's entry."""
    if worker is None or worker.death_date is not None:
        return True
    # A simple worker does not beat while it runs a job (at most the job timeout).
    if _age(worker.last_heartbeat) > max(config.settings().WORKER_TTL, config.settings().JOB_TIMEOUT) + 60:
        return True
    if worker.pid and worker.pid == os.getpid() and worker.hostname == socket.gethostname():
        return True
    return _process_gone(worker.hostname or "", worker.pid or 0)


def _process_gone(host: str, pid: int) -> bool:
    """A process that ran on this host and runs no more (a zombie counts as gone)."""
    if not pid or host != socket.gethostname() or pid == os.getpid():
        return False
    return processes.gone(pid)


def schedulers() -> list[dict[str, Any]]:
    """The schedulers' heartbeats (``beats``) but those of a scheduler that ran on this host and
    has stopped (its heartbeat outlives it by up to a minute)."""
    return [beat for beat in beats() if not _process_gone(beat["host"], beat["pid"])]


def registered_workers() -> list[BaseWorker]:
    """Every worker registered on goalhub's queues, dead ones not yet expired included."""
    connection = get_redis()
    names = set(queue_names())
    return [worker for worker in Worker.all(connection=connection) if names & set(worker.queue_names())]


def live_by_queue(workers: list[BaseWorker] | None = None) -> dict[str, int]:
    """How many live workers listen on each of goalhub's queues (0 included)."""
    counts = dict.fromkeys(queue_names(), 0)
    for worker in registered_workers() if workers is None else workers:
        if not worker_dead(worker):
            for name in worker.queue_names():
                if name in counts:
                    counts[name] += 1
    return counts


def work() -> dict[str, Any]:
    """Live workers by queue, schedulers seen, and the problems (``no_worker``, ``no_scheduler``)."""
    window = config.settings().LIVENESS_WINDOW
    workers = registered_workers()
    live = [worker for worker in workers if not worker_dead(worker)]
    # A dead worker still registered was last seen at its death or its last heartbeat.
    last_seen = 0.0 if live else min((_age(w.death_date or w.last_heartbeat) for w in workers), default=float("inf"))
    beats = schedulers()
    poll_age = min((time.time() - beat["last_poll"] for beat in beats), default=float("inf"))
    problems = []
    if last_seen > window:
        problems.append("no_worker")
    if poll_age > window:
        problems.append("no_scheduler")
    return {
        "workers": live_by_queue(live),
        "schedulers": sum(1 for beat in beats if time.time() - beat["last_poll"] <= window),
        "scheduler_last_poll_age": None if poll_age == float("inf") else round(poll_age, 3),
        "problems": problems,
    }


def local_processes() -> dict[str, list[int]]:
    """The pids of goalhub's workers and schedulers on this host, by role (for process metrics)."""
    host = socket.gethostname()
    found: dict[str, list[int]] = {"worker": [], "scheduler": []}
    for worker in registered_workers():
        if worker.hostname == host and worker.pid and not worker_dead(worker):
            found["worker"].append(int(worker.pid))
    for beat in schedulers():
        if beat["host"] == host and beat["pid"]:
            found["scheduler"].append(int(beat["pid"]))
    return found
