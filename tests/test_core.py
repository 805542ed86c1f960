"""The core engine: signals to receiver jobs, isolation, outcomes, create/activate/end tasks.

Real embedded Redis and real RQ (SimpleWorker in-process); inline plugins per test.
"""

from __future__ import annotations

import time

import pluggy
import pytest
from bson import ObjectId
from goalhub_demo.world import PlatformGoalTypes
from rq.job import JobStatus
from rq.registry import FailedJobRegistry

import goalhub
from goalhub import dispatch, plugins, receivers, signals, tasks
from goalhub.queues import get_queue, get_scheduler


def goal_document(cls: str = "ExclusiveGoal", **overrides) -> dict:
    goal = {
        "_id": str(ObjectId()),
        "_cls": cls,
        "active": True,
        "conditions": {"session_id": str(ObjectId()), "exclusive_to": "room"},
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": None,
        "context": {"type": "exclusive"},
        "metadata": {"user_id": str(ObjectId())},
    }
    goal.update(overrides)
    return goal


class Recorder:
    """An inline plugin whose receivers record every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    @goalhub.receiver("goal.created", "ExclusiveGoal", "TriggerExclusiveGoal")
    def on_exclusive(self, goal_id, _cls, context):
        self.calls.append(("on_exclusive", {"goal_id": goal_id, "_cls": _cls, "context": context}))
        return {"seen": goal_id}

    @goalhub.receiver("goal.created")
    def on_every_goal(self, goal_id, _cls):
        self.calls.append(("on_every_goal", {"goal_id": goal_id}))

    @goalhub.receiver("goal.added", "ShowGoal")
    def on_added(self, goal_id, session_id, streamer_id):
        self.calls.append(("on_added", {"session_id": session_id, "streamer_id": streamer_id}))

    @goalhub.receiver("goal.ended", "ExclusiveGoal")
    def on_ended(self, goal_id, reason):
        self.calls.append(("on_ended", {"reason": reason}))


def names(calls):
    return sorted(name for name, _ in calls)


def test_signals_keep_the_seeds_names():
    assert signals.leaderboards.name == "features.leaderboards"
    assert signals.livestream.name == "features.livestream"
    assert set(signals.EVENTS) == {"goal.created", "goal.added", "goal.ended"}


def test_create_goal_stores_the_goal_and_routes_receivers_by_class(db, inline_plugin, drain):
    recorder = Recorder()
    inline_plugin(recorder, "recorder")
    goal = goal_document("ExclusiveGoal")
    tasks.enqueue_create_goal(goal)
    drain()

    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored["_cls"] == "ExclusiveGoal" and stored["levels"] == [{"target": 300}]
    assert names(recorder.calls) == ["on_every_goal", "on_exclusive"]
    on_exclusive = next(args for name, args in recorder.calls if name == "on_exclusive")
    assert on_exclusive == {"goal_id": goal["_id"], "_cls": "ExclusiveGoal", "context": {"type": "exclusive"}}

    outcomes = {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal["_id"]})}
    assert outcomes["on_exclusive"]["status"] == "ok"
    assert outcomes["on_exclusive"]["result"] == {"seen": goal["_id"]}
    assert outcomes["on_exclusive"]["attempts"] == 1
    assert outcomes["on_exclusive"]["duration_ms"] >= 0
    assert outcomes["on_every_goal"]["status"] == "ok"
    # the core's lifecycle receiver acts on ExclusiveGoal too (activate at nbf)
    assert outcomes["schedule_lifecycle_tasks"]["status"] == "ok"


def test_receivers_not_acting_on_the_class_are_recorded_as_skipped(db, inline_plugin, drain):
    inline_plugin(PlatformGoalTypes(), "platform-goal-types")  # the classes' declared lifecycle
    recorder = Recorder()
    inline_plugin(recorder, "recorder")
    goal = goal_document("KaraokeGoal", context={"type": "karaoke"})
    tasks.enqueue_create_goal(goal)
    drain()
    assert names(recorder.calls) == ["on_every_goal"]
    statuses = {o["receiver"]: o["status"] for o in db.outcomes.find({"goal_id": goal["_id"]})}
    assert statuses == {"on_exclusive": "skipped", "on_every_goal": "ok", "schedule_lifecycle_tasks": "skipped"}


def test_running_create_goal_twice_creates_one_goal_and_runs_receivers_once(db, inline_plugin, drain):
    recorder = Recorder()
    inline_plugin(recorder, "recorder")
    goal = goal_document()
    tasks.create_goal(goal)
    drain()
    tasks.create_goal(goal)  # redelivery of the same job
    drain()
    assert db.goals.count_documents({"_id": ObjectId(goal["_id"])}) == 1
    assert names(recorder.calls) == ["on_every_goal", "on_exclusive"]


def test_a_raising_receiver_is_isolated_retried_alone_and_left_failed(db, inline_plugin, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "2")
    recorder = Recorder()
    attempts = []

    class Broken:
        @goalhub.receiver("goal.created")
        def explode(self, goal_id):
            attempts.append(goal_id)
            raise RuntimeError("store write failed")

    inline_plugin(recorder, "recorder")
    inline_plugin(Broken(), "broken")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()

    assert names(recorder.calls) == ["on_every_goal", "on_exclusive"]  # the others ran, once
    assert len(attempts) == 3  # first try + 2 retries
    failed = db.outcomes.find_one({"goal_id": goal["_id"], "receiver": "explode"})
    assert failed["status"] == "failed"
    assert failed["attempts"] == 3
    assert "RuntimeError: store write failed" in failed["error"]
    registry = FailedJobRegistry(queue=get_queue())
    assert len(registry.get_job_ids()) == 1

    # Fixed, then retried by hand: it completes, and the others are not run again.
    plugins.unregister("broken")

    class Fixed:
        @goalhub.receiver("goal.created")
        def explode(self, goal_id):
            attempts.append(("fixed", goal_id))
            return "ok now"

    inline_plugin(Fixed(), "broken")
    dispatch.retry_outcome(failed["_id"])
    drain()
    done = db.outcomes.find_one({"_id": failed["_id"]})
    assert done["status"] == "ok" and done["result"] == "ok now" and done["attempts"] == 4
    assert names(recorder.calls) == ["on_every_goal", "on_exclusive"]


def test_a_receiver_that_succeeded_is_not_run_again_when_its_event_is_delivered_again(db, inline_plugin, drain):
    recorder = Recorder()
    inline_plugin(recorder, "recorder")
    arguments = tasks.created_arguments({**goal_document(), "_id": ObjectId()})
    signals.leaderboards.send("goal.created", **arguments)
    drain()
    signals.leaderboards.send("goal.created", **arguments)
    drain()
    assert names(recorder.calls) == ["on_every_goal", "on_exclusive"]


def test_goal_added_and_goal_ended_reach_their_receivers(db, inline_plugin, drain):
    recorder = Recorder()
    inline_plugin(recorder, "recorder")
    goal_id = str(ObjectId())
    signals.livestream.send(
        "goal.added", goal_id=goal_id, _cls="ShowGoal", conditions={}, context={}, session_id="s1", streamer_id="u1"
    )
    drain()
    assert recorder.calls == [("on_added", {"session_id": "s1", "streamer_id": "u1"})]

    goal = goal_document()
    tasks.create_goal(goal)
    drain()
    assert tasks.end_goal(goal["_id"]) is True
    assert tasks.end_goal(goal["_id"]) is False  # ending twice ends once
    drain()
    assert [args for name, args in recorder.calls if name == "on_ended"] == [{"reason": "ended"}]
    ended = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert ended["active"] is False and ended["ended_at"] > 0


def test_activate_goal_follows_seed_000(db):
    inactive = goal_document("TriggerExclusiveGoal", active=False, nbf=time.time() - 1)
    active = goal_document("ExclusiveGoal", active=True, nbf=time.time() - 1)
    for goal in (inactive, active):
        db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    assert tasks.activate_goal(inactive["_id"]) is True
    assert tasks.activate_goal(inactive["_id"]) is False
    # "BUT ExclusiveGoal is already active, nothing to update, returned"
    assert tasks.activate_goal(active["_id"]) is False
    assert db.goals.find_one({"_id": ObjectId(inactive["_id"])})["active"] is True


def test_activate_goal_never_runs_before_nbf(db):
    nbf = time.time() + 0.6
    goal = goal_document("TriggerPrivateGoal", active=False, nbf=nbf)
    db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    assert tasks.activate_goal(goal["_id"]) is True  # arrives early, waits
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored["activated_at"] >= nbf


def test_an_ended_goal_is_not_activated(db):
    goal = goal_document("TriggerPrivateGoal", active=False, nbf=time.time() - 1)
    db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    tasks.end_goal(goal["_id"])
    assert tasks.activate_goal(goal["_id"]) is False


def test_lifecycle_schedules_activation_at_nbf_and_end_at_exp_through_rq_scheduler(db, drain):
    nbf = time.time() + 1.5
    exp = nbf + 1.5
    goal = goal_document("TriggerExclusiveGoal", active=False, nbf=nbf, exp=exp)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    scheduled = {job.id for job in get_scheduler().get_jobs()}
    assert scheduled == {f"activate-{goal['_id']}", f"end-{goal['_id']}"}
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is False

    deadline = time.time() + 15
    while time.time() < deadline and not db.goals.find_one({"_id": ObjectId(goal["_id"]), "ended_at": {"$exists": True}}):
        drain()
        time.sleep(0.05)
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert nbf <= stored["activated_at"] < exp
    assert stored["ended_at"] >= exp and stored["end_reason"] == "expired" and stored["active"] is False


def test_ending_a_goal_first_cancels_its_activation(db, drain):
    goal = goal_document("ShowFundingGoal", active=False, nbf=time.time() + 30)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    assert len(list(get_scheduler().get_jobs())) == 1
    tasks.end_goal(goal["_id"])
    assert list(get_scheduler().get_jobs()) == []


def test_past_nbf_activates_at_once(db, drain):
    goal = goal_document("TriggerPrivateGoal", active=False, nbf=time.time() - 5)
    tasks.enqueue_create_goal(goal)
    drain(scheduled=False)
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is True


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(monkeypatch, tmp_path):
    (tmp_path / "good_plugin.py").write_text(
        "import goalhub\n@goalhub.receiver('goal.created')\ndef good(goal_id):\n    return goal_id\n"
    )
    (tmp_path / "bad_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("GOALHUB_PLUGINS", "bad_plugin,good_plugin")
    plugins.reset()
    infos = {info.name: info for info in plugins.plugin_infos()}
    assert "missing dependency xyz" in infos["bad_plugin"].error
    assert infos["good_plugin"].error is None
    assert [r.name for r in receivers.receivers("goal.created")][0] == "good"


def test_disabled_plugins_are_blocked(monkeypatch):
    monkeypatch.setenv("GOALHUB_DISABLED_PLUGINS", "goalhub.lifecycle")
    plugins.reset()
    assert receivers.receivers("goal.created") == []
    assert next(i for i in plugins.plugin_infos() if i.name == "goalhub.lifecycle").blocked


def test_a_misspelled_hook_fails_loudly(inline_plugin):
    class Misspelled:
        @goalhub.hookimpl
        def goal_creatd(self, goal_id):
            pass

    with pytest.raises(pluggy.PluginValidationError):
        inline_plugin(Misspelled(), "misspelled")
    plugins.unregister("misspelled")


def test_receivers_are_called_with_keyword_arguments_they_ask_for(inline_plugin):
    seen = {}

    class Partial:
        @goalhub.receiver("goal.created")
        def only_two(self, *, nbf, goal_id):
            seen.update(nbf=nbf, goal_id=goal_id)

    inline_plugin(Partial(), "partial")
    receiver = next(r for r in receivers.receivers("goal.created") if r.name == "only_two")
    receiver.call({"goal_id": "g", "nbf": 1.5, "exp": None, "_cls": "X"})
    assert seen == {"nbf": 1.5, "goal_id": "g"}


def test_dry_run_lists_what_would_act_and_runs_nothing(inline_plugin):
    inline_plugin(PlatformGoalTypes(), "platform-goal-types")  # the classes' declared lifecycle
    recorder = Recorder()
    inline_plugin(recorder, "recorder")
    acting = {r.name for r, acts in receivers.dry_run("goal.created", "ShowGoal") if acts}
    assert acting == {"on_every_goal"}  # lifecycle excludes ShowGoal
    assert recorder.calls == []


def test_zero_retries_means_a_failing_receiver_fails_at_once(db, inline_plugin, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    attempts = []

    class Broken:
        @goalhub.receiver("goal.created")
        def explode(self, goal_id):
            attempts.append(goal_id)
            raise RuntimeError("no luck")

    inline_plugin(Broken(), "broken")
    goal = goal_document()
    tasks.enqueue_create_goal(goal)
    drain()
    assert len(attempts) == 1
    assert db.outcomes.find_one({"goal_id": goal["_id"], "receiver": "explode"})["status"] == "failed"


def test_a_receiver_job_abandoned_with_no_retries_left_is_recorded_failed(db, inline_plugin, monkeypatch):
    """A work-horse killed mid-receiver leaves the outcome ``running``; RQ's abandoned-job
    handling (here driven by hand) must leave it ``failed`` so ``goalhub retry`` finds it."""
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    inline_plugin(Recorder(), "recorder")
    goal = goal_document("KaraokeGoal")
    signals.leaderboards.send("goal.created", **tasks.created_arguments({**goal, "_id": ObjectId(goal["_id"])}))
    outcome_key = f"goal.created:{goal['_id']}|recorder.on_every_goal"
    job = get_queue().fetch_job(dispatch.job_id("receiver", outcome_key))
    # As if a worker had started it and died: outcome running, job started, its registry entry expired.
    db.outcomes.update_one({"_id": outcome_key}, {"$set": {"status": "running"}})
    get_queue().remove(job.id)
    job.set_status(JobStatus.STARTED)
    registry = get_queue().started_job_registry
    registry.connection.zadd(registry.key, {f"{job.id}:dead-execution": 1})
    registry.cleanup()

    outcome = db.outcomes.find_one({"_id": outcome_key})
    assert outcome["status"] == "failed" and "Abandoned" in outcome["error"]
    assert job.id in FailedJobRegistry(queue=get_queue()).get_job_ids()


def test_an_event_record_follows_all_its_outcome_records(db, inline_plugin, drain):
    """A reader polling outcomes can tell "all final" from "not all written yet"."""
    inline_plugin(Recorder(), "recorder")
    goal = goal_document("KaraokeGoal")
    goal_id = goal["_id"]
    written: list[tuple[int, bool]] = []

    def spy(write):
        def spying(*args, **kwargs):
            result = write(*args, **kwargs)
            # After each outcome write during delivery: is the event already marked delivered?
            written.append((db.outcomes.count_documents({"goal_id": goal_id}),
                            db.events.count_documents({"goal_id": goal_id}) == 1))
            return result
        return spying

    outcomes_collection = db.outcomes
    for name in ("insert_many", "update_one", "find_one_and_update"):
        setattr(outcomes_collection, name, spy(getattr(outcomes_collection, name)))
    try:
        tasks.create_goal(goal)
    finally:
        for name in ("insert_many", "update_one", "find_one_and_update"):
            delattr(outcomes_collection, name)
    ids = [r.id for r in receivers.receivers("goal.created")]
    assert db.events.find_one({"_id": f"goal.created:{goal_id}"})["receivers"] == ids
    # The outcome records are written (in one batch) before the event is marked delivered.
    assert written[0] == (len(ids), False)
    outcomes, complete = dispatch.delivered_outcomes(goal_id)
    assert complete and len(outcomes) == len(ids) == 3
    assert dispatch.delivered_outcomes(goal_id, ["goal.created", "goal.added"])[1] is False
    drain()
