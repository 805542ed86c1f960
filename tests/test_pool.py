"""The pool of non-forking workers (``goalhub worker --pool N``, ``goalhub.pool``), with real
processes: jobs run in the pool's workers, not in its parent and not in a fork per job; a worker
is recycled after ``GOALHUB_WORKER_MAX_JOBS`` jobs or once its memory grew; a job over its
timeout is stopped inside the worker; a worker stuck past it is killed and replaced; the
workers stop with their parent; the metrics take one pair of files per worker and are served by
``--metrics-port``. (Kills mid-job and the whole reliability suite run on the pool in
tests/reliability.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rq.job import Job, JobStatus
from rq.worker_pool import WorkerData

from goalhub import config
from goalhub.connection import get_redis
from goalhub.pool import STUCK_GRACE, Pool
from goalhub.queues import get_queue
from goalhub.testing import ChildProcess, free_port

pytestmark = pytest.mark.slow

JOBS = """
import os, signal, time
from goalhub import metrics

_kept = []

def pid():
    return os.getpid()

def record(goals):
    for _ in range(goals):
        metrics.goal_created("ConfettiGoal")
    return os.getpid()

def grow(mib):
    _kept.append(b"x" * (mib * 2 ** 20))  # written, so resident
    return os.getpid()

def overrun(seconds):
    time.sleep(seconds)

def write(documents):  # the WAL pages at which this worker's commits checkpoint; whether its writers queue
    from goalhub.store import get_database
    database = get_database()
    database.pool_test.insert_many([{"n": i} for i in range(documents)])
    return database.client._conn().execute("PRAGMA wal_autocheckpoint").fetchone()[0], database.client.queue_writers

def deaf(seconds):  # SIGALRM blocked: RQ's in-process timeout cannot stop this job
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(seconds)
"""


@pytest.fixture
def pool(goalhub_env, tmp_path):
    """``start(size, *options, **env)``: ``goalhub worker --pool size`` in a process of its own,
    with this test's jobs importable; stopped (SIGTERM) at the end."""
    (tmp_path / "pool_jobs.py").write_text(JOBS)
    started: list[ChildProcess] = []

    def start(size: int, *options: str, **extra: str) -> ChildProcess:
        env = {**os.environ, **extra,
               "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
        argv = ", ".join(repr(a) for a in ["worker", "--pool", str(size), *options])
        process = ChildProcess(f"pool-{len(started)}", f"from goalhub.cli import main; main([{argv}])", env, tmp_path)
        started.append(process)
        wait(lambda: len(workers(process)) == size, f"{size} pool workers")
        return process

    yield start
    for process in started:
        process.stop()
    for process in started:
        print(f"--- {process.name} ---\n{process.output()}")


def wait(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def workers(process: ChildProcess) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(process.popen.pid).children()
                if child.status() != psutil.STATUS_ZOMBIE]
    except psutil.Error:
        return []


def run(name: str, *args, timeout: int | None = None) -> Job:
    """Enqueue ``pool_jobs.<name>(*args)`` and wait until it finished or failed."""
    job = get_queue().enqueue(f"pool_jobs.{name}", *args, job_timeout=timeout)
    wait(lambda: job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED), f"job {name}")
    return job


def test_jobs_run_in_the_workers_and_the_metrics_take_a_pair_of_files_per_worker(pool, tmp_path):
    directory, port = tmp_path / "metrics", free_port()
    process = pool(2, "--metrics-port", str(port), PROMETHEUS_MULTIPROC_DIR=str(directory))
    ran = {run("record", 2).return_value() for _ in range(10)}
    assert ran <= set(workers(process)) and process.popen.pid not in ran
    files = {path.name.rsplit("_", 1)[1][:-3] for path in directory.glob("*.db")}
    assert files <= {str(pid) for pid in [process.popen.pid, *workers(process)]}  # none per job
    # This machine's metrics, from the worker process itself: no API process needed.
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {(s.name, tuple(s.labels.items())): s.value for family in text_string_to_metric_families(body)
               for s in family.samples}
    assert samples[("goalhub_goals_created_total", (("goal_type", "ConfettiGoal"),))] == 20


