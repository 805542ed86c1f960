"""Races: 50 simultaneous creations on one trigger goal through the real HTTP server and the
real exclusive plugin give exactly one goal; 50 simultaneous activations of one goal (in 5
processes x 10 threads) change it once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import api_support
import pytest
import requests
from bson import ObjectId

from goalhub.auth import mint_token
from goalhub.queues import get_queue

from . import support

pytestmark = pytest.mark.reliability

CALLERS = 50


def test_50_simultaneous_creations_on_one_trigger_give_exactly_one_goal(db, tmp_path, use_plugins, worker_kind):
    use_plugins(*support.PLUGINS)
    world = support.make_world(db)
    environment = support.env()
    server, base = api_support.start_api(environment, tmp_path, workers=2, threads=8)
    token = mint_token(support.STREAMER, ["CREATOR"])
    body = {"levels": [{"target": 300}], "nbf": round(time.time(), 3),
            "context": {"session_id": world.session, "trigger_exclusive_goal_id": world.trigger}}
    barrier = threading.Barrier(CALLERS)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def fire(index: int) -> None:
        barrier.wait()
        response = requests.post(f"{base}/goals?type=exclusive", json=body, timeout=60,
                                 headers={"Authorization": f"Bearer {token}", "x-request-id": f"race-{index}"})
        with lock:
            answers.append((response.status_code, response.json()))

    worker = None
    try:
        threads = [threading.Thread(target=fire, args=(i,)) for i in range(CALLERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = Counter(status for status, _ in answers)
        assert statuses == {202: 1, 409: CALLERS - 1}, statuses
        [winner] = [answer["goal_id"] for status, answer in answers if status == 202]
        assert {answer["error"]["code"] for status, answer in answers if status == 409} == {"already_bound"}
        assert get_queue().count == 1  # one create_goal job, nothing else enqueued

        worker = support.start("worker", support.WORKERS[worker_kind], environment, tmp_path)
        support.settled(winner)
        assert db.goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
        trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})
        assert trigger["context"]["exclusive_goal_id"] == winner
        assert db.requests.count_documents({}) == 1  # the losers left no request record
        support.nothing_stuck()
    finally:
        server.stop()
        if worker:
            worker.stop()


ACTIVATE = """
import sys, threading, time, pathlib
from goalhub import tasks
go = pathlib.Path(sys.argv[1])
results = []
def run():
    while not go.exists():
        time.sleep(0.001)
    results.append(tasks.activate_goal(sys.argv[2]))
threads = [threading.Thread(target=run) for _ in range(int(sys.argv[3]))]
for t in threads: t.start()
for t in threads: t.join()
print(sum(results), len(results))
"""


def test_50_simultaneous_activations_change_the_goal_once(db, tmp_path):
    import subprocess
    import sys

    goal_id = ObjectId()
    db.goals.insert_one({"_id": goal_id, "_cls": "TriggerExclusiveGoal", "active": False,
                         "conditions": {"session_id": str(ObjectId()), "exclusive_to": "room"},
                         "levels": [{"target": 60}], "nbf": time.time() - 1, "exp": None,
                         "context": {"type": "trigger_exclusive"}, "metadata": {"user_id": support.STREAMER}})
    go = tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", ACTIVATE, str(go), str(goal_id), "10"],
                                  env=support.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(5)]
    time.sleep(1.5)  # every process imported goalhub and waits at the line
    go.write_text("go")
    changed = called = 0
    for process in processes:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        done, calls = map(int, out.split())
        changed += done
        called += calls
    assert (called, changed) == (CALLERS, 1)
    goal = db.goals.find_one({"_id": goal_id})
    assert goal["active"] is True and "activated_at" in goal
