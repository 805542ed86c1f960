"""Metric files do not pile up: prometheus-client writes a file per process, and a forking
worker runs each job in a new process. A work-horse hands its samples to its worker, which
records them in its own files (``goalhub.metrics.handoff_*``), and ``goalhub.metrics.compact``
(run by every worker at its registry maintenance) folds the files of finished processes into
one archive per kind without changing what a scrape adds up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rq.job import Job, JobStatus

from goalhub import metrics

RECORD = "from goalhub import metrics; metrics.goal_created('ConfettiGoal'); metrics.receiver_outcome('p', 'r', 'ok', 0.02)"


def scrape(directory: Path) -> dict[str, float]:
    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return {f"{s.name}{sorted(s.labels.items())}": s.value for m in registry.collect() for s in m.samples}


def record_in_a_process_that_ends(directory: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    subprocess.run([sys.executable, "-c", RECORD], env=env, check=True, timeout=60)


@pytest.fixture
def directory(tmp_path, monkeypatch):
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(path))
    return path


def test_compaction_folds_finished_processes_files_and_keeps_the_totals(directory):
    for _ in range(3):
        record_in_a_process_that_ends(directory)
    files = sorted(p.name for p in directory.glob("*.db"))
    assert len(files) == 6, files  # a counter and a histogram file per process
    before = scrape(directory)
    assert before["goalhub_goals_created_total[('goal_type', 'ConfettiGoal')]"] == 3

    assert metrics.compact() == 6
    assert sorted(p.name for p in directory.glob("*.db")) == ["counter_archive.db", "histogram_archive.db"]
    assert scrape(directory) == before

    # More finished processes: folded into the same archives, the totals go on counting.
    record_in_a_process_that_ends(directory)
    assert metrics.compact() == 2
    after = scrape(directory)
    assert after["goalhub_goals_created_total[('goal_type', 'ConfettiGoal')]"] == 4
    assert after["goalhub_receiver_duration_seconds_count[('plugin', 'p'), ('receiver', 'r')]"] == 4
    assert len(list(directory.glob("*.db"))) == 2


def test_a_running_process_keeps_its_files_until_it_ends(directory):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    running = subprocess.Popen([sys.executable, "-c", RECORD + "; print('ready', flush=True); input()"],
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert running.stdout.readline().strip() == "ready"
        theirs = {f"counter_{running.pid}.db", f"histogram_{running.pid}.db"}
        assert theirs <= {p.name for p in directory.glob("*.db")}
        assert metrics.compact() == 0
        assert theirs <= {p.name for p in directory.glob("*.db")}
    finally:
        running.communicate("\n", timeout=30)
    assert metrics.compact() == 2
    assert scrape(directory)["goalhub_goals_created_total[('goal_type', 'ConfettiGoal')]"] == 1


# --- a work-horse's samples are recorded by its worker ----------------------------------------

JOBS = """
import os, signal
from goalhub import metrics

def record(goals):
    for _ in range(goals):
        metrics.goal_created("ConfettiGoal")
        metrics.receiver_outcome("p", "r", "ok", 0.02)

def record_then_die():
    metrics.goal_created("KilledGoal")
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.fixture
def work(goalhub_env, directory, tmp_path):
    """Enqueue jobs of a module the worker imports, then run a real forking worker (goalhub's
    own, ``run_worker``) in a process of its own until the queues are empty."""
    from goalhub.queues import get_queue

    (tmp_path / "metric_jobs.py").write_text(JOBS)

    def run(*jobs: tuple[str, tuple]) -> list[Job]:
        queued = [get_queue().enqueue(f"metric_jobs.{name}", *args) for name, args in jobs]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
        subprocess.run([sys.executable, "-c", "from goalhub.worker import run_worker; run_worker(burst=True)"],
                       env=env, check=True, timeout=120, capture_output=True)
        return queued

    return run


def pids(directory: Path) -> set[str]:
    return {p.name.rsplit("_", 1)[1][:-3] for p in directory.glob("*.db")}


def test_the_worker_records_its_horses_samples_in_its_own_files(work, directory):
    jobs = work(*[("record", (2,))] * 5)
    assert all(job.get_status() == JobStatus.FINISHED for job in jobs)
    assert len(pids(directory)) == 1, sorted(p.name for p in directory.glob("*.db"))  # the worker's, no horse's
    samples = scrape(directory)
    assert samples["goalhub_goals_created_total[('goal_type', 'ConfettiGoal')]"] == 10
    assert samples["goalhub_receiver_duration_seconds_count[('plugin', 'p'), ('receiver', 'r')]"] == 10


def test_a_killed_horse_keeps_what_it_recorded_before_it_died(work, directory):
    died, after = work(("record_then_die", ()), ("record", (1,)))
    assert died.get_status() == JobStatus.FAILED and after.get_status() == JobStatus.FINISHED
    samples = scrape(directory)
    assert samples["goalhub_goals_created_total[('goal_type', 'KilledGoal')]"] == 1
    assert samples["goalhub_goals_created_total[('goal_type', 'ConfettiGoal')]"] == 1
    assert len(pids(directory)) == 1


def test_a_horse_records_itself_what_does_not_fit_on_the_page(work, directory):
    goals = metrics.HANDOFF_BYTES // 40  # two samples a goal, each line well over 20 bytes
    (job,) = work(("record", (goals,)))
    assert job.get_status() == JobStatus.FINISHED
    assert len(pids(directory)) == 2  # the worker's files, and the horse's own for the overflow
    samples = scrape(directory)
    assert samples["goalhub_goals_created_total[('goal_type', 'ConfettiGoal')]"] == goals
    assert samples["goalhub_receiver_duration_seconds_count[('plugin', 'p'), ('receiver', 'r')]"] == goals
