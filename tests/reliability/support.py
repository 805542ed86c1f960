"""Shared pieces of the reliability tests: real worker processes with the fault plugin,
a world of documents for the real plugins, an HTTP server that counts outbound calls,
and the checks that nothing was lost, doubled or left stuck."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import api_support
from bson import ObjectId
from rq.job import Job

from goalhub import dispatch
from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_scheduler
from goalhub.store import get_database

HERE = Path(__file__).resolve().parent
PLUGINS = ("exclusive", "show", "karaoke", "snapshot", "analytics", "livestream")
STREAMER = "6800a9073e0c346531958b03"  # the sub of seed 000's token
OTHER = "67d9847d566d0435771a730c"
FINAL = {"ok", "skipped"}
# How the suite runs its workers (the ``worker_kind`` fixture): a forking worker (``goalhub worker
# --fork``) and a pool of one non-forking worker (``goalhub worker --pool 1``); ``simple`` (a lone
# non-forking worker, nothing replaces it) can be asked for by GOALHUB_TEST_WORKER_KINDS=fork,pool,simple.
WORKERS = {
    "fork": "from goalhub.worker import run_worker; run_worker()",
    "pool": "from goalhub.pool import run_pool; run_pool(1)",
    "simple": "from goalhub.worker import run_worker; run_worker(simple=True)",
}
WORKER_KINDS = [kind.strip() for kind in os.environ.get("GOALHUB_TEST_WORKER_KINDS", "fork,pool").split(",")
                if kind.strip() in WORKERS]
SCHEDULER = "from goalhub.scheduler import run_scheduler; run_scheduler()"


def named_worker(name: str) -> str:
    """A forking worker under a fixed name, as ``goalhub worker --name`` (systemd's units) runs it."""
    return f"from goalhub.worker import run_worker; run_worker(name={name!r})"

wait_for = api_support.wait_for


def env(**extra: str) -> dict[str, str]:
    """This test's environment for child processes, with the fault plugin importable."""
    base = api_support.process_env(**extra)
    base["PYTHONPATH"] = os.pathsep.join([str(HERE), base["PYTHONPATH"]])
    return base


def start(name: str, code: str, environment: dict[str, str], log_dir: Path) -> api_support.ChildProcess:
    return api_support.ChildProcess(name, code, environment, log_dir)


def kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def markers(fault_dir: Path, prefix: str) -> list[int]:
    return [int(path.name.rsplit("-", 1)[1]) for path in fault_dir.glob(f"{prefix}-*")]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead too
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --- a world for the real plugins ---------------------------------------------------------


def make_world(db: Any, now: float | None = None) -> SimpleNamespace:
    """A live session with two RTC sources, a trigger goal whose countdown ended and a
    funding goal paired in the session: what exclusive and show goals are created from."""
    now = now or time.time()
    session = ObjectId()
    db.sessions.insert_one({"_id": session, "user": STREAMER, "active": True,
                            "sources": [{"room_id": "room-1", "task_id": "task-1"},
                                        {"room_id": "room-2", "task_id": "task-2"}],
                            "exclusive_goal_pairs": {}, "show_goal_pairs": [], "started_at": now - 600})
    sid = str(session)
    trigger, funding = ObjectId(), ObjectId()
    db.goals.insert_one({"_id": trigger, "_cls": "TriggerExclusiveGoal", "active": False,
                         "conditions": {"session_id": sid, "exclusive_to": "room"}, "levels": [{"target": 60}],
                         "nbf": now - 300, "exp": now - 10,
                         "context": {"type": "trigger_exclusive", "session_id": sid, "exclusive_to": "room"},
                         "metadata": {"user_id": STREAMER}, "created_at": now - 300, "ended_at": now - 10})
    db.goals.insert_one({"_id": funding, "_cls": "ShowFundingGoal", "active": False,
                         "conditions": {"session_id": sid}, "levels": [{"target": 500}],
                         "nbf": now - 300, "exp": now - 10,
                         "context": {"type": "show_funding", "session_id": sid},
                         "metadata": {"user_id": STREAMER}, "created_at": now - 300, "ended_at": now - 10})
    db.sessions.update_one({"_id": session}, {"$push": {"show_goal_pairs": {"funding_goal": str(funding),
                                                                            "show_goal": None}}})
    return SimpleNamespace(now=now, session=sid, trigger=str(trigger), funding=str(funding))


def exclusive_goal(world: SimpleNamespace) -> dict[str, Any]:
    """The document the API's ``exclusive`` type hands to ``create_goal`` (seed 000)."""
    return {"_id": str(ObjectId()), "_cls": "ExclusiveGoal", "active": True,
            "conditions": {"session_id": world.session, "exclusive_to": "room"}, "levels": [{"target": 300}],
            "nbf": round(world.now, 3), "exp": None,
            "context": {"type": "exclusive", "exclusive_to": "room", "session_id": world.session,
                        "trigger_exclusive_goal_id": world.trigger},
            "metadata": {"user_id": STREAMER}}


def show_goal(world: SimpleNamespace) -> dict[str, Any]:
    """The document the API's ``show`` type hands to ``create_goal`` (seed 003)."""
    return {"_id": str(ObjectId()), "_cls": "ShowGoal", "active": True,
            "conditions": {"session_id": world.session}, "levels": [{"target": 300}],
            "nbf": round(world.now, 3), "exp": round(world.now + 3600, 3),
            "context": {"type": "show", "funding_goal_id": world.funding, "session_id": world.session},
            "metadata": {"user_id": STREAMER}}


# --- outbound services, counted ----------------------------------------------------------


class OutboundServer:
    """One local HTTP server standing in for BytePlus RTC, Pusher, the notification service and
    the analytics sink: every request is kept, so a call made twice is seen twice. ``failing``
    makes it answer 500, as a service that is down (each call keeps the status it got)."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failing = False
        lock = threading.Lock()
        calls = self.requests
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode(errors="replace")
                status = 500 if server.failing else 200
                with lock:
                    calls.append({"path": self.path, "body": body, "status": status,
                                  "key": self.headers.get("Idempotency-Key")})
                payload = json.dumps({"ResponseMetadata": {"RequestId": "test"}, "Result": {"Message": "success"}})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """Settings that make every real outbound client call this server."""
        return {
            "GOALHUB_RTC_ENDPOINT": self.url, "GOALHUB_RTC_ACCESS_KEY": "AK-test", "GOALHUB_RTC_SECRET_KEY": "SK-test",
            "GOALHUB_RTC_APP_ID": "app-test",
            "GOALHUB_PUSHER_APP_ID": "1", "GOALHUB_PUSHER_KEY": "key", "GOALHUB_PUSHER_SECRET": "secret",
            "GOALHUB_PUSHER_HOST": "127.0.0.1", "GOALHUB_PUSHER_PORT": str(self.port), "GOALHUB_PUSHER_SSL": "false",
            "GOALHUB_NOTIFY_SINK": f"{self.url}/notify", "GOALHUB_ANALYTICS_SINK": f"{self.url}/analytics",
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- what must hold after a fault ----------------------------------------------------------


def settled(goal_id: str, events: tuple[str, ...] = ("goal.created",), timeout: float = 60.0) -> list[dict]:
    """Wait until the goal exists and every outcome of its events is final; return them."""
    db = get_database()

    def check() -> list[dict] | None:
        if db.goals.count_documents({"_id": ObjectId(goal_id)}) != 1:
            return None
        outcomes, complete = dispatch.delivered_outcomes(goal_id, list(events))
        if not complete or any(o["status"] not in FINAL for o in outcomes):
            return None
        return outcomes

    return wait_for(check, timeout=timeout, interval=0.1, what=f"the receivers of goal {goal_id} to settle")


def nothing_stuck(timeout: float = 30.0) -> None:
    """Every job finishes: none left in a queue or a started registry (waited for, since a
    lifecycle job may still be running), and none failed."""

    def busy() -> list[str]:
        left = []
        for queue in all_queues():
            # A job being dequeued sits in RQ's intermediate queue, in neither of the others.
            left += (queue.started_job_registry.get_job_ids(cleanup=False) + queue.get_job_ids()
                     + queue.intermediate_queue.get_job_ids())
        return left

    def idle() -> bool:
        # Twice in a row, a moment apart: a job may enqueue a follow-up job as it finishes.
        if busy():
            return False
        time.sleep(0.2)
        return not busy()

    try:
        wait_for(idle, timeout=timeout, what="the queues to empty")
    except AssertionError:
        raise AssertionError(f"jobs stuck: {busy()}") from None
    for queue in all_queues():
        failed = queue.failed_job_registry.get_job_ids(cleanup=False)
        assert failed == [], [Job.fetch(jid, connection=get_redis()).latest_result().exc_string for jid in failed]


def calls_by_key(server: OutboundServer) -> Counter:
    """Outbound HTTP calls received, by what they did (path and body): each must be 1."""
    return Counter((call["path"].split("?")[0], call["body"]) for call in server.requests)


def outbound_sent_once(db: Any) -> list[dict]:
    """Every outbound record is sent, after exactly one attempt."""
    records = list(db.outbound.find())
    assert records
    for record in records:
        assert record["status"] == "sent", record
        assert record["attempts"] == 1, record
    return records


def scheduled_jobs() -> list[str]:
    return [job.id for job in get_scheduler().get_jobs()]


def goalhub_cli(*args: str, environment: dict[str, str], timeout: float = 90.0):
    """The real ``goalhub`` command in a child process."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "goalhub", *args], env=environment, cwd=api_support.ROOT,
                          capture_output=True, text=True, timeout=timeout)


def state(db: Any) -> dict[str, Any]:
    """Everything a request could write: every document of every collection, every Redis key,
    every queued and scheduled job."""
    redis = get_redis()
    return {
        # An empty collection is no write (the idempotency record of a refused request is
        # inserted, then deleted): only documents count.
        "documents": {name: docs for name in sorted(db.list_collection_names())
                      if (docs := sorted(map(repr, db[name].find())))},
        "redis_keys": sorted(redis.keys("*")),
        "queued": [queue.count for queue in all_queues()],
        "scheduled": scheduled_jobs(),
    }


def error_model(response: Any) -> dict[str, Any]:
    """The JSON error model: ``{"error": {"code", "message", "field"?}}``, nothing else."""
    assert response.mimetype == "application/json", (response.status_code, response.data[:200])
    body = response.get_json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error.get("code"), str) and error["code"], body
    assert isinstance(error.get("message"), str) and error["message"], body
    assert set(error) <= {"code", "message", "field", "down"}, body
    return error
