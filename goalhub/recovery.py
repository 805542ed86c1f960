"""Recovery of jobs a dead worker left behind, apart from the workers (as rq keeps its
``maintenance`` apart from its ``worker``).

``recover_abandoned_jobs``: a job left ``started`` by a worker that is gone is handed to RQ's
own abandoned-job handling at once, not after RQ's heartbeat expiry and maintenance interval
(run by every goalhub worker when it cleans its registries). ``requeue_lost_jobs``: a job a
worker took off its queue and died before starting is put back (run by the reconciler,
``goalhub.scheduler``).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Collection, Iterator

import redis
from rq import Queue, Worker
from rq.executions import Execution
from rq.job import Job, JobStatus

from goalhub.connection import get_redis
from goalhub.liveness import worker_dead
from goalhub.queues import all_queues, enqueued_key

log = logging.getLogger(__name__)


def recover_abandoned_jobs(queues: list[Queue] | None = None, dead: Collection[str] = ()) -> list[str]:
    """Hand jobs left ``started`` by a dead worker to RQ's abandoned-job handling now.

    RQ notices an abandoned job only once its heartbeat expires (about 90 s after the
    worker's last beat) *and* a worker's registry maintenance runs (every 10 min): a job
    whose worker and work-horse were killed stays ``started`` that long. Here such a job's
    entry is marked expired and ``StartedJobRegistry.cleanup`` retries it (if it has retries
    left) or moves it to the failed registry, as it would have done later. Returns the ids.

    ``dead``: names of workers known to be dead (a pool's parent reaped them), whatever their
    registration says: after Redis lost its data, a worker's next heartbeat writes back a
    registration with no pid or host, from which nobody else can tell that it died.
    """
    connection = get_redis()
    recovered: list[str] = []
    for queue in queues or all_queues():
        registry = queue.started_job_registry
        # One process at a time per queue: two cleanups of one entry could retry it twice.
        lock = f"goalhub:recover-abandoned:{queue.name}"
        if not connection.set(lock, socket.gethostname(), nx=True, ex=30):
            continue
        try:
            abandoned = {}
            for job_id, execution_id, name in _started(queue):
                # An execution whose record expired has no worker left to finish it either.
                if name is None and connection.zscore(registry.key, f"{job_id}:{execution_id}") is None:
                    continue  # it just ended: its worker removed the entry after the listing, then the record
                worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name,
                                            connection=connection) if name else None
                if name in dead or worker_dead(worker):  # the verdict's one owner: goalhub.liveness
                    abandoned[f"{job_id}:{execution_id}"] = 0
                    recovered.append(job_id)
            if abandoned:
                unstarted = _unstarted([key.split(":", 1)[0] for key in abandoned], connection)
                connection.zadd(registry.key, abandoned, xx=True)
                registry.cleanup(timestamp=0)
                for job in unstarted:
                    # Taken by a worker that died before its work-horse marked the job started:
                    # RQ's cleanup skips (and so drops) it, as if it had finished. Queue it again.
                    connection.lrem(queue.intermediate_queue_key, 0, job.id)
                    queue.enqueue_job(job)
                log.warning("recovered jobs abandoned by dead workers on %s: %s", queue.name, sorted(abandoned))
        finally:
            connection.delete(lock)
    return recovered


def _started(queue: Queue) -> Iterator[tuple[str, str, str | None]]:
    """(job id, execution id, the name of the worker its execution record names, None when the
    record is gone) of each entry of the queue's started registry."""
    connection = get_redis()
    for job_id, execution_id in queue.started_job_registry.get_job_and_execution_ids(cleanup=False):
        name: bytes | None = connection.hget(  # type: ignore[assignment]
            Execution(execution_id, job_id, connection).key, "worker_name")
        yield job_id, execution_id, name.decode() if name is not None else None


def held_by(worker_names: set[str], queues: list[Queue] | None = None) -> list[str]:
    """Ids of the jobs still ``started`` under one of ``worker_names`` in the queues' started
    registries (whose executions name the worker): what a recovery of their jobs has yet to take."""
    if not worker_names:
        return []
    return [job_id for queue in queues or all_queues() for job_id, _, name in _started(queue) if name in worker_names]


# A job queued in no queue list and no registry this long, seen so twice, was taken by a worker
# that died before starting it (a worker starts a job it took within milliseconds).
LOST_AFTER = 5.0


def requeue_lost_jobs(now: float | None = None) -> list[str]:
    """Put back on its queue every job goalhub enqueued that a worker took off the queue and died
    before starting: RQ takes a job from several queues with BLPOP, and until the worker adds it
    to the started registry the job is in no list and no registry, seen by no recovery. Run by
    the reconciler. A job counts as lost when it is ``queued`` yet in neither its queue nor its
    started registry at two checks ``LOST_AFTER`` seconds apart (one check could fall in the
    milliseconds a live worker takes between the two). Returns the ids put back."""
    connection = get_redis()
    key = enqueued_key()
    now = time.time() if now is None else now
    entries: list[bytes] = connection.zrangebyscore(key, "-inf", now - LOST_AFTER)  # type: ignore[assignment]
    ids = [raw.decode() for raw in entries]
    if not ids:
        return []
    known = {queue.name: queue for queue in all_queues()}
    waiting: dict[str, set[str]] = {}  # per queue: the ids in its list, read once
    requeued: list[str] = []
    cleared: list[str] = []
    queued = _unstarted(ids, connection)
    still = {job.id for job in queued}
    done = [job_id for job_id in ids if job_id not in still]  # started, ended or expired: watched no more
    for job in queued:
        job_id = job.id
        if job.origin not in known:  # a queue goalhub does not name (a plugin's own)
            known[job.origin] = Queue(job.origin, connection=connection)
        queue = known[job.origin]
        if queue.name not in waiting:
            listed: list[bytes] = connection.lrange(queue.key, 0, -1)  # type: ignore[assignment]
            waiting[queue.name] = {raw.decode() for raw in listed}
        suspect = f"{key}:suspect:{job_id}"
        if job_id in waiting[queue.name] or job_id in queue.started_job_registry:
            cleared.append(suspect)  # where it belongs: any earlier sighting no longer counts
            continue
        if connection.set(suspect, now, nx=True, ex=int(LOST_AFTER * 20)):
            continue  # the first sighting: look again at the next check
        if now - float(connection.get(suspect) or now) < LOST_AFTER:
            continue
        connection.delete(suspect)
        queue.enqueue_job(job)
        connection.zadd(key, {job_id: now})
        requeued.append(job_id)
        log.warning("requeued job %s: a worker took it off %s and died before starting it", job_id, queue.name)
    if done:
        connection.zrem(key, *done)
    if cleared:
        connection.delete(*cleared)
    return requeued


def _unstarted(job_ids: list[str], connection: redis.Redis) -> list[Job]:
    return [job for job in Job.fetch_many(job_ids, connection=connection)
            if job is not None and job.get_status(refresh=False) == JobStatus.QUEUED]
