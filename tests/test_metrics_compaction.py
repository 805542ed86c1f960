"""Metric files do not pile up: prometheus-client writes a file per process, a forking worker
runs each job in a new process, and ``goalhub.metrics.compact`` (run by every worker at its
registry maintenance) folds the files of finished processes into one archive per kind
without changing what a scrape adds up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
