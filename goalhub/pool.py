"""``goalhub worker --pool N``: N non-forking RQ workers under one parent, RQ's ``WorkerPool``.

A forking worker pays a ``fork`` (and the page faults of a fresh process) for every job. Here
the parent loads, once, everything a job needs (``prepare_worker``: the plugins and their
receivers, the goal types, the store, the metrics), freezes it out of the garbage collector
(``gc.freeze``, as frappe's pool does: a collection in a child then never writes to, and so
never copies, the pages it shares with the parent) and forks N workers that each run jobs in
their own process, one after another, without forking again.

What a forking worker gave by construction is kept:

- **A worker that dies** (``kill -9``, a segfault, the OOM killer) is replaced by the parent
  at its next check (about a second: RQ's ``WorkerPool`` loop), and the job it held is
  recovered at once (``recover_abandoned_jobs``): RQ retries it, under the outcome guards that
  make a re-run apply nothing twice, instead of waiting for its heartbeat to expire (90 s).
- **A job that overruns its timeout** is stopped inside the worker by RQ's death penalty
  (``SIGALRM``: jobs run in each worker's main thread), and receivers' budgets nest in it as
  before (``goalhub.budget``). A job that does not return to Python when the alarm fires (a C
  extension stuck in a call) is seen by the parent once it is ``STUCK_GRACE`` seconds past its
  timeout: the worker is killed, replaced, and the job recovered like any other.
- **A worker is recycled** between jobs after ``GOALHUB_WORKER_MAX_JOBS`` jobs or once its
  resident memory grew ``GOALHUB_WORKER_MAX_RSS_GROWTH`` MiB: it stops after its job (RQ's
  ``max_jobs``, or a stop request) and the parent starts a fresh one.
- **The parent dies**: each worker is asked to stop after its job (``PR_SET_PDEATHSIG`` with
  ``SIGTERM``, Linux), so no orphan keeps working unsupervised; its job is finished, or, if it
  is killed too, recovered by the next worker's maintenance. A worker that missed the signal's
  stop sees at its next heartbeat (between jobs, and in every turn of its idle loop, at most
  RQ's dequeue timeout apart) that its pool is gone, and stops.

The embedded store's WAL: SQLite copies it back into the database file inside the commit that
takes it past 1,000 pages, stalling that job's commit for 10-30 ms (about one goal in ten: its
p95). A pool worker checkpoints after a job instead, at most every ``CHECKPOINT_EVERY`` seconds
(``PoolWorker._checkpoint``), and its commits only past ``store.DEFERRED_CHECKPOINT_PAGES``.
What the last jobs of a burst left uncopied it checkpoints at its next plain heartbeat once
idle (its idle loop beats at least every RQ dequeue timeout, 45 s with the default
``GOALHUB_WORKER_TTL``).
Its writers also wait their turn on the store's writers file, woken as soon as the last writer
lets go, instead of sleeping 1-10 ms at a time in SQLite's busy handler (``store.tune_for_jobs``).

Metrics: each worker writes its own pair of prometheus-client files for its whole life, not
one per job (``goalhub.metrics``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import time
from multiprocessing import get_context
from multiprocessing.process import BaseProcess

import psutil
from redis.client import Pipeline
from rq import Queue
from rq.exceptions import StopRequested
from rq.job import Job
from rq.utils import now as utc_now
from rq.worker import Worker, WorkerStatus
from rq.worker_pool import WorkerData, WorkerPool

from goalhub import config, liveview, metrics, store
from goalhub.budget import raise_if_stop
from goalhub.connection import REDIS_GONE, get_redis
from goalhub.queues import all_queues
from goalhub.recovery import held_by, recover_abandoned_jobs
from goalhub.worker import RecoveringSimpleWorker, prepare_worker, work

log = logging.getLogger(__name__)

# Seconds past its job's timeout before the parent kills a worker whose job the alarm did not stop.
STUCK_GRACE = 10.0
# Seconds the parent keeps trying to recover a dead worker's job before leaving it to the net.
RECOVER_PATIENCE = 60.0
# Seconds within which a pool worker's plain heartbeats after the last one are left out.
BEAT_EVERY = 1.0
# Seconds at least between a pool worker's checkpoints of the embedded store's WAL, each after a
# job: 0.25 s is about as many pages as SQLite's 1,000 at 50 goals/s; one after every job cost
# 4.3-5 ms per goal (a checkpoint syncs twice), against 1.9 ms so.
CHECKPOINT_EVERY = 0.25
_PR_SET_PDEATHSIG = 1
_MIB = 1024 * 1024


class PoolWorker(RecoveringSimpleWorker):
    """A non-forking worker of the pool: it stops between jobs once its memory grew
    ``GOALHUB_WORKER_MAX_RSS_GROWTH`` MiB past what it had at its first job (the pool then
    starts a new one), and compacts the metric files of gone processes at its maintenance."""

    _rss_baseline: int | None = None
    _beat_at = float("-inf")
    _checkpoint_at = float("-inf")
    _uncopied = False  # a job ran since the last checkpoint
    _me: psutil.Process | None = None  # this worker's process, for its memory after each job

    def clean_registries(self) -> None:
        metrics.compact()  # files of recycled or dead workers (one pair each, not one per job)
        super().clean_registries()

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ beats three or four times around every job, each beat three round trips to Redis;
        a pool worker runs jobs back to back, so a plain beat within ``BEAT_EVERY`` seconds of
        the last one is left out. Every beat sets the registration's lifetime to at least a
        minute, and a beat with its own lifetime or inside a pipeline (the start of a job) is
        always sent.

        A plain beat is also where a worker whose pool died stops, when the death signal did not
        stop it (an exception handler on the way swallowed RQ's ``StopRequested``: an orphan was
        found still retrying Redis a quarter of an hour later): the beats come between jobs and
        in every turn of the idle loop, where RQ's loop takes ``StopRequested`` as a stop."""
        now = time.monotonic()
        if timeout is None and pipeline is None:
            if _orphaned():
                raise StopRequested()
            if self._uncopied and now - self._checkpoint_at >= CHECKPOINT_EVERY:
                self._checkpoint()  # idle after a burst: what its last jobs wrote
            if now - self._beat_at < BEAT_EVERY:
                return
        self._beat_at = now
        super().heartbeat(timeout, pipeline)

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        """RQ sets ``idle`` after each job and again as its loop turns to the next: the second
        (a round trip) is left out when nothing set another state between them."""
        if pipeline is None and state == WorkerStatus.IDLE and self._state == WorkerStatus.IDLE:
            return
        super().set_state(state, pipeline)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """RQ writes the job's ``last_heartbeat`` here in a round trip of its own (from RQ 2.0 on that
        field is all its heartbeat writes: no registry reads it); the job's hash is written whole
        a moment later, in the transaction that records its result, with this time in it."""
        job.ended_at = job.last_heartbeat = utc_now()

    def execute_job(self, job: Job, queue: Queue) -> None:
        super().execute_job(job, queue)
        self._uncopied = True
        if time.monotonic() - self._checkpoint_at >= CHECKPOINT_EVERY:
            self._checkpoint()
        limit = config.settings().WORKER_MAX_RSS_GROWTH
        if not limit:
            return
        if self._me is None or self._me.pid != os.getpid():
            self._me = psutil.Process()  # once: building one costs about 20 us a job
        rss = self._me.memory_info().rss
        if self._rss_baseline is None:
            self._rss_baseline = rss  # after one job: what every job warms up is in the baseline
        elif rss - self._rss_baseline > limit * _MIB:
            log.warning("worker %s grew %d MiB (GOALHUB_WORKER_MAX_RSS_GROWTH=%d); replacing it",
                        self.name, (rss - self._rss_baseline) // _MIB, limit)
            self._stop_requested = True  # RQ's loop stops before taking the next job


    def _checkpoint(self) -> None:
        """Checkpoint the embedded store's WAL after a job (its outcomes are written), not inside
        a commit of the next one; a failure is logged, and the commits' own bound
        (``store.DEFERRED_CHECKPOINT_PAGES``) still holds."""
        try:
            self._uncopied = not store.checkpoint(store.get_database())
        except Exception as exc:
            raise_if_stop(exc)
            log.warning("worker %s could not checkpoint the store's WAL: %s", self.name, exc)
        self._checkpoint_at = time.monotonic()


_parent: int | None = None  # in a pool worker's process: the pid of the pool that forked it


def _orphaned() -> bool:
    """Whether this is a pool worker whose pool is gone."""
    return _parent is not None and os.getppid() != _parent


def _run_pool_worker(name: str, burst: bool, logging_level: str, parent: int) -> None:
    """A pool worker's process, forked from the prepared parent (``parent``: its pid, taken
    before the fork, so a parent that died before this line is seen too)."""
    global _parent
    _parent = parent
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if _orphaned():  # the parent died before the request took effect
        return
    max_jobs = config.settings().WORKER_MAX_JOBS or None
    store.tune_for_jobs(store.get_database())  # checkpoints after its jobs, writers queue
    try:
        work(PoolWorker, burst=burst, name=name, logging_level=logging_level, max_jobs=max_jobs)
    finally:
        # A forked process leaves by os._exit, so its atexit handlers (the live report's
        # withdrawal) never run: withdrawn here, or a stopped worker shows in the live view
        # with the plugins it had until its report goes stale (after a reload: "runs other plugins").
        liveview.withdraw()


class Pool(WorkerPool):
    """RQ's ``WorkerPool`` of ``PoolWorker``s on goalhub's queues, with a dead worker's job
    recovered as soon as the worker is found dead, and stuck workers killed."""

    def __init__(self, size: int) -> None:
        super().__init__(all_queues(), connection=get_redis(), num_workers=size, worker_class=PoolWorker)
        self._dead: dict[str, float] = {}  # dead workers whose jobs are being recovered -> since

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0,
                           logging_level: str = "INFO") -> BaseProcess:
        return get_context("fork").Process(target=_run_pool_worker, args=(name, burst, logging_level, os.getpid()),
                                           name=f"goalhub pool worker {name}")

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        code = worker_data.process.exitcode
        if code == 0:
            return  # stopped on request, recycled or done (burst)
        try:
            held = held_by({worker_data.name}, all_queues())
        except REDIS_GONE:
            held = ["(Redis away: not known yet)"]
        log.warning("pool worker %s (pid %d) died with exit code %s; recovering its job: %s",
                    worker_data.name, worker_data.pid, code, ", ".join(held) or "none started")
        self._dead.setdefault(worker_data.name, time.monotonic())

    @property
    def _recover_pending(self) -> bool:
        return bool(self._dead)

    def recover(self) -> list[str]:
        """Retry (or fail, without retries left) the jobs of dead workers now, until no started
        registry holds a job under a dead worker's name. Another process may hold a queue's
        recovery lock for a moment: tried again a few times here, then at each next check (with
        Redis away too), for up to ``RECOVER_PATIENCE`` seconds; after that the workers'
        registry maintenance and the reconciler are the net."""
        recovered: list[str] = []
        left: list[str] = []
        try:
            for _ in range(5):
                recovered += recover_abandoned_jobs(all_queues(), dead=set(self._dead))
                left = held_by(set(self._dead), all_queues())
                if not left:
                    break
                time.sleep(0.2)
        except REDIS_GONE as exc:
            log.error("could not recover the jobs of dead pool workers yet (%s); trying again", exc)
            return recovered
        if left and time.monotonic() - min(self._dead.values()) < RECOVER_PATIENCE:
            log.warning("jobs of dead pool workers not recovered yet: %s; trying again", ", ".join(left))
            return recovered
        if left:
            log.error("jobs of dead pool workers still not recovered after %.0f s: %s; left to the workers' "
                      "registry maintenance and the reconciler", RECOVER_PATIENCE, ", ".join(left))
        self._dead.clear()
        return recovered

    def check_workers(self, respawn: bool = True) -> None:
        self.kill_stuck_workers()
        super().check_workers(respawn=respawn)  # reaps the dead (handle_dead_worker), starts new ones
        if self._recover_pending:
            self.recover()

    def kill_stuck_workers(self, now: float | None = None) -> list[str]:
        """Kill each worker whose job ran ``STUCK_GRACE`` seconds past its timeout: the alarm
        that stops a job in-process did not (a call that never returns to Python)."""
        now = time.time() if now is None else now
        killed: list[str] = []
        ours = {data.pid: data for data in self.worker_dict.values()}
        try:  # by pid: a worker that outlived a Redis outage registered again under a new name
            workers = [w for w in Worker.all(connection=self.connection)
                       if w.pid in ours and w.hostname == socket.gethostname()]
        except REDIS_GONE:
            return killed  # the next check looks again
        for worker in workers:
            pid = ours[worker.pid or 0].pid
            try:
                job = worker.get_current_job()
            except REDIS_GONE:
                continue
            if job is None or job.started_at is None or not job.timeout or job.timeout < 0:
                continue
            overrun = now - job.started_at.timestamp() - job.timeout
            if overrun > STUCK_GRACE:
                log.error("pool worker %s (pid %d) is %.0f s past job %s's timeout; killing it",
                          worker.name, pid, overrun, job.id)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(worker.name)
        return killed


def run_pool(size: int, *, burst: bool = False, logging_level: str = "INFO") -> None:
    """Prepare once, then run ``size`` non-forking workers, replacing each that dies or is
    recycled, until SIGINT/SIGTERM (each worker finishes its job) or, with ``burst``, until
    the queues are empty."""
    prepare_worker()
    recover_abandoned_jobs(all_queues())  # what a pool that died left behind, before anyone works
    gc.collect()
    gc.freeze()  # what the parent loaded stays out of the children's collections (no copy-on-write)
    pool = Pool(size)
    pool.start(burst=burst, logging_level=logging_level)
