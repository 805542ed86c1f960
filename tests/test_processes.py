"""Real processes: a forking RQ worker and the rq-scheduler, on the embedded Redis and store.

A goal is created by the worker, bound by a receiver (a plugin module loaded through
GOALHUB_PLUGINS in the worker), and activated at its nbf by the scheduler.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import psutil
import pytest
from bson import ObjectId

from goalhub import connection, tasks
from goalhub.store import get_database

pytestmark = pytest.mark.e2e

BINDING_PLUGIN = textwrap.dedent(
    """
    import os
    import goalhub
    from goalhub.store import get_database

    @goalhub.receiver("goal.created", "KaraokeGoal")
    def fail_once(goal_id):
        runs = get_database().flaky.find_one_and_update(
            {"_id": goal_id}, {"$inc": {"runs": 1}}, upsert=True, return_document=True
        )["runs"]
        if runs == 1:
            raise RuntimeError("first try fails")
        return runs

    @goalhub.receiver("goal.created", "TriggerExclusiveGoal")
    def bind_in_a_work_horse(goal_id, _cls):
        get_database().bindings.update_one(
            {"_id": goal_id}, {"$set": {"pid": os.getpid()}, "$inc": {"runs": 1}}, upsert=True
        )
    """
)


def start(code: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture
def processes(tmp_path, monkeypatch) -> Iterator[dict[str, subprocess.Popen]]:
    (tmp_path / "binding_plugin.py").write_text(BINDING_PLUGIN)
    monkeypatch.setenv("GOALHUB_PLUGINS", "binding_plugin")
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "1")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    worker = start("from goalhub.worker import run_worker; run_worker()", env)
    scheduler = start("from goalhub.scheduler import run_scheduler; run_scheduler()", env)
    yield {"worker": worker, "scheduler": scheduler}
    for process in (worker, scheduler):
        process.terminate()
    for process in (worker, scheduler):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def command(process: psutil.Process) -> str:
    """A process's command line; empty for one that exited (a zombie has none to read)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def wait_for(predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_a_forking_worker_and_the_scheduler_create_bind_and_activate_a_goal(processes):
    db = get_database()
    nbf = time.time() + 2.0
    goal_id = str(ObjectId())
    tasks.enqueue_create_goal(
        {
            "_id": goal_id,
            "_cls": "TriggerExclusiveGoal",
            "active": False,
            "conditions": {"session_id": str(ObjectId()), "exclusive_to": "room-1"},
            "levels": [{"target": 300}],
            "nbf": nbf,
            "exp": None,
            "context": {"type": "trigger_exclusive"},
            "metadata": {"user_id": str(ObjectId())},
        }
    )
    binding = wait_for(lambda: db.bindings.find_one({"_id": goal_id}))
    assert binding["pid"] != os.getpid()  # ran in a work-horse, not here
    seen_at = time.time()
    goal = db.goals.find_one({"_id": ObjectId(goal_id)})
    assert goal["_cls"] == "TriggerExclusiveGoal"
    # Seen before nbf, it is not active yet (a loaded machine may bind it after nbf: then the
    # activation below must still be at or after nbf).
    assert goal["active"] is False or seen_at >= nbf

    activated = wait_for(lambda: db.goals.find_one({"_id": ObjectId(goal_id), "active": True}))
    assert activated["activated_at"] >= nbf  # never before nbf
    # Each outcome is written once its receiver returned: when the create job ran after nbf (a
    # loaded machine), the lifecycle receiver activated the goal inline a moment before its own
    # outcome turned ok.
    expected = {"bind_in_a_work_horse": "ok", "schedule_lifecycle_tasks": "ok", "fail_once": "skipped"}

    def outcomes() -> dict:
        return {o["receiver"]: o["status"] for o in db.outcomes.find({"goal_id": goal_id})}

    wait_for(lambda: outcomes() == expected or None)
    assert outcomes() == expected
    assert db.bindings.find_one({"_id": goal_id})["runs"] == 1


def test_the_embedded_redis_outlives_the_process_that_started_it(tmp_path):
    home = tmp_path / "shared-home"
    home.mkdir()
    code = f"from goalhub.connection import ensure_embedded_redis; print(ensure_embedded_redis(__import__('pathlib').Path({str(home)!r})))"
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    try:
        assert first.stdout == second.stdout  # one server, found by the second process
        assert connection.embedded_redis_running(home)
    finally:
        connection.stop_embedded_redis(home)
    assert not connection.embedded_redis_running(home)


def test_a_failed_receiver_is_retried_after_its_backoff_by_the_scheduler_process(processes):
    """Workers run without RQ's built-in scheduler (a process a killed worker leaves behind):
    the scheduler process moves retries whose backoff has passed."""
    db = get_database()
    goal_id = str(ObjectId())
    tasks.enqueue_create_goal(
        {
            "_id": goal_id, "_cls": "KaraokeGoal", "active": True,
            "conditions": {"session_id": str(ObjectId())}, "levels": [{"target": 30}],
            "nbf": None, "exp": None, "context": {"type": "karaoke"}, "metadata": {"user_id": str(ObjectId())},
        }
    )
    outcome = wait_for(lambda: db.outcomes.find_one({"goal_id": goal_id, "receiver": "fail_once", "status": "ok"}))
    assert outcome["attempts"] == 2 and outcome["result"] == 2
    # The worker forked no scheduler of its own: no child of it lives on. (A work-horse, its
    # fork too, may still be exiting for a moment after its job; a scheduler would stay.)
    def no_forked_process_left() -> bool:
        return all("run_worker" not in command(child) for child in psutil.Process(processes["worker"].pid).children())

    assert wait_for(no_forked_process_left, timeout=10)
