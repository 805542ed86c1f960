"""Receivers over time: backfill past events to one receiver, and the circuit breaker that
pauses a failing receiver until ``resume`` delivers what it missed, each exactly once.

Real embedded Redis and real RQ (SimpleWorker in-process); inline plugins per test. The
end-to-end versions, through the real stack, are in ``test_replay_e2e.py``.
"""

from __future__ import annotations

import threading
import time

import pytest
from bson import ObjectId
from click.testing import CliRunner

import goalhub
from goalhub import breaker, dispatch, replay, tasks
from goalhub.cli import main
from goalhub.connection import get_redis
from goalhub.errors import BadRequest, NotFound
from goalhub.queues import get_queue


class Counting:
    """An inline plugin whose receivers count their runs per goal; ``broken`` makes
    ``fragile`` raise, as a receiver whose downstream is down."""

    def __init__(self) -> None:
        self.runs: dict[str, list[str]] = {"steady": [], "fragile": []}
        self.broken = False

    @goalhub.receiver("goal.ended", "ConfettiGoal")
    def steady(self, goal_id):
        self.runs["steady"].append(goal_id)

    @goalhub.receiver("goal.ended", "ConfettiGoal")
    def fragile(self, goal_id):
        if self.broken:
            raise ConnectionError("sink answered 500 for https://user:pw@sink.example/x?token=abc")
        self.runs["fragile"].append(goal_id)