def test_a_worker_is_replaced_after_its_number_of_jobs(pool):
    process = pool(1, GOALHUB_WORKER_MAX_JOBS="2")
    ran = [run("pid").return_value() for _ in range(6)]
    assert ran[0] == ran[1] != ran[2] == ran[3] != ran[4] == ran[5], ran  # two jobs each, between jobs
    wait(lambda: len(workers(process)) == 1, "the third worker's replacement")


def test_a_worker_whose_memory_grew_is_replaced_between_jobs(pool):
    pool(1, GOALHUB_WORKER_MAX_RSS_GROWTH="16")
    first = run("grow", 1).return_value()  # its baseline, after one job
    assert run("grow", 4).return_value() == first  # 4 MiB more: under the limit
    grown = run("grow", 32)
    assert grown.get_status() == JobStatus.FINISHED and grown.return_value() == first  # the job itself ends
    assert run("pid").return_value() != first  # then a fresh worker takes the next one


def test_a_job_over_its_timeout_is_stopped_inside_the_worker(pool):
    pool(1)
    before = run("pid").return_value()
    job = run("overrun", 60, timeout=1)
    assert job.get_status() == JobStatus.FAILED
    assert "JobTimeoutException" in job.latest_result().exc_string
    assert run("pid").return_value() == before  # the same worker, still working


def test_a_worker_stuck_past_its_timeout_is_killed_and_replaced_and_its_job_recovered(pool):
    process = pool(1)
    stuck = get_queue().enqueue("pool_jobs.deaf", 60, job_timeout=1)
    wait(lambda: stuck.get_status() == JobStatus.STARTED, "the deaf job to start")
    [victim] = workers(process)
    time.sleep(1.5)  # past its timeout: the alarm fired, and was not delivered
    assert stuck.get_status() == JobStatus.STARTED
    # The parent's check, as it would run STUCK_GRACE seconds later (a Pool of this process
    # watching the same worker: the real parent replaces it and recovers the job).
    watcher = Pool(1)
    watcher.worker_dict = {"stuck": WorkerData("stuck", victim, None)}  # type: ignore[arg-type]
    assert len(watcher.kill_stuck_workers(now=time.time() + STUCK_GRACE)) == 1
    wait(lambda: not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE,
         "the stuck worker to die")
    wait(lambda: stuck.get_status() == JobStatus.FAILED, "the abandoned job to be recovered (no retries left)")
    assert run("pid").return_value() not in (victim, process.popen.pid)


def test_the_workers_stop_when_their_parent_dies(pool):
    process = pool(2)
    pids = workers(process)
    process.popen.send_signal(signal.SIGKILL)
    process.popen.wait(timeout=10)
    wait(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
                         for pid in pids), "the orphaned workers to stop")


