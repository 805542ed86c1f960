"""The RQ workers: goalhub's long-running job processes (the scheduler process is
``goalhub.scheduler``; the recovery of dead workers' jobs, ``goalhub.recovery``).

A worker loads the plugins before it starts, and prepares, once, what every job would
otherwise redo in each forked work-horse (``prepare_worker``): the plugins and the receivers
of each event, the goal types, the store (indexes ensured) and the modules receivers import
lazily. ``noop`` is a job that does nothing, already imported by every worker: the floor of
what one job costs on it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import psutil
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker, Worker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job
from rq.worker import BaseWorker

import goalhub
from goalhub import config, liveview, metrics, outbox, plugins, receivers, store, tasks, tracing  # noqa: F401  (tasks: the jobs, imported before forking)
from goalhub.connection import REDIS_GONE, get_redis, wait_for_redis
from goalhub.dispatch import UNFINISHED
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.liveness import worker_dead as _dead
from goalhub.plugins import get_plugin_manager
from goalhub.queues import all_queues, get_queue, get_scheduler
from goalhub.recovery import recover_abandoned_jobs
from goalhub.schema import PAYLOAD_VERSION
from goalhub.store import get_database

log = logging.getLogger(__name__)


def relay_accepted() -> list[str]:
    """Publish again the accepted goals whose create job is gone (``goalhub.outbox``): at a
    worker's start and each registry maintenance, so no scheduler is needed for it."""
    try:
        return outbox.requeue_accepted(get_database())
    except StopRequested:
        # RQ's SIGTERM handler raises it in an idle worker (a pool worker whose parent died):
        # swallowed here, the worker would never stop.
        raise
    except Exception:
        log.exception("could not publish accepted goals again; the next maintenance tries again")
        return []


def take_over(worker: BaseWorker) -> bool:
    """Before ``worker`` registers: when its name is held by a worker that is dead
    (``goalhub.liveness.worker_dead``: killed on this host, or its heartbeat expired), declare that one dead and recover its jobs
    now, so that a worker restarted under a fixed name (``--name``, systemd's
    ``goalhub-worker@``) starts at once instead of failing with RQ's "There exists an active
    worker named ..." until the old entry expires (up to ``worker_ttl + 60`` s). A name held
    by a live worker is left alone: RQ then refuses to start, as before. Returns whether it
    took over."""
    connection = worker.connection
    if not connection.exists(worker.key) or connection.hexists(worker.key, "death"):
        return False
    holder = Worker.find_by_key(worker.key, connection=connection)
    if holder is not None and not _dead(holder):
        return False
    if holder is not None:
        log.warning("worker %s: the previous worker of this name (pid %s on %s, last heartbeat %s) is dead; "
                    "taking over its name and recovering its jobs", worker.name, holder.pid, holder.hostname,
                    holder.last_heartbeat)
        holder.register_death()
    recover_abandoned_jobs(worker.queues)  # while the executions still name the dead worker
    return True


class _Listening(BaseWorker):
    """RQ's listener of the worker's command channel (a thread), stopped without the wait that
    held a worker's teardown for a minute. RQ unsubscribes, then stops the thread; when the
    thread reads the unsubscribe reply first (a busy machine), it finds itself unsubscribed and
    waits up to ``sleep_time`` (60 s) to be subscribed again, and redis-py 8.2's ``stop()``
    joins it without a timeout. Here the thread is told to stop first, then woken by a message
    on its channel that no command handler acts on; it then leaves and closes its connection
    itself (Redis drops the subscription with it), and nothing else writes on that connection
    meanwhile."""

    def unsubscribe(self) -> None:
        thread = self.pubsub_thread
        if not thread:
            return
        try:
            thread.stop(timeout=0)  # redis-py >= 8.2 joins in stop(): not here
        except TypeError:
            thread.stop()  # older ones only clear the flag
        try:
            self.connection.publish(self.pubsub_channel_name, json.dumps({"command": "wake"}))
        except RedisError:
            pass  # Redis gone: the thread is in RQ's reconnect loop, and a daemon
        thread.join(timeout=1)
        self.pubsub.close()


class _Measured(_Listening):
    """Records what each job's store writes waited for and held the embedded store's write lock
    (``goalhub.metrics.store_writes``), in the process that ran it (a work-horse hands its samples
    to its worker)."""

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        try:
            return super().perform_job(job, queue, *args, **kwargs)
        finally:
            metrics.store_writes("worker", *store.take_write_stats())


