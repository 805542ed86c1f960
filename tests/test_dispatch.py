"""Dispatch (goalhub.dispatch): signals to receivers, routing by class, isolation, retries,
outcome and event records, and what a receiver job keeps of a receiver's result.

Real embedded Redis and real RQ (SimpleWorker in-process); inline plugins per test. Lifecycle
tasks are in ``test_lifecycle.py``, plugin loading in ``test_plugins.py``, inline delivery in
``test_dispatch_inline.py``, recovering abandoned receiver jobs in ``test_recovery.py``.
"""

from __future__ import annotations

import pytest
from bson import ObjectId
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from world import STREAMER, XSS, UnscheduledGoalTypes, goal_document

import goalhub
from goalhub import dispatch, plugins, receivers, signals, tasks
from goalhub.queues import get_queue, queue_names


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
    inline_plugin(UnscheduledGoalTypes(), "unscheduled-goal-types")  # the classes' declared lifecycle
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
    inline_plugin(UnscheduledGoalTypes(), "unscheduled-goal-types")  # the classes' declared lifecycle
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


@pytest.mark.parametrize("together", [True, False], ids=["one-transaction", "one-after-another"])
def test_an_event_record_follows_all_its_outcome_records(db, inline_plugin, drain, monkeypatch, together):
    """A reader polling outcomes can tell "all final" from "not all written yet": on the embedded
    store a first delivery writes the outcome records and the event record in one transaction;
    on MongoDB (``insert_together`` answers False there) the event record comes after them."""
    from goalhub.store import take_write_stats

    inline_plugin(Recorder(), "recorder")
    goal = goal_document("KaraokeGoal")
    goal_id = goal["_id"]
    written: list[tuple[int, bool]] = []

    def seen() -> tuple[int, bool]:
        return (db.outcomes.count_documents({"goal_id": goal_id}),
                db.events.count_documents({"goal_id": goal_id}) == 1)

    def spy(write):
        def spying(*args, **kwargs):
            before = seen()
            take_write_stats()
            result = write(*args, **kwargs)
            # After each write of outcome records during delivery: is the event already marked delivered?
            written.append((*before, *seen(), take_write_stats()[0]))
            return result
        return spying

    if together:
        target, names = db, ("insert_together",)
    else:
        monkeypatch.setattr(dispatch, "insert_together", lambda database, groups: False)
        target, names = db.outcomes, ("insert_many", "update_one", "find_one_and_update")
    for name in names:
        setattr(target, name, spy(getattr(target, name)))
    try:
        tasks.create_goal(goal)
    finally:
        for name in names:
            delattr(target, name)
    ids = [r.id for r in receivers.receivers("goal.created")]
    assert db.events.find_one({"_id": f"goal.created:{goal_id}"})["receivers"] == ids
    if together:  # nothing, then everything, in one write transaction
        assert written[0] == (0, False, len(ids), True, 1)
    else:  # the outcome records (in one batch) before the event is marked delivered
        assert written[0] == (0, False, len(ids), False, 1)
    outcomes, complete = dispatch.delivered_outcomes(goal_id)
    assert complete and len(outcomes) == len(ids) == 3
    assert dispatch.delivered_outcomes(goal_id, ["goal.created", "goal.added"])[1] is False
    drain()


class Echo:
    """Receivers that return user-supplied text, as the snapshot receiver returns room ids: one
    runs inline in create_goal's job, the other (isolated) as a job of its own."""

    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def echo(self, goal_id, context):
        return {"room_id": context["room"], "goal_id": goal_id}

    @goalhub.receiver("goal.created", "ExclusiveGoal", isolated=True)
    def echo_alone(self, goal_id, context):
        return {"room_id": context["room"], "goal_id": goal_id}


def test_a_receivers_return_value_is_not_the_rq_job_result(db, inline_plugin, drain):
    inline_plugin(Echo(), "echo")
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None,
                               "context": {"room": XSS}, "metadata": {"user_id": STREAMER}})
    drain()
    for name in ("echo", "echo_alone"):
        outcome = db.outcomes.find_one({"goal_id": gid, "receiver": name})
        assert outcome["status"] == "ok" and outcome["result"]["room_id"] == XSS  # the detail stays here
    jobs = [Job.fetch(jid, connection=get_queue().connection)
            for jid in get_queue().finished_job_registry.get_job_ids()]
    receiver_jobs = [job for job in jobs if job.func_name.endswith("run_receiver")]
    assert len(receiver_jobs) == 1
    for job in receiver_jobs:
        assert job.return_value() == {"status": "ok", "outcome": job.args[0]}
    for job in jobs:  # create_goal's job ran the inline receiver: its result is the goal id
        assert "<img" not in repr(job.return_value()) and "<img" not in (job.description or "")


def test_queue_job_descriptions_carry_no_user_text():
    # create_goal's description names the class and the id only, never body text.
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None,
                               "context": {"room": XSS}, "metadata": {"user_id": STREAMER}})
    job = Queue(queue_names()[1], connection=get_queue().connection).jobs[-1]
    assert "<img" not in job.description


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

