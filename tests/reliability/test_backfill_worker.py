"""A backfill at the slowest allowed rate on the only worker does not hold it (issue 21): its
chunks are short jobs, the next one scheduled for when the pace allows, so a live goal
created meanwhile is settled as it would be without the backfill."""

from __future__ import annotations

import time

import pytest
import requests
from bson import ObjectId

from goalhub import replay, tasks
from goalhub.auth import mint_token

from . import support

pytestmark = pytest.mark.reliability


def karaoke(world, now: float) -> dict:
    return {"_id": str(ObjectId()), "_cls": "KaraokeGoal", "active": True,
            "conditions": {"session_id": world.session}, "levels": [{"target": 30}], "nbf": None,
            "exp": round(now + 3600, 3), "context": {"type": "karaoke", "session_id": world.session},
            "metadata": {"user_id": support.STREAMER}}


def test_a_backfill_at_the_slowest_rate_leaves_the_only_worker_to_live_goals(db, use_plugins, tmp_path, worker_kind):
    use_plugins(*support.PLUGINS)
    outbound = support.OutboundServer()
    world = support.make_world(db)
    now = time.time()
    past = []
    for index in range(5):  # goals whose analytics event was never sent: the backfill's work
        goal = {**karaoke(world, now), "created_at": now - 600 + index}
        db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
        past.append(goal["_id"])
    environment = support.env(GOALHUB_LOAD_PLUGINS=",".join(support.PLUGINS), **outbound.environment())
    server = None
    processes = [support.start("worker", support.WORKERS[worker_kind], environment, tmp_path),
                 support.start("scheduler", support.SCHEDULER, environment, tmp_path)]
    try:
        import api_support

        server, base = api_support.start_api(environment, tmp_path, workers=1, threads=2)
        admin = {"Authorization": f"Bearer {mint_token(support.STREAMER, ['ADMIN'])}"}
        started = requests.post(f"{base}/admin/backfill", headers=admin, timeout=10,
                                json={"target": "analytics", "cls": "KaraokeGoal", "rate": replay.MIN_RATE})
        assert started.status_code == 202, started.text
        location = f"{base}{started.headers['Location']}"
        support.wait_for(lambda: requests.get(location, headers=admin, timeout=10).json()["delivered"] == 1,
                         timeout=30, what="the backfill's first chunk")
        live = tasks.enqueue_create_goal(karaoke(world, time.time()))
        # Settled in the time a live goal takes with an idle worker (well under the 100 s the
        # backfill waits before its next event).
        support.settled(live, timeout=30)
        progress = requests.get(location, headers=admin, timeout=10).json()
        assert progress["state"] == "running" and progress["delivered"] == 1, progress
        support.wait_for(lambda: db.outcomes.count_documents({"event": "goal.created", "receiver": "track_goals",
                                                              "goal_id": {"$in": past}, "status": "ok"}) == 1,
                         timeout=30, what="the backfilled event's outcome")
    finally:
        if server is not None:
            server.stop()
        for process in processes:
            process.stop()
        outbound.stop()