class Latecomer:
    """A plugin installed after goals already flowed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @goalhub.receiver("goal.created", "ConfettiGoal")
    def welcome(self, goal_id):
        self.seen.append(goal_id)


class Early:
    def __init__(self) -> None:
        self.seen: list[str] = []

    @goalhub.receiver("goal.created")
    def first(self, goal_id):
        self.seen.append(goal_id)


def ended(goal_id: str) -> dict:
    return {"goal_id": goal_id, "_cls": "ConfettiGoal", "conditions": {}, "context": {}, "reason": "ended"}


def statuses(db, receiver: str) -> list[str]:
    return sorted(o["status"] for o in db.outcomes.find({"receiver": receiver}))


@pytest.fixture(autouse=True)
def fresh_breaker():
    breaker.forget()
    yield
    breaker.forget()


@pytest.fixture
def counting(inline_plugin, monkeypatch):
    """``counting(threshold, retries, broken=True)``: the Counting plugin registered, with the
    breaker's threshold and the receivers' retries set; returns the plugin."""

    def make(threshold: int, retries: int, *, broken: bool = True) -> Counting:
        monkeypatch.setenv("GOALHUB_BREAKER_THRESHOLD", str(threshold))
        monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", str(retries))
        plugin = Counting()
        plugin.broken = broken
        inline_plugin(plugin, "counting")
        return plugin

    return make


# --- circuit breaker ------------------------------------------------------------------------


def test_a_failing_receiver_trips_after_k_events_and_its_retries_stop(db, counting, drain):
    plugin = counting(3, 2)
    goals = [str(ObjectId()) for _ in range(6)]
    for goal_id in goals:
        dispatch.deliver("goal.ended", ended(goal_id))
    drain()

    # Three different events failed (once each: their retries found it paused), then it tripped.
    assert breaker.is_paused("counting.fragile")
    state = breaker.tripped()["counting.fragile"]
    assert state["failures"] == 3 and "ConnectionError" in state["last_error"]
    fragile = list(db.outcomes.find({"receiver": "fragile"}))
    assert sorted(o["status"] for o in fragile) == ["paused"] * 6
    assert sum(o["attempts"] for o in fragile) == 3, "retries ran after the breaker tripped"
    # The goal's other receiver is untouched.
    assert sorted(plugin.runs["steady"]) == sorted(goals)
    assert statuses(db, "steady") == ["ok"] * 6

    # New events are recorded paused and not run.
    later = str(ObjectId())
    dispatch.deliver("goal.ended", ended(later))
    drain()
    assert db.outcomes.find_one({"_id": f"goal.ended:{later}|counting.fragile"})["status"] == "paused"

    # The downstream is back: resume delivers every missed event, exactly once.
    plugin.broken = False
    result = replay.resume("counting.fragile")
    assert result["closed"] == ["counting.fragile"] and len(result["redelivered"]) == 7
    drain()
    assert sorted(plugin.runs["fragile"]) == sorted(goals + [later])
    assert statuses(db, "fragile") == ["ok"] * 7
    assert not breaker.is_paused("counting.fragile")

    # Resuming again, or delivering the events again, runs nothing twice.
    assert replay.resume("counting")["redelivered"] == []
    for goal_id in goals:
        dispatch.deliver("goal.ended", ended(goal_id))
    drain()
    assert len(plugin.runs["fragile"]) == 7 and len(plugin.runs["steady"]) == 7


def test_a_success_ends_the_streak(db, counting, drain):
    plugin = counting(2, 0, broken=False)
    for broken in (True, False, True, False, True):
        plugin.broken = broken
        dispatch.deliver("goal.ended", ended(str(ObjectId())))
        drain()
        breaker.forget()
    assert not breaker.is_paused("counting.fragile")
    assert statuses(db, "fragile") == ["failed"] * 3 + ["ok"] * 2


def test_the_breaker_counts_events_not_retries(db, counting, drain):
    counting(2, 4)
    dispatch.deliver("goal.ended", ended(str(ObjectId())))
    drain()
    assert not breaker.is_paused("counting.fragile")
    assert statuses(db, "fragile") == ["failed"]
    assert db.outcomes.find_one({"receiver": "fragile"})["attempts"] == 5


def test_breakers_show_in_the_cli(db, counting, drain):
    counting(1, 0)
    dispatch.deliver("goal.ended", ended(str(ObjectId())))
    drain()
    runner = CliRunner()
    shown = runner.invoke(main, ["breakers"])
    assert shown.exit_code == 0 and "counting.fragile" in shown.output and "ConnectionError" in shown.output
    outcomes = runner.invoke(main, ["outcomes"])
    assert "counting.fragile is paused" in outcomes.output
    listed = runner.invoke(main, ["plugins", "--all"])
    assert "PAUSED" in listed.output
    resumed = runner.invoke(main, ["resume", "counting.fragile", "--no-wait"])
    assert resumed.exit_code == 0 and "closed counting.fragile" in resumed.output
    assert runner.invoke(main, ["breakers"]).output.startswith("No receiver is paused")


# --- backfill --------------------------------------------------------------------------------


def stored_goals(db, count: int, cls: str = "ConfettiGoal", start: float | None = None) -> list[str]:
    start = start or time.time() - 3600
    ids = []
    for index in range(count):
        goal_id = ObjectId()
        db.goals.insert_one({"_id": goal_id, "_cls": cls, "active": True, "conditions": {"session_id": "s"},
                             "levels": [{"target": 10}], "nbf": None, "exp": None, "context": {"type": "x"},
                             "metadata": {"user_id": "u"}, "created_at": start + index})
        ids.append(str(goal_id))
    return ids


def test_backfill_delivers_past_goals_to_the_new_receiver_only_and_once(db, inline_plugin, drain):
    early = Early()
    inline_plugin(early, "early")
    goals = stored_goals(db, 20)
    for goal_id in goals:
        dispatch.deliver("goal.created", tasks.created_arguments(db.goals.find_one({"_id": ObjectId(goal_id)})),
                         only={"early"})
    drain()
    assert len(early.seen) == 20

    late = Latecomer()
    inline_plugin(late, "latecomer")
    planned = replay.backfill("latecomer", "goal.created", dry_run=True)
    assert (planned.total, planned.delivered, planned.already_done) == (20, 20, 0)
    assert db.outcomes.count_documents({"plugin": "latecomer"}) == 0, "a dry run wrote outcomes"

    done = replay.backfill("latecomer.welcome", "goal.created")
    assert (done.delivered, done.already_done) == (20, 0)
    drain()
    assert sorted(late.seen) == sorted(goals)
    assert len(early.seen) == 20, "the backfill reached another plugin"
    assert statuses(db, "welcome") == ["ok"] * 20

    again = replay.backfill("latecomer", "goal.created")
    drain()
    assert (again.delivered, again.already_done) == (0, 20)
    assert len(late.seen) == 20


def test_an_interrupted_backfill_resumes_where_it_stopped(db, inline_plugin, drain):
    goals = stored_goals(db, 12)
    late = Latecomer()
    inline_plugin(late, "latecomer")

    def interrupt(progress):
        if progress.seen == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replay.backfill("latecomer", "goal.created", on_progress=interrupt)
    drain()
    assert len(late.seen) == 5
    resumed = replay.backfill("latecomer", "goal.created")
    drain()
    assert (resumed.delivered, resumed.already_done) == (7, 5)
    assert sorted(late.seen) == sorted(goals)


def test_a_stopped_backfill_ends_between_events_and_at_once_inside_a_pause(db, inline_plugin, drain):
    """Ctrl-C (``goalhub backfill``'s ``stop``) never ends a backfill inside an event: each event
    it delivered has its receiver's job enqueued, so a resumed run that counts it done is right.
    A stop during a pause ends the pause at once."""
    goals = stored_goals(db, 12)
    late = Latecomer()
    inline_plugin(late, "latecomer")
    stop = threading.Event()

    def stop_after_five(progress):
        if progress.delivered == 5:
            stop.set()

    first = replay.backfill("latecomer", "goal.created", on_progress=stop_after_five, stop=stop)
    assert first.stopped and (first.seen, first.delivered) == (5, 5)
    assert db.outcomes.count_documents({"plugin": "latecomer", "status": "queued"}) == 5
    drain()
    assert len(late.seen) == 5 and statuses(db, "welcome") == ["ok"] * 5

    stop.clear()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    paced = replay.backfill("latecomer", "goal.created", rate=0.01, stop=stop)  # a 100 s pause after the first
    assert time.monotonic() - started < 10
    assert paced.stopped and (paced.delivered, paced.already_done) == (1, 5)
    drain()
    resumed = replay.backfill("latecomer", "goal.created")
    drain()
    assert (resumed.delivered, resumed.already_done) == (6, 6)
    assert sorted(late.seen) == sorted(goals)


def test_backfill_filters_by_class_and_time_and_keeps_its_rate(db, inline_plugin, drain):
    now = time.time()
    old = stored_goals(db, 4, start=now - 7200)
    recent = stored_goals(db, 3, start=now - 60)
    stored_goals(db, 2, cls="OtherGoal", start=now - 60)
    late = Latecomer()
    inline_plugin(late, "latecomer")

    only_recent = replay.backfill("latecomer", "goal.created", since=replay.parse_when("10m", "since"))
    assert (only_recent.total, only_recent.delivered, only_recent.not_acting) == (5, 3, 2)
    drain()
    assert sorted(late.seen) == sorted(recent)

    started = time.monotonic()
    paced = replay.backfill("latecomer", "goal.created", goal_class="ConfettiGoal", rate=20)
    took = time.monotonic() - started
    assert (paced.total, paced.delivered, paced.already_done) == (7, 4, 3)
    # Paced by the events delivered (4 at 20/s: 3 gaps); the 3 already done cost no pacing.
    assert took >= 3 / 20 * 0.9, f"4 deliveries at 20/s took {took:.2f}s"
    drain()
    assert sorted(late.seen) == sorted(recent + old)


def test_backfill_goal_ended_and_goal_added_from_the_store(db, inline_plugin, drain):
    class Listener:
        def __init__(self):
            self.ended, self.added = [], []

        @goalhub.receiver("goal.ended")
        def on_end(self, goal_id, reason):
            self.ended.append((goal_id, reason))

        @goalhub.receiver("goal.added")
        def on_add(self, goal_id, session_id, streamer_id):
            self.added.append((goal_id, session_id, streamer_id))

    session = db.sessions.insert_one({"user": "streamer-1", "active": True}).inserted_id
    goals = stored_goals(db, 3)
    db.goals.update_many({}, {"$set": {"conditions.session_id": str(session)}})
    db.goals.update_one({"_id": ObjectId(goals[0])}, {"$set": {"ended_at": time.time(), "end_reason": "expired"}})
    # goal.added was delivered live for one goal only (to no receiver yet).
    goal = db.goals.find_one({"_id": ObjectId(goals[1])})
    dispatch.deliver("goal.added", {"goal_id": goals[1], "_cls": goal["_cls"], "conditions": goal["conditions"],
                                    "context": goal["context"], "session_id": str(session),
                                    "streamer_id": "streamer-1"})
    listener = Listener()
    inline_plugin(listener, "listener")
    assert replay.backfill("listener", "goal.ended").delivered == 1
    assert replay.backfill("listener", "goal.added").delivered == 1
    drain()
    assert listener.ended == [(goals[0], "expired")]
    assert listener.added == [(goals[1], str(session), "streamer-1")]


def test_targets_and_times_are_checked():
    with pytest.raises(NotFound, match="no installed receiver"):
        replay.backfill("nobody", "goal.created")
    with pytest.raises(BadRequest):
        replay.parse_when("last tuesday", "--since")
    assert abs(replay.parse_when("2h", "x") - (time.time() - 7200)) < 5
    assert replay.parse_when("2026-01-01T00:00:00", "x") == 1767225600.0


def test_backfill_cli_summary(db, inline_plugin):
    stored_goals(db, 3)
    inline_plugin(Latecomer(), "latecomer")
    runner = CliRunner()
    dry = runner.invoke(main, ["backfill", "latecomer", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would deliver 3" in dry.output
    real = runner.invoke(main, ["backfill", "latecomer", "--json"])
    assert real.exit_code == 0, real.output
    assert '"delivered": 3' in real.output and '"failed": 0' in real.output
    again = runner.invoke(main, ["backfill", "latecomer"])
    assert "delivered 0, skipped 3 already done" in again.output


# --- the ADMIN API ---------------------------------------------------------------------------


def test_admin_api_backfill_resume_and_receivers(db, inline_plugin, drain, monkeypatch):
    from goalhub.api import create_app
    from goalhub.auth import mint_token

    monkeypatch.setenv("GOALHUB_BREAKER_THRESHOLD", "1")
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    client = create_app().test_client()
    admin = {"Authorization": f"Bearer {mint_token(str(ObjectId()), ['ADMIN'])}"}
    streamer = {"Authorization": f"Bearer {mint_token(str(ObjectId()), ['CREATOR'])}"}
    goals = stored_goals(db, 4)
    late = Latecomer()
    inline_plugin(late, "latecomer")

    # Only an ADMIN; a bad request is a clear 400/404 and starts nothing.
    assert client.post("/admin/backfill", json={"target": "latecomer"}, headers=streamer).status_code == 403
    assert client.post("/admin/backfill", json={"target": "latecomer"}).status_code == 401
    assert client.get("/admin/receivers", headers=streamer).status_code == 403
    bad = [({"target": {"$ne": None}}, 400), ({"target": "latecomer", "rate": -1}, 400),
           ({"target": "latecomer", "event": "goal.deleted"}, 400), ({"target": "latecomer", "event": {}}, 400),
           ({"target": "latecomer", "cls": ["x"]}, 400), ({"target": "latecomer", "dry_run": "yes"}, 400),
           ({"target": "nobody"}, 404),
           ({"target": "latecomer", "since": "yesterday-ish"}, 400), ({"target": "latecomer", "x": 1}, 400)]
    for body, status in bad:
        answer = client.post("/admin/backfill", json=body, headers=admin)
        assert answer.status_code == status, (body, answer.get_json())
        assert set(answer.get_json()) == {"error"}
    assert db.outcomes.count_documents({}) == 0

    started = client.post("/admin/backfill", json={"target": "latecomer", "rate": 1000}, headers=admin)
    assert started.status_code == 202
    location = started.headers["Location"]
    drain()
    progress = client.get(location, headers=admin).get_json()
    assert progress["state"] == "finished" and progress["delivered"] == 4 and progress["total"] == 4
    assert sorted(late.seen) == sorted(goals)

    plugin = Counting()
    plugin.broken = True
    inline_plugin(plugin, "counting")
    dispatch.deliver("goal.ended", ended(goals[0]))
    dispatch.deliver("goal.ended", ended(goals[1]))
    drain()
    listed = client.get("/admin/receivers", headers=admin).get_json()["receivers"]
    tripped = {r["id"]: r["tripped"] for r in listed}
    assert tripped["counting.fragile"]["failures"] == 1 and tripped["counting.steady"] is None
    # The operator sees it on the dashboard and in the metrics.
    page = client.get("/rq/goalhub/", headers=admin)
    assert page.status_code == 200 and b"counting.fragile" in page.data and b"ConnectionError" in page.data
    scraped = client.get("/metrics", headers=admin).data.decode()
    assert 'goalhub_receiver_tripped{receiver="counting.fragile"} 1.0' in scraped
    plugin.broken = False
    resumed = client.post("/admin/receivers/counting.fragile/resume", headers=admin).get_json()
    assert resumed["closed"] == ["counting.fragile"] and len(resumed["redelivered"]) == 2
    drain()
    assert sorted(plugin.runs["fragile"]) == sorted(goals[:2])
    assert "goalhub_receiver_tripped{" not in client.get("/metrics", headers=admin).data.decode()


def test_a_run_killed_before_it_could_record_counts_towards_the_breaker(db, monkeypatch):
    """A work-horse killed mid-run (or cut by RQ's timeout) cannot record its own failure: RQ's
    failure callback does, and the breaker counts it like a raise."""
    from goalhub.queues import get_queue

    monkeypatch.setenv("GOALHUB_BREAKER_THRESHOLD", "1")
    key = f"goal.ended:{ObjectId()}|counting.fragile"
    db.outcomes.insert_one({"_id": key, "status": "running", "plugin": "counting", "receiver": "fragile"})
    job = get_queue().enqueue(dispatch.run_receiver, key)
    dispatch.on_receiver_job_failure(job, job.connection, SystemExit, SystemExit("work-horse killed"), None)
    assert db.outcomes.find_one({"_id": key})["status"] == "failed"
    assert breaker.tripped()["counting.fragile"]["failures"] == 1
    # A failure the receiver recorded itself is not counted twice by the callback.
    dispatch.on_receiver_job_failure(job, job.connection, SystemExit, SystemExit("again"), None)
    assert breaker.tripped()["counting.fragile"]["failures"] == 1


def test_the_admin_backfill_refuses_times_and_rates_that_are_not_finite_or_sane(db, inline_plugin):
    from goalhub.api import create_app
    from goalhub.auth import mint_token

    client = create_app().test_client()
    admin = {"Authorization": f"Bearer {mint_token(str(ObjectId()), ['ADMIN'])}"}
    inline_plugin(Latecomer(), "latecomer")
    bad = [("since", "nan"), ("since", "inf"), ("until", "-inf"), ("since", "1e400"), ("until", 1e300),
           ("since", -5), ("since", "99999999999999999999d"), ("rate", 0.001), ("rate", 1e-300), ("rate", 1e6)]
    for name, value in bad:
        answer = client.post("/admin/backfill", json={"target": "latecomer", name: value}, headers=admin)
        assert answer.status_code == 400, (name, value, answer.get_json())
        assert answer.get_json()["error"]["field"] == name
    # JSON's own out-of-range number (Python reads it as inf).
    answer = client.post("/admin/backfill", data='{"target": "latecomer", "since": 1e400}',
                         content_type="application/json", headers=admin)
    assert answer.status_code == 400 and answer.get_json()["error"]["field"] == "since"
    assert db.backfills.count_documents({}) == 0


def test_an_admin_backfill_runs_as_chunks_that_never_sleep_and_done_events_cost_no_pacing(db, inline_plugin,
                                                                                       drain, monkeypatch):
    from goalhub.api import create_app
    from goalhub.auth import mint_token

    client = create_app().test_client()
    admin = {"Authorization": f"Bearer {mint_token(str(ObjectId()), ['ADMIN'])}"}
    goals = stored_goals(db, 5)
    late = Latecomer()
    inline_plugin(late, "latecomer")
    replay.backfill("latecomer", "goal.created", until=db.goals.find_one({"_id": ObjectId(goals[2])})["created_at"])
    drain()
    assert len(late.seen) == 2  # two done already, three to go
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    # The slowest rate allowed: one event per chunk, the next chunk scheduled 100 s later.
    started = client.post("/admin/backfill", json={"target": "latecomer", "rate": replay.MIN_RATE}, headers=admin)
    assert started.status_code == 202
    location = started.headers["Location"]
    backfill_id = started.get_json()["backfill_id"]
    drain(scheduled=False)
    progress = client.get(location, headers=admin).get_json()
    # The done events were walked past in the first chunk without pacing; one new one delivered.
    assert (progress["state"], progress["already_done"], progress["delivered"]) == ("running", 2, 1)
    assert slept == []
    [scheduled] = get_queue("backfill").scheduled_job_registry.get_job_ids()
    assert scheduled == f"backfill-{backfill_id}-1"
    # Redis loses the scheduled chunk: the reconciler enqueues it again once it is due.
    get_redis().flushall()
    assert replay.requeue_backfills(time.time() + 2 / replay.MIN_RATE) == [backfill_id]
    drain(scheduled=False)
    assert replay.requeue_backfills(time.time() + 4 / replay.MIN_RATE) == []  # chunk 2 is scheduled
    get_redis().flushall()  # and lost too
    assert replay.requeue_backfills(time.time() + 4 / replay.MIN_RATE) == [backfill_id]
    drain(scheduled=False)
    progress = client.get(location, headers=admin).get_json()
    assert (progress["state"], progress["delivered"], progress["seen"], progress["total"]) == ("finished", 3, 5, 5)
    assert sorted(late.seen) == sorted(goals) and slept == []
    # A chunk job run again does nothing.
    assert replay.run_backfill_chunk(backfill_id, 1)["state"] == "not run"
