"""A receiver renamed or removed by a plugin upgrade: its pending work fails with a clear reason,
and ``goalhub retarget`` / ``goalhub drop`` (and ``POST /admin/receivers/<old>/retarget`` /
``drop``) move it to the new receiver or drop it, each event run at most once.

Real embedded Redis, real RQ (SimpleWorker in-process), the real CLI and API app; inline plugins
stand for a plugin's two versions, registered under the same plugin name.
"""

from __future__ import annotations

import json
import time

import pytest
from bson import ObjectId
from click.testing import CliRunner
from rq.job import Job

import goalhub
from goalhub import breaker, dispatch, ledger, replay, retarget
from goalhub.cli import main
from goalhub.connection import get_redis
from goalhub.errors import BadRequest, NotFound
from goalhub.queues import get_queue, job_id


def _count(goal_id: str) -> None:
    goalhub.get_database().tallies.update_one({"_id": goal_id}, {"$inc": {"runs": 1}}, upsert=True)


class TallyV1:
    """Version 1: ``tally``, on every class, its sink down (``broken``)."""

    def __init__(self, broken: bool = True) -> None:
        self.broken = broken

    @goalhub.receiver("goal.created", retries=0)
    def tally(self, goal_id):
        if self.broken:
            raise ConnectionError("the tally sink is down")
        _count(goal_id)


class TallyV2:
    """Version 2: ``tally`` renamed ``count``, and only for ConfettiGoal."""

    @goalhub.receiver("goal.created", "ConfettiGoal")
    def count(self, goal_id):
        _count(goal_id)


class Renamed:
    """Version 2 of the plugin under a new plugin name: the same receiver name."""

    @goalhub.receiver("goal.created")
    def tally(self, goal_id):
        _count(goal_id)


def created(goal_id: str, cls: str = "ConfettiGoal") -> dict:
    return {"goal_id": goal_id, "active": True, "_cls": cls, "conditions": {}, "context": {}, "levels": [],
            "nbf": None, "exp": None, "streamer_id": None, "test_fire": False}


def runs(db, goal_id: str) -> int:
    return (db.tallies.find_one({"_id": goal_id}) or {}).get("runs", 0)


def outcome(db, goal_id: str, receiver: str) -> dict:
    return db.outcomes.find_one({"_id": f"goal.created:{goal_id}|{receiver}"})


def failed_jobs() -> list[str]:
    return get_queue().failed_job_registry.get_job_ids()


@pytest.fixture(autouse=True)
def fresh_breaker():
    breaker.forget()
    yield
    breaker.forget()