class _Traced(_Measured):
    """Runs each job in a span (``goalhub.tracing``: the child of the context its meta carries,
    so that it joins the trace of the work that enqueued it, or of its goal), and exports the
    job's spans when it ends: a forked work-horse exits without ``atexit``, and so does a pool
    worker. Nothing when tracing is off."""

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        if not tracing.enabled():
            return super().perform_job(job, queue, *args, **kwargs)
        attributes = {"messaging.system": "rq", "messaging.destination.name": queue.name,
                      "messaging.message.id": job.id, "goalhub.request_id": job.meta.get("request_id")}
        try:
            with tracing.span((job.func_name or "job").rpartition(".")[2], attributes, kind="consumer",
                              parent=job.meta.get(tracing.FIELD)) as span:
                done = super().perform_job(job, queue, *args, **kwargs)
                if not done:
                    span.error("the job failed (its error is in RQ's failed registry or its outcome)")
                return done
        finally:
            tracing.flush()


class _TakeOver(_Traced):
    """Takes over the name of a dead worker at birth (``take_over``), and refuses a job whose
    payload is newer than this code (``goalhub.schema.PAYLOAD_VERSION``)."""

    def register_birth(self) -> None:
        take_over(self)
        super().register_birth()

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        version = job.meta.get("payload_version", 1)
        if not isinstance(version, int) or version > PAYLOAD_VERSION:
            reason = (f"job {job.id} carries payload version {version!r}, newer than this worker's "
                      f"({PAYLOAD_VERSION}): upgrade this worker; the job stays in the failed registry "
                      "for `goalhub retry` or RQ's requeue once it is")
            log.error(reason)
            job.retries_left = 0  # the same worker would refuse it again
            self.handle_job_failure(job, queue=queue, exc_string=reason,
                                    execution=kwargs.get("execution", args[0] if args else None))
            return False
        return super().perform_job(job, queue, *args, **kwargs)


class RecoveringWorker(_TakeOver, Worker):
    """A forking RQ worker that takes over the name of a dead worker at start (``take_over``),
    recovers jobs of dead workers whenever it cleans registries (at start and every
    ``GOALHUB_MAINTENANCE_INTERVAL`` seconds), and records the metric samples of its
    work-horses itself (``goalhub.metrics``: handed over on a shared page)."""

    def clean_registries(self) -> None:
        recover_abandoned_jobs(self.queues)
        relay_accepted()
        metrics.compact()  # the metric files of this machine's finished processes
        super().clean_registries()

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        metrics.handoff_start()
        # This process's spans (its maintenance's) exported first: never fork mid-export, with
        # the exporter's connection locked in the horse's copy.
        tracing.flush()
        super().fork_work_horse(job, queue)

    def monitor_work_horse(self, job: Job, queue: Queue, execution: Execution) -> None:
        try:
            super().monitor_work_horse(job, queue, execution)
        finally:
            metrics.handoff_collect()  # the horse has exited, whichever way


class RecoveringSimpleWorker(_TakeOver, SimpleWorker):
    """``RecoveringWorker`` without forking."""

    def clean_registries(self) -> None:
        recover_abandoned_jobs(self.queues)
        relay_accepted()
        super().clean_registries()


def noop() -> None:
    """A job that does nothing (benchmarks' floor: a function the worker imported before forking)."""


def prepare_worker() -> None:
    """Everything a job would otherwise load in each forked work-horse, loaded once before forking."""
    import requests  # noqa: F401  (heavy, and optional for the core: outbound calls import it lazily; once here, not per horse)

    get_plugin_manager()
    for event in EVENT_HOOKS:
        receivers.receivers(event)
    plugins.goal_types()  # the goal types and their classes, worked out once (dispatch asks per receiver)
    get_database()  # the store opened and its indexes ensured; a horse reuses it (goalhub.store)
    tracing.configure("worker")  # the SDK imported once, when traces are configured, not in every horse
    metrics.prepare()  # prometheus-client imported once, not in every horse (about 20 ms each)
    for name in goalhub.__all__:  # the public names a plugin uses, imported lazily: once, here
        getattr(goalhub, name)


