"""The long-running processes: RQ workers and the rq-scheduler.

Both load the plugins before they start. A worker also prepares, once, what every job would
otherwise redo in each forked work-horse (``prepare_worker``): the plugins and the receivers
of each event, the goal types, the store (indexes ensured) and the modules receivers import
lazily. ``noop`` is a job that does nothing, already imported by every worker: the floor of
what one job costs on it.
"""

from __future__ import annotations

import logging
import socket
import time

import psutil
import redis
from rq import Queue, SimpleWorker, Worker
from rq.executions import Execution
from rq.job import Job, JobStatus

from goalhub import config, liveview, metrics, plugins
from goalhub.connection import get_redis
from goalhub.plugins import get_plugin_manager
from goalhub.queues import all_queues, enqueued_key, get_scheduler

log = logging.getLogger(__name__)

REDIS_GONE = (redis.ConnectionError, redis.TimeoutError)


def _dead(worker: Worker | None) -> bool:
    """Whether a worker is surely gone: its registration expired, or it ran on this host
    and its process no longer runs (kill -9, OOM). A worker on another host that stopped
    answering is left to RQ's own expiry."""
    if worker is None or worker.death_date is not None:
        return True
    if not worker.pid or worker.hostname != socket.gethostname():
        return False
    try:
        return psutil.Process(worker.pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def recover_abandoned_jobs(queues: list[Queue] | None = None) -> list[str]:
    """Hand jobs left ``started`` by a dead worker to RQ's abandoned-job handling now.

    RQ notices an abandoned job only once its heartbeat expires (about 90 s after the
    worker's last beat) *and* a worker's registry maintenance runs (every 10 min): a job
    whose worker and work-horse were killed stays ``started`` that long. Here such a job's
    entry is marked expired and ``StartedJobRegistry.cleanup`` retries it (if it has retries
    left) or moves it to the failed registry, as it would have done later. Returns the ids.
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
            for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
                # An execution whose record expired has no worker left to finish it either.
                name = connection.hget(Execution(execution_id, job_id, connection).key, "worker_name")
                worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name.decode(),
                                            connection=connection) if name else None
                if _dead(worker):
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
    ids = [raw.decode() for raw in connection.zrangebyscore(key, "-inf", now - LOST_AFTER)]
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
            waiting[queue.name] = {raw.decode() for raw in connection.lrange(queue.key, 0, -1)}
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


class RecoveringWorker(Worker):
    """A forking RQ worker that recovers jobs of dead workers whenever it cleans registries
    (at start and every ``GOALHUB_MAINTENANCE_INTERVAL`` seconds), and records the metric
    samples of its work-horses itself (``goalhub.metrics``: handed over on a shared page)."""

    def clean_registries(self) -> None:
        recover_abandoned_jobs(self.queues)
        metrics.compact()  # the metric files of this machine's finished processes
        super().clean_registries()

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        metrics.handoff_start()
        super().fork_work_horse(job, queue)

    def monitor_work_horse(self, job: Job, queue: Queue, execution: Execution) -> None:
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.handoff_collect()  # the horse has exited, whichever way


class RecoveringSimpleWorker(SimpleWorker):
    """``RecoveringWorker`` without forking."""

    def clean_registries(self) -> None:
        recover_abandoned_jobs(self.queues)
        super().clean_registries()


def noop() -> None:
    """A job that does nothing (benchmarks' floor: a function the worker imported before forking)."""


def prepare_worker() -> None:
    """Everything a job would otherwise load in each forked work-horse, loaded once before forking."""
    import requests  # noqa: F401  (outbound calls import it lazily: once here, not per horse)

    from goalhub import dispatch, tasks  # noqa: F401  (connects the core to its signals)
    from goalhub.hookspecs import EVENT_HOOKS
    from goalhub.store import get_database

    get_plugin_manager()
    for event in EVENT_HOOKS:
        dispatch.receivers(event)
    plugins.goal_types()  # the goal types and their classes, worked out once (dispatch asks per receiver)
    get_database()  # the store opened and its indexes ensured; a horse reuses it (goalhub.store)
    metrics.prepare()  # prometheus-client imported once, not in every horse (about 20 ms each)
    import goalhub

    for name in goalhub.__all__:  # the public names a plugin uses, imported lazily: once, here
        getattr(goalhub, name)


def run_worker(*, burst: bool = False, simple: bool = False, name: str | None = None, logging_level: str = "INFO") -> bool:
    """Work on goalhub's queues (lifecycle first). ``simple`` runs jobs in-process, without forking.

    Everything scheduled (activation at ``nbf``, end at ``exp``, receivers' retries after
    their backoff) is moved by the scheduler process (``run_scheduler``). Jobs of workers
    that died are recovered at start and every ``GOALHUB_MAINTENANCE_INTERVAL`` seconds.
    """
    prepare_worker()
    if not burst:  # a long-running worker: what it loaded, in the live view of plugin health
        liveview.start("worker")
    worker_class = RecoveringSimpleWorker if simple else RecoveringWorker
    while True:
        worker = worker_class(all_queues(), connection=get_redis(), name=name,
                              maintenance_interval=config.maintenance_interval())
        try:
            return worker.work(burst=burst, with_scheduler=False, logging_level=logging_level)
        except REDIS_GONE as exc:
            # RQ's worker exits when Redis is gone as a job ends. Outlive the outage instead:
            # let the work-horse finish, wait for Redis, declare this worker dead (so its job
            # is recovered at once) and work again.
            if burst:
                raise
            log.error("worker %s lost Redis (%s); waiting for it", worker.name, exc)
            _wait_for_horse(worker)
            _wait_for_redis()
            worker.register_death()


def run_scheduler(*, interval: float | None = None, burst: bool = False) -> None:
    """Run rq-scheduler: moves due ``activate_goal``/``end_goal`` jobs to the lifecycle queue.
    A Redis outage pauses it; it goes on once Redis is back (scheduled jobs are kept there)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s scheduler %(message)s")
    while True:
        try:
            return get_scheduler(interval if interval is not None else config.scheduler_interval()).run(burst=burst)
        except REDIS_GONE as exc:
            if burst:
                raise
            log.error("scheduler lost Redis (%s); waiting for it", exc)
            _wait_for_redis()


def _wait_for_horse(worker: Worker) -> None:
    pid = getattr(worker, "horse_pid", 0)
    if pid:
        try:
            psutil.Process(pid).wait(timeout=config.job_timeout() + 10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass


def _wait_for_redis(pause: float = 0.5) -> None:
    while True:
        try:
            if get_redis().ping():
                return
        except REDIS_GONE:
            time.sleep(pause)