@pytest.fixture
def upgrade(inline_plugin):
    """``upgrade(new_plugin, name)``: the plugin ``tallies`` (version 1) replaced by ``new_plugin``."""
    from goalhub import plugins

    def replace(new_plugin, name: str = "tallies") -> None:
        plugins.unregister("tallies")
        inline_plugin(new_plugin, name)

    inline_plugin(TallyV1(), "tallies")
    return replace


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_a_renamed_receivers_pending_work_fails_saying_what_to_do_and_goalhub_retarget_runs_it_once(
        db, drain, upgrade):
    goals = [str(ObjectId()) for _ in range(3)]
    for goal_id in goals[:2]:  # failed on version 1 (its sink was down)
        dispatch.deliver("goal.created", created(goal_id))
    drain()
    dispatch.deliver("goal.created", created(goals[2]))  # its job still queued at the upgrade
    assert [outcome(db, g, "tallies.tally")["status"] for g in goals] == ["failed", "failed", "queued"]

    upgrade(TallyV2())
    stale = [item for item in json.loads(invoke("outcomes", "--stale", "--older-than", "0", "--json").output)
             if "tallies" in item["id"]]
    assert [item["id"] for item in stale] == [f"goal.created:{goals[2]}|tallies.tally"]
    assert stale[0]["hint"].startswith("receiver tallies.tally is not installed here: renamed or removed by an "
                                       "upgrade? `goalhub retarget tallies.tally NEW_ID` or `goalhub drop")
    drain()
    stranded = outcome(db, goals[2], "tallies.tally")
    assert stranded["status"] == "failed"
    assert ("receiver tallies.tally is not installed on this worker" in stranded["error"]
            and "`goalhub retarget tallies.tally NEW_ID` or `goalhub drop tallies.tally`" in stranded["error"])
    assert len(failed_jobs()) == 3
    assert invoke("outcomes", "--failed").output.count("is not installed") == 1

    # A dry run lists what would move and changes nothing.
    before = list(db.outcomes.find())
    planned = invoke("retarget", "tallies.tally", "tallies.count", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.output)
    assert plan["pending"] == 3 and sorted(plan["outcomes"]) == sorted(f"goal.created:{g}|tallies.tally" for g in goals)
    assert list(db.outcomes.find()) == before and len(failed_jobs()) == 3

    moved = invoke("retarget", "tallies.tally", "tallies.count", "--json")
    assert moved.exit_code == 0, moved.output
    result = json.loads(moved.output)
    assert result["pending"] == 3 and len(result["retargeted"]) == 3 and len(result["jobs"]) == 3
    assert result["failed"] == 0 and result["finished"] is True
    for goal_id in goals:
        old, new = outcome(db, goal_id, "tallies.tally"), outcome(db, goal_id, "tallies.count")
        assert old["status"] == "retargeted" and old["retargeted_to"] == "tallies.count"
        assert "retarget_pending" not in old
        assert new["status"] == "ok" and new["retargeted_from"] == "tallies.tally" and new["attempts"] == 1
        assert runs(db, goal_id) == 1
        assert "tallies.count" in db.events.find_one({"_id": f"goal.created:{goal_id}"})["receivers"]
    assert failed_jobs() == []  # dealt with: the failed-jobs alert stops counting them

    # Once: again, nothing is pending; a late job of the old receiver and a backfill to the new
    # one run nothing.
    again = json.loads(invoke("retarget", "tallies.tally", "tallies.count", "--json").output)
    assert again["pending"] == 0 and again["retargeted"] == []
    assert dispatch.run_receiver(f"goal.created:{goals[0]}|tallies.tally")["status"] == "not run"
    assert replay.backfill("tallies.count", "goal.created").delivered == 0
    drain()
    assert [runs(db, g) for g in goals] == [1, 1, 1]
    human = invoke("retarget", "tallies.tally", "tallies.count")
    assert human.exit_code == 0 and "tallies.tally -> tallies.count: 0 pending outcome(s)" in human.output


def test_retarget_runs_no_event_twice_whatever_the_ledger_the_new_receiver_or_a_crash_left(
        db, drain, upgrade, monkeypatch):
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "60")
    g = {name: str(ObjectId()) for name in ("done", "delivered", "ledgered", "crashed", "other", "running", "stale")}
    for name, goal_id in g.items():
        dispatch.deliver("goal.created", created(goal_id, "OtherGoal" if name == "other" else "ConfettiGoal"))
    drain()
    upgrade(TallyV2())
    key = {name: f"goal.created:{goal_id}|tallies.tally" for name, goal_id in g.items()}
    # The old receiver finished this one (the ledger says so) but its ok was lost in a crash.
    ledger.finish(db, g["done"], "goal.created", "tallies.tally")
    # The new receiver got this event already (a backfill, or delivered to it since).
    dispatch.deliver("goal.created", created(g["delivered"]), only={"tallies.count"})
    drain()
    assert runs(db, g["delivered"]) == 1
    # The new receiver finished this one, and its outcome was purged by retention since.
    ledger.finish(db, g["ledgered"], "goal.created", "tallies.count")
    # A retarget that crashed between taking the outcome and writing the new one.
    db.outcomes.update_one({"_id": key["crashed"]}, {"$set": {
        "status": "retargeted", "retargeted_to": "tallies.count", "retarget_pending": True}})
    # One a job holds right now, one a dead job left running past the job timeout.
    db.outcomes.update_one({"_id": key["running"]}, {"$set": {"status": "running", "started_at": time.time()}})
    db.outcomes.update_one({"_id": key["stale"]}, {"$set": {"status": "running", "started_at": time.time() - 120}})

    result = retarget.retarget("tallies.tally", "tallies.count")
    new = {name: f"goal.created:{goal_id}|tallies.count" for name, goal_id in g.items()}
    assert result["finished_before"] == [key["done"]]
    assert result["already_delivered"] == [new["delivered"]]
    assert result["skipped"] == [new["other"]]
    assert sorted(result["retargeted"]) == sorted([new["crashed"], new["ledgered"], new["stale"]])
    assert sorted(result["jobs"]) == sorted(job_id("receiver", new[n]) for n in ("crashed", "stale"))
    drain()

    assert outcome(db, g["done"], "tallies.tally")["status"] == "ok"
    assert outcome(db, g["done"], "tallies.count") is None and runs(db, g["done"]) == 0
    assert outcome(db, g["delivered"], "tallies.tally")["status"] == "retargeted"
    assert runs(db, g["delivered"]) == 1
    ledgered = outcome(db, g["ledgered"], "tallies.count")
    assert ledgered["status"] == "ok" and ledgered["result"] == dispatch.FINISHED_BEFORE
    assert runs(db, g["ledgered"]) == 0
    assert outcome(db, g["other"], "tallies.count")["status"] == "skipped" and runs(db, g["other"]) == 0
    for name in ("crashed", "stale"):
        assert outcome(db, g[name], "tallies.count")["status"] == "ok" and runs(db, g[name]) == 1
        assert "retarget_pending" not in outcome(db, g[name], "tallies.tally")
    assert outcome(db, g["running"], "tallies.tally")["status"] == "running"  # not taken from its job
    assert outcome(db, g["running"], "tallies.count") is None
    assert retarget.retarget("tallies.tally", "tallies.count")["pending"] == 0