def test_worker_options_are_checked(goalhub_env):
    for options in (["--pool", "0"], ["--pool", "2", "--fork"], ["--pool", "2", "--name", "x"],
                    ["--metrics-port", "70000"]):
        result = subprocess.run([sys.executable, "-m", "goalhub", "worker", "--burst", *options],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, (options, result.stderr)
    taken = subprocess.run([sys.executable, "-m", "goalhub", "worker", "--burst", "--metrics-host", "203.0.113.9",
                            "--metrics-port", str(free_port())], capture_output=True, text=True, timeout=60)
    assert taken.returncode == 1 and taken.stderr.startswith("Error: cannot serve metrics on 203.0.113.9:"), taken.stderr
    assert config.settings().WORKER_MAX_JOBS == 10000 and config.settings().WORKER_MAX_RSS_GROWTH == 256
    assert get_redis().ping()


def test_a_stop_requested_during_the_outbox_relay_stops_the_worker(goalhub_env, monkeypatch):
    """RQ's SIGTERM handler raises StopRequested in an idle worker, wherever it is: during the
    outbox relay of its maintenance (a pool worker whose parent just died), it must not be taken
    for a relay failure and swallowed, or the orphan works on for ever."""
    from rq.exceptions import StopRequested

    from goalhub import outbox, worker

    def stop(*args, **kwargs):
        raise StopRequested()

    monkeypatch.setattr(outbox, "requeue_accepted", stop)
    with pytest.raises(StopRequested):
        worker.relay_accepted()


def test_a_pool_worker_leaves_out_plain_heartbeats_within_a_second_of_the_last(goalhub_env, monkeypatch):
    """RQ beats three or four times around every job (three round trips each); a pool worker runs
    jobs back to back, so it sends a plain beat at most once a second. A beat with its own lifetime
    or in a pipeline (a job's start) always goes, and the registration lives at least a minute."""
    from goalhub import pool as pools

    worker = pools.PoolWorker([get_queue()], connection=get_redis(), name="beats")
    worker.register_birth()
    clock = [1000.0]
    monkeypatch.setattr(pools.time, "monotonic", lambda: clock[0])
    sent: list[tuple] = []
    original = pools.RecoveringSimpleWorker.heartbeat
    monkeypatch.setattr(pools.RecoveringSimpleWorker, "heartbeat",
                        lambda self, timeout=None, pipeline=None: sent.append((timeout, pipeline))
                        or original(self, timeout, pipeline))
    worker.heartbeat()
    worker.heartbeat()  # the same instant: left out
    clock[0] += 0.5
    worker.heartbeat()  # half a second later: left out
    worker.heartbeat(timeout=120)  # its own lifetime: sent
    pipe = get_redis().pipeline()
    worker.heartbeat(pipeline=pipe)  # a job's start: sent
    pipe.execute()
    clock[0] += pools.BEAT_EVERY
    worker.heartbeat()  # a second after the last: sent
    assert [(t, p is not None) for t, p in sent] == [(None, False), (120, False), (None, True), (None, False)]
    assert get_redis().ttl(worker.key) >= 60
    worker.register_death()


def test_a_pool_worker_makes_no_round_trip_that_rq_repeats_after_a_job(goalhub_env):
    """After each job RQ writes the job's ``last_heartbeat`` in a round trip of its own, and the
    job's hash is written whole a moment later with its result; then it sets the worker idle,
    and again as its loop turns. A pool worker makes neither repeat: the job's hash still holds
    its end as its last heartbeat, and the worker is idle once per job."""
    import redis

    from goalhub import pool as pools
    from goalhub.connection import redis_url
    from goalhub.worker import noop

    connection = redis.Redis.from_url(redis_url())
    alone: list[tuple[str, str, tuple]] = []  # commands sent on their own (not in a pipeline)
    send = connection.execute_command

    def record(*args, **options):
        alone.append((str(args[0]).upper(), args[1].decode() if isinstance(args[1], bytes) else str(args[1]),
                      args[2:]) if len(args) > 1 else (str(args[0]).upper(), "", ()))
        return send(*args, **options)

    connection.execute_command = record  # type: ignore[method-assign]
    jobs = [get_queue().enqueue(noop) for _ in range(3)]
    worker = pools.PoolWorker([get_queue()], connection=connection, name="trips")
    assert worker.work(burst=True, logging_level="WARNING")
    for job in jobs:
        job.refresh()
        assert job.get_status() == JobStatus.FINISHED
        assert job.last_heartbeat is not None and job.last_heartbeat == job.ended_at
        assert not [c for c in alone if c[0] == "HSET" and c[1] == job.key]
    idle = [c for c in alone if c[:2] == ("HSET", worker.key) and c[2][:2] == ("state", "idle")]
    assert len(idle) <= len(jobs) + 1  # once after each job, and once before the first
    assert connection.hget(worker.key, "state") in (None, b"idle")


def test_a_pool_worker_whose_pool_is_gone_stops_at_its_next_heartbeat(goalhub_env, monkeypatch):
    """An orphan that missed the death signal's stop (found still retrying Redis a quarter of an
    hour after its pool was killed) stops at its next plain heartbeat, which RQ's loop takes as
    a stop; a beat that starts a job is left alone."""
    from rq.exceptions import StopRequested

    from goalhub import pool as pools

    worker = pools.PoolWorker([get_queue()], connection=get_redis(), name="orphan")
    worker.register_birth()
    monkeypatch.setattr(pools, "_parent", os.getppid())
    worker.heartbeat()  # its pool is alive: a beat as any
    monkeypatch.setattr(pools, "_parent", os.getppid() + 1_000_000)  # a pool that is gone
    pipe = get_redis().pipeline()
    worker.heartbeat(pipeline=pipe)  # a job's start: never interrupted
    with pytest.raises(StopRequested):
        worker.heartbeat()
    worker.register_death()


def _wal_frames(store: Path) -> tuple[int, int]:
    """(frames in the embedded store's WAL, frames of it copied back into the database), from
    the WAL index's header in the ``-shm`` file (SQLite's wal.c: ``mxFrame`` at byte 16,
    ``nBackfill`` at byte 96), read without a connection, so without checkpointing."""
    header = (store.parent / (store.name + "-shm")).read_bytes()[:100]
    return int.from_bytes(header[16:20], sys.byteorder), int.from_bytes(header[96:100], sys.byteorder)


def test_an_idle_pool_worker_checkpoints_what_the_last_jobs_of_a_burst_left(goalhub_env, monkeypatch):
    """A job within ``CHECKPOINT_EVERY`` of the last checkpoint leaves its WAL frames; the worker's
    next plain heartbeat once that time has passed (its idle loop beats) copies them back."""
    from goalhub import pool as pools
    from goalhub import store as stores

    database = stores.get_database()
    stores.tune_for_jobs(database)
    path = database.client.path
    worker = pools.PoolWorker([get_queue()], connection=get_redis(), name="idle-checkpoint")
    worker.register_birth()
    clock = [1000.0]
    monkeypatch.setattr(pools.time, "monotonic", lambda: clock[0])
    batch = iter(range(1000))
    monkeypatch.setattr(pools.RecoveringSimpleWorker, "execute_job",  # a job: a few hundred WAL pages
                        lambda self, job, queue: database.pool_test.insert_many([{"n": next(batch)} for _ in range(200)]))
    worker.execute_job(None, None)  # the first: checkpointed after it
    frames, copied = _wal_frames(path)
    assert frames > 0 and copied == frames
    worker.execute_job(None, None)  # the last of the burst, at once: left for later
    worker.heartbeat()  # idle, but within CHECKPOINT_EVERY of the last checkpoint
    frames, copied = _wal_frames(path)
    assert copied < frames
    clock[0] += pools.CHECKPOINT_EVERY
    worker.heartbeat()  # the idle loop's next beat
    frames, copied = _wal_frames(path)
    assert copied == frames
    assert database.pool_test.count_documents({}) == 400
    worker.register_death()


def test_a_pool_worker_checkpoints_the_store_after_its_job_not_inside_a_commit_and_its_writers_queue(pool):
    from goalhub.store import DEFERRED_CHECKPOINT_PAGES, get_database

    store = get_database().client.path
    pool(1)
    # 200 documents: a few hundred WAL pages, short of SQLite's 1,000 at which a commit checkpoints.
    assert run("write", 200).return_value() == (DEFERRED_CHECKPOINT_PAGES, True)  # store.tune_for_jobs
    # Checkpointed whole, after the job (RQ marks it finished first, so a moment later).
    wait(lambda: (lambda frames, copied: frames > 0 and copied == frames)(*_wal_frames(store)), "the checkpoint",
         timeout=10)
    assert get_database().pool_test.count_documents({}) == 200
