"""The example app (``make demo``, ``python -m goalhub_demo``): both seed flows run and leave
nothing running; its seed world declares what the bundled plugins do."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest
from goalhub_demo.world import PlatformGoalTypes

from goalhub.testing import goal_types


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.slow
def test_make_demo_runs_both_seed_flows_and_leaves_nothing_running(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOALHUB_")}
    before = {p.pid for p in psutil.process_iter()}
    result = subprocess.run(
        [sys.executable, "-m", "goalhub_demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for step in (
        "POST /sessions -> 201",
        "POST /goals?type=trigger_exclusive -> 202",
        "activate_goal: TriggerExclusiveGoal active",
        "POST /goals?lang=zh-hant&type=exclusive -> 202",
        "StopSnapshot(RoomId=",
        "ExclusiveGoal already active, nothing to update",
        "POST /goals?type=show_funding -> 202",
        "POST /goals?goal_type=show -> 202",
        "features.livestream sender=goal.added",
        "every document and receiver outcome matches seeds 000 and 003",
        "embedded Redis stopped",
    ):
        assert step in result.stdout, step
    homes = list((tmp_path / ".goalhub").glob("demo-*"))
    assert len(homes) == 1
    home = homes[0].resolve()
    conf = (home / "redis.conf").read_text()
    socket_path = next(line.split()[1] for line in conf.splitlines() if line.startswith("unixsocket "))
    new = [p for p in psutil.process_iter() if p.pid not in before and not gone(p)]
    assert [p.cmdline() for p in new if started_in(p, str(home), socket_path)] == []


def started_in(process: psutil.Process, home: str, socket_path: str) -> bool:
    """Whether a process belongs to the demo: GOALHUB_HOME=home in its environment (API,
    workers, scheduler) or the demo's Redis socket on its command line (redis-server
    overwrites its environment with its process title)."""
    try:
        return process.environ().get("GOALHUB_HOME") == home or socket_path in " ".join(process.cmdline())
    except psutil.Error:
        return False


def test_the_seed_worlds_goal_types_are_the_bundled_plugins(use_plugins):
    use_plugins("exclusive", "show", "karaoke")
    declared = {t.name: (t.goal_class, t.activate_at_nbf, t.end_at_exp) for t in goal_types().values()}
    assert declared == {
        t.name: (t.goal_class, t.activate_at_nbf, t.end_at_exp) for t in PlatformGoalTypes().goal_types()
    }