def test_goalhub_drop_drops_a_removed_receivers_pending_work_and_nothing_runs_it(db, drain, upgrade):
    goals = [str(ObjectId()) for _ in range(2)]
    for goal_id in goals:
        dispatch.deliver("goal.created", created(goal_id))
    drain()
    upgrade(TallyV2())
    ledger.finish(db, goals[1], "goal.created", "tallies.tally")
    assert json.loads(invoke("drop", "tallies.tally", "--dry-run", "--json").output)["pending"] == 2
    assert outcome(db, goals[0], "tallies.tally")["status"] == "failed"

    dropped = invoke("drop", "tallies.tally")
    assert dropped.exit_code == 0, dropped.output
    assert "tallies.tally: dropped 1 pending outcome(s), 1 finished before" in dropped.output
    assert outcome(db, goals[0], "tallies.tally")["status"] == "dropped"
    assert outcome(db, goals[1], "tallies.tally")["status"] == "ok"
    assert failed_jobs() == [job_id("receiver", f"goal.created:{goals[1]}|tallies.tally")]  # its own: not dropped
    # Never run again: a late job, a redelivery of the event, a retry by hand, a retarget.
    assert dispatch.run_receiver(f"goal.created:{goals[0]}|tallies.tally")["status"] == "not run"
    dispatch.deliver("goal.created", created(goals[0]), only={"tallies.tally"})
    with pytest.raises(LookupError):
        dispatch.retry_outcome(f"goal.created:{goals[0]}|tallies.tally")
    assert retarget.retarget("tallies.tally", "tallies.count")["pending"] == 0
    drain()
    assert outcome(db, goals[0], "tallies.tally")["status"] == "dropped" and runs(db, goals[0]) == 0


def test_a_renamed_plugin_is_retargeted_receiver_by_receiver(db, drain, upgrade):
    goal_id = str(ObjectId())
    dispatch.deliver("goal.created", created(goal_id))
    drain()
    upgrade(Renamed(), "tallies2")
    result = retarget.retarget("tallies", "tallies2")
    assert result["retargeted"] == [f"goal.created:{goal_id}|tallies2.tally"]
    drain()
    assert outcome(db, goal_id, "tallies2.tally")["status"] == "ok" and runs(db, goal_id) == 1


@pytest.mark.parametrize(("old", "new", "code"), [
    ("tallies.tally", "tallies.tally", "same_target"),
    ("tallies", "tallies.count", "invalid_target"),
    ("tallies.tally;rm -rf", "tallies.count", "invalid_target"),
    ("x" * 65, "tallies.count", "invalid_target"),
    ("tallies.tally", "a.b.c", "invalid_target"),
    ("tallies.tally", "", "invalid_target"),
])
def test_retarget_refuses_ids_that_name_no_receiver(db, upgrade, old, new, code):
    with pytest.raises(BadRequest) as refused:
        retarget.retarget(old, new)
    assert refused.value.code == code