def run_worker(*, burst: bool = False, simple: bool = False, name: str | None = None, logging_level: str = "INFO") -> bool:
    """Work on goalhub's queues (lifecycle first). ``simple`` runs jobs in-process, without forking.

    Everything scheduled (activation at ``nbf``, end at ``exp``, receivers' retries after
    their backoff) is moved by the scheduler process (``goalhub.scheduler.run_scheduler``). Jobs of workers
    that died are recovered at start and every ``GOALHUB_MAINTENANCE_INTERVAL`` seconds.
    """
    prepare_worker()
    return work(RecoveringSimpleWorker if simple else RecoveringWorker, burst=burst, name=name,
                logging_level=logging_level)


def work(worker_class: type[Worker] | type[SimpleWorker], *, burst: bool = False, name: str | None = None,
         logging_level: str = "INFO", max_jobs: int | None = None) -> bool:
    """Run one worker of ``worker_class`` on goalhub's queues until it stops (``max_jobs``: after
    that many jobs), outliving a Redis outage. Returns whether it ran a job."""
    if not burst:  # a long-running worker: what it loaded, in the live view of plugin health
        liveview.start("worker")
    while True:
        worker = worker_class(all_queues(), connection=get_redis(), name=name, worker_ttl=config.settings().WORKER_TTL,
                              maintenance_interval=config.settings().MAINTENANCE_INTERVAL)
        try:
            return worker.work(burst=burst, with_scheduler=False, logging_level=logging_level, max_jobs=max_jobs)
        except REDIS_GONE as exc:
            # RQ's worker exits when Redis is gone as a job ends. Outlive the outage instead:
            # let the work-horse finish, wait for Redis, declare this worker dead (so its job
            # is recovered at once) and work again.
            if burst:
                raise
            log.error("worker %s lost Redis (%s); waiting for it", worker.name, exc)
            _wait_for_horse(worker)
            wait_for_redis()
            worker.register_death()
            name = None  # a new name: a job still filed under the dead one is seen abandoned


def _wait_for_horse(worker: BaseWorker) -> None:
    pid = getattr(worker, "horse_pid", 0)
    if pid:
        try:
            psutil.Process(pid).wait(timeout=config.settings().JOB_TIMEOUT + 10)
        except (psutil.NoSuchProcess, psutil.TimeoutExpired):
            pass


# --- without a worker process: run the queued jobs here (tests, ``goalhub fire``) ------------


def workers_alive() -> bool:
    """Whether an RQ worker is registered on goalhub's queues."""
    return Worker.count(connection=get_redis(), queue=get_queue()) > 0


class _LocalWorker(_Traced, SimpleWorker):
    """RQ's ``SimpleWorker``, its jobs traced (``goalhub fire``, tests)."""


def drain(*, scheduled: bool = True, rounds: int = 20, logging_level: str = "WARNING",
          with_scheduler: bool = False) -> None:
    """Run every queued job (and, ``scheduled``, the due scheduled ones) in this process with a
    real RQ ``SimpleWorker``, until the queues are empty or ``rounds`` bursts have run."""
    for _ in range(rounds):
        if scheduled:
            get_scheduler().enqueue_jobs()
        _LocalWorker(all_queues(), connection=get_redis()).work(
            burst=True, with_scheduler=with_scheduler, logging_level=logging_level)
        if not any(queue.count for queue in all_queues()):
            return


def wait_for_outcomes(fetch: Callable[[], tuple[list[dict[str, Any]], bool]], timeout: float, *,
                      on_retrying: Callable[[dict[str, Any]], None] = lambda outcome: None,
                      ) -> tuple[list[dict[str, Any]], bool]:
    """The outcomes ``fetch`` gives (with whether all are written yet) once all are written and
    none is unfinished; drains in-process when no worker runs. Returns them and whether they
    all finished in time. ``on_retrying`` is told once of each outcome that failed and waits
    for its retry (why the wait is long: the receiver's backoff)."""
    deadline = time.monotonic() + timeout
    local = not workers_alive()
    told: set[str] = set()
    while True:
        outcomes, complete = fetch()
        for o in outcomes:
            if o["status"] in ("retrying", "timed out") and o["_id"] not in told:
                told.add(o["_id"])
                on_retrying(o)
        if complete and not any(o["status"] in UNFINISHED for o in outcomes):
            return outcomes, True
        if time.monotonic() > deadline:
            return outcomes, False
        if local:
            # Receiver errors are reported in the outcomes, not as RQ's tracebacks.
            drain(rounds=1, logging_level="CRITICAL", with_scheduler=True)
        time.sleep(0.05 if local else 0.1)
