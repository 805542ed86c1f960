"""Receivers over time through the real stack: goals created over HTTP (waitress), a real
forking RQ worker and the rq-scheduler process, a plugin installed with pip after the goals
exist, and the real ``goalhub`` command.

- Backfill: 40 goals exist; ``tally`` is installed; ``goalhub backfill tally`` is run on the
  first 20 and run again; on the other 20 it is interrupted with Ctrl-C and run again: the
  service hears of every goal exactly once, and no other receiver runs again.
- Circuit breaker: the service answers 500; ``tally`` trips after K failed goals and its
  retries stop; the service recovers; ``goalhub resume tally`` delivers every missed goal once.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import api_support
import pytest
import requests
from reliability.support import OutboundServer

from goalhub.auth import mint_token
from goalhub.store import get_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TALLY = Path(__file__).resolve().parent / "plugins" / "goalhub-tally"
STREAMER = "6800a9073e0c346531958b03"
WORKER = "from goalhub.worker import run_worker; run_worker()"
SCHEDULER = "from goalhub.scheduler import run_scheduler; run_scheduler()"


class TallyService(OutboundServer):
    """The HTTP service the ``tally`` plugin calls (the reliability tests' counting server)."""

    @property
    def calls(self) -> list[tuple[str, int]]:
        return [(json.loads(call["body"])["goal_id"], call["status"]) for call in self.requests]

    def accepted(self) -> Counter:
        return Counter(goal for goal, status in self.calls if status == 200)


@pytest.fixture
def stack(tmp_path, monkeypatch):
    """The API and the scheduler with no plugin but the test goal types; ``install_tally``
    pip-installs the plugin and (re)starts the worker with it, as an operator would."""
    service = TallyService()
    site = tmp_path / "site"
    env = api_support.process_env(GOALHUB_PLUGINS="api_support", GOALHUB_LOAD_PLUGINS="",
                                  GOALHUB_TALLY_URL=f"{service.url}/tally", GOALHUB_RECEIVER_BACKOFF="0",
                                  GOALHUB_BREAKER_THRESHOLD="3", GOALHUB_RECEIVER_RETRIES="2")
    processes: dict[str, api_support.ChildProcess] = {}
    state = SimpleNamespace(env=env, service=service, processes=processes, tmp=tmp_path)

    def start_worker() -> None:
        if "worker" in processes:
            processes["worker"].stop()
        processes["worker"] = api_support.ChildProcess("worker", WORKER, state.env, tmp_path)

    def install_tally() -> None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(TALLY)], check=True, capture_output=True)
        state.env = {**state.env, "PYTHONPATH": f"{site}:{state.env['PYTHONPATH']}", "GOALHUB_LOAD_PLUGINS": "tally"}
        start_worker()

    def cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "goalhub", *args], env=state.env, capture_output=True,
                              text=True, timeout=180, **kwargs)

    state.start_worker, state.install_tally, state.cli = start_worker, install_tally, cli
    try:
        start_worker()
        processes["scheduler"] = api_support.ChildProcess("scheduler", SCHEDULER, env, tmp_path)
        processes["api"], state.base = api_support.start_api(env, tmp_path, workers=2, threads=4)
        state.auth = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR'])}"}
        session = requests.post(f"{state.base}/sessions", json={}, headers=state.auth, timeout=10)
        assert session.status_code == 201, session.text
        state.session = session.json()["_id"]
        yield state
    finally:
        for process in processes.values():
            process.stop()
        service.stop()
        for process in processes.values():
            print(f"--- {process.name} ---\n{process.output()}")


def create_goals(stack, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        now = time.time()
        body = {"levels": [{"target": 60}], "context": {"session_id": stack.session, "exclusive_to": "room"},
                "nbf": now, "exp": now + 3600}
        answer = requests.post(f"{stack.base}/goals?type=trigger_exclusive", json=body, headers=stack.auth,
                               timeout=10)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["goal_id"])
    return ids


def settled(goal_ids: list[str], receiver: str, statuses: set[str], timeout: float = 60) -> list[dict]:
    db = get_database()

    def check() -> list[dict] | None:
        found = list(db.outcomes.find({"goal_id": {"$in": goal_ids}, "receiver": receiver}))
        if len(found) == len(goal_ids) and all(o["status"] in statuses for o in found):
            return found
        return None

    return api_support.wait_for(check, timeout=timeout, interval=0.2, what=f"{receiver} to settle")