def test_retarget_to_a_receiver_not_installed_writes_nothing(db, drain, upgrade):
    goal_id = str(ObjectId())
    dispatch.deliver("goal.created", created(goal_id))
    drain()
    upgrade(TallyV2())
    before = list(db.outcomes.find())
    with pytest.raises(NotFound, match="no installed receiver tallies.counter of goal.created"):
        retarget.retarget("tallies.tally", "tallies.counter")
    assert list(db.outcomes.find()) == before
    refused = CliRunner().invoke(main, ["retarget", "tallies.tally", "tallies.counter"])
    assert refused.exit_code == 1 and "Traceback" not in refused.output
    assert refused.output.startswith("Error: no installed receiver tallies.counter") and refused.output.count("\n") == 1
    hostile = CliRunner().invoke(main, ["drop", "tallies.tally\n$(reboot)"])
    assert hostile.exit_code == 1 and hostile.output == "Error: old must name a plugin or plugin.receiver\n"


def test_the_admin_api_retargets_and_drops_for_an_admin_only_and_refuses_hostile_input(db, drain, upgrade):
    from goalhub.api import create_app
    from goalhub.auth import mint_token

    client = create_app().test_client()
    admin = {"Authorization": f"Bearer {mint_token(str(ObjectId()), ['ADMIN'])}"}
    streamer = {"Authorization": f"Bearer {mint_token(str(ObjectId()), ['CREATOR'])}"}
    goals = [str(ObjectId()) for _ in range(2)]
    dispatch.deliver("goal.created", created(goals[0]))
    drain()
    dispatch.deliver("goal.created", created(goals[1]), only={"tallies.tally"})
    drain()
    upgrade(TallyV2())
    path = "/admin/receivers/tallies.tally"
    assert client.post(f"{path}/retarget", json={"new": "tallies.count"}).status_code == 401
    assert client.post(f"{path}/retarget", json={"new": "tallies.count"}, headers=streamer).status_code == 403
    assert client.post(f"{path}/drop", headers=streamer).status_code == 403
    before = list(db.outcomes.find())
    bad = [(f"{path}/retarget", {"new": {"$ne": None}}, 400), (f"{path}/retarget", {}, 400),
           (f"{path}/retarget", {"new": "tallies.count", "x": 1}, 400),
           (f"{path}/retarget", {"new": "tallies.count", "dry_run": "yes"}, 400),
           (f"{path}/retarget", {"new": "tallies.tally"}, 400), (f"{path}/retarget", {"new": "tallies"}, 400),
           (f"{path}/retarget", {"new": "tallies.nothing"}, 404),
           ("/admin/receivers/a%24b/retarget", {"new": "tallies.count"}, 400),
           (f"/admin/receivers/{'p' * 65}/drop", {}, 400), (f"{path}/drop", {"dry_run": 1}, 400),
           (f"{path}/drop", {"new": "x"}, 400)]
    for url, body, status in bad:
        answer = client.post(url, json=body, headers=admin)
        assert answer.status_code == status, (url, body, answer.get_json())
        assert set(answer.get_json()) == {"error"}
    assert list(db.outcomes.find()) == before

    planned = client.post(f"{path}/retarget", json={"new": "tallies.count", "dry_run": True}, headers=admin)
    assert planned.status_code == 200 and planned.get_json()["pending"] == 2
    assert list(db.outcomes.find()) == before
    moved = client.post(f"{path}/retarget", json={"new": "tallies.count"}, headers=admin).get_json()
    assert len(moved["retargeted"]) == 2 and moved["more"] is False
    drain()
    assert [runs(db, g) for g in goals] == [1, 1]
    assert client.post(f"{path}/drop", headers=admin).get_json()["pending"] == 0
    assert Job.fetch_many([job_id("receiver", f"goal.created:{g}|tallies.tally") for g in goals],
                          connection=get_redis()) == [None, None]