def test_backfill_a_plugin_installed_after_the_goals(stack):
    first = create_goals(stack, 20)
    settled(first, "schedule_lifecycle_tasks", {"ok"})
    between = time.time()
    second = create_goals(stack, 20)
    lifecycle = settled(first + second, "schedule_lifecycle_tasks", {"ok"})
    lifecycle_runs = {o["_id"]: o["attempts"] for o in lifecycle}

    stack.install_tally()
    assert "tally" in stack.cli("hooks").stdout
    until, since = ("--until", str(between)), ("--since", str(between))
    dry = stack.cli("backfill", "tally", "--event", "goal.created", *until, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["delivered"] == 20 and stack.service.requests == []

    done = stack.cli("backfill", "tally", "--event", "goal.created", *until, "--json")
    assert done.returncode == 0, done.stderr + done.stdout
    summary = json.loads(done.stdout)
    assert (summary["total"], summary["delivered"], summary["already_done"], summary["failed"]) == (20, 20, 0, 0)
    assert stack.service.accepted() == Counter({goal: 1 for goal in first})

    again = stack.cli("backfill", "tally", *until)
    assert again.returncode == 0, again.stderr
    assert "delivered 0, skipped 20 already done" in again.stdout
    assert len(stack.service.calls) == 20

    # The second 20: interrupted with Ctrl-C part-way, then run again.
    interrupted = subprocess.Popen([sys.executable, "-m", "goalhub", "backfill", "tally", *since, "--rate", "5"],
                                   env=stack.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupted part-way: once it has delivered a few (a fixed sleep would race a loaded machine).
    api_support.wait_for(lambda: get_database().outcomes.count_documents(
        {"plugin": "tally", "goal_id": {"$in": second}}) >= 3, timeout=60, what="the backfill under way")
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=30)
    assert interrupted.returncode == 130, err
    assert "run the same command again to resume" in err
    half = get_database().outcomes.count_documents({"plugin": "tally", "goal_id": {"$in": second}})
    assert 3 <= half < 20, half
    resumed = stack.cli("backfill", "tally", *since, "--json")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["delivered"], summary["already_done"]) == (20 - half, half)
    settled(first + second, "tally", {"ok"})
    assert stack.service.accepted() == Counter({goal: 1 for goal in first + second})
    assert len(stack.service.calls) == 40

    # No other receiver ran again.
    after = {o["_id"]: o["attempts"] for o in get_database().outcomes.find({"receiver": "schedule_lifecycle_tasks"})}
    assert after == lifecycle_runs


def test_a_failing_receiver_trips_pauses_and_resumes(stack):
    stack.install_tally()
    stack.service.failing = True
    goals = create_goals(stack, 6)
    outcomes = settled(goals, "tally", {"paused", "failed"})
    # K = 3 different goals failed (each tried once or a few times before the trip); the rest
    # were paused without a call, and the retries stopped.
    assert len({goal for goal, _ in stack.service.calls}) == 3, stack.service.calls
    calls_at_trip = len(stack.service.calls)
    assert calls_at_trip <= 3 * 3
    breakers = json.loads(stack.cli("breakers", "--json").stdout)
    assert [b["id"] for b in breakers] == ["tally.tally"] and "500" in breakers[0]["tripped"]["last_error"]
    listed = json.loads(stack.cli("plugins", "--json").stdout)
    assert next(p for p in listed if p["name"] == "tally")["receivers"][0]["tripped"]["failures"] == 3
    time.sleep(2)  # retries with no backoff would have run by now
    assert len(stack.service.calls) == calls_at_trip
    assert {o["status"] for o in outcomes} <= {"paused", "failed"}

    # A goal created while it is tripped: paused, no call; the lifecycle receiver is untouched.
    [later] = create_goals(stack, 1)
    assert settled([later], "tally", {"paused"})
    assert settled([later], "schedule_lifecycle_tasks", {"ok"})
    assert len(stack.service.calls) == calls_at_trip

    stack.service.failing = False
    resumed = stack.cli("resume", "tally", "--json")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert len(json.loads(resumed.stdout)["redelivered"]) == 7
    settled(goals + [later], "tally", {"ok"})
    assert stack.service.accepted() == Counter({goal: 1 for goal in goals + [later]})
    assert json.loads(stack.cli("breakers", "--json").stdout) == []
    # Nothing runs twice afterwards.
    time.sleep(1)
    assert sum(stack.service.accepted().values()) == 7
