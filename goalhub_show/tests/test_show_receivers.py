"""The show binding receivers through the real dispatch (create_goal -> RQ -> receiver),
and seed 003's flow at the receiver level, with ``goal.added`` captured by an inline plugin."""

from __future__ import annotations

import copy

import pytest
from bson import ObjectId
from goalhub_demo.world import GOAL_CLASSES, goal_document, live_session

import goalhub
from goalhub import BindingConflict
from goalhub.testing import create_goal, created_arguments, documents, enqueue_create_goal
from goalhub_show import receivers

PLUGIN_RECEIVERS = {
    "bind_show_goal_to_funding_goal": {"ShowGoal"},
    "bind_show_goals_to_session": {"ShowGoal", "ShowFundingGoal"},
}


class GoalAddedCapture:
    """An inline plugin that records every ``goal.added`` delivered to it."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    @goalhub.receiver("goal.added")
    def capture_goal_added(self, goal_id, _cls, conditions, context, session_id, streamer_id):
        self.calls.append(
            {"goal_id": goal_id, "_cls": _cls, "conditions": conditions, "context": context, "session_id": session_id, "streamer_id": streamer_id}
        )


@pytest.fixture
def capture(use_plugins, inline_plugin):
    use_plugins("show")
    recorder = GoalAddedCapture()
    inline_plugin(recorder, "capture")
    return recorder


@pytest.fixture
def world(db):
    """A live session whose show funding goal (countdown ended) is paired, unbound; plus an
    exclusive trigger, so that a wrong receiver would have something to touch."""
    return live_session(db)


def goal_of(cls: str, world: dict) -> dict:
    """A goal of ``cls`` as the API would draft it, pointing at the world's documents."""
    conditions, context = {}, {}
    if cls == "ShowGoal":
        context.update(type="show", funding_goal_id=world["funding_id"])
    elif cls == "ShowFundingGoal":
        context.update(type="show_funding")
    elif cls in ("ExclusiveGoal", "TriggerExclusiveGoal"):
        conditions["exclusive_to"] = "viewer-1"
        context.update(exclusive_to="viewer-1", trigger_exclusive_goal_id=world["trigger_id"])
    return goal_document(cls, world["session_id"], world["streamer"], conditions=conditions, context=context)


def expected_after(before: dict, cls: str, goal_id: str, world: dict) -> dict:
    """Seed 003's effects of one goal of ``cls`` on the documents that were there before it."""
    after = copy.deepcopy(before)
    session = after["sessions"][world["session_id"]]
    if cls == "ShowGoal":
        after["goals"][world["funding_id"]]["context"]["show_goal_id"] = goal_id
        session["show_goal_pairs"][0]["show_goal"] = goal_id
    elif cls == "ShowFundingGoal":
        session["show_goal_pairs"].append({"funding_goal": goal_id, "show_goal": None})
    return after


def added_arguments(goal: dict, world: dict) -> dict:
    """Seed 003's ``goal.added`` arguments for ``goal``."""
    return {
        "goal_id": goal["_id"],
        "_cls": goal["_cls"],
        "conditions": goal["conditions"],
        "context": goal["context"],
        "session_id": world["session_id"],
        "streamer_id": world["streamer"],
    }


@pytest.mark.parametrize("cls", GOAL_CLASSES)
def test_each_goal_class_is_acted_on_only_by_its_receivers(cls, db, world, capture, drain):
    before = documents(db)
    goal = goal_of(cls, world)
    enqueue_create_goal(goal)
    drain()

    after = documents(db)
    assert after["goals"].pop(goal["_id"])["_cls"] == cls
    assert after == expected_after(before, cls, goal["_id"], world)

    outcomes = {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal["_id"], "plugin": "show"})}
    assert set(outcomes) == set(PLUGIN_RECEIVERS)
    for name, classes in PLUGIN_RECEIVERS.items():
        expected = "ok" if cls in classes else "skipped"
        assert outcomes[name]["status"] == expected, (name, outcomes[name].get("error"))
    announced = cls in PLUGIN_RECEIVERS["bind_show_goals_to_session"]
    assert capture.calls == ([added_arguments(goal, world)] if announced else [])


def test_receivers_called_directly_return_at_once_for_other_classes(db, world, capture, drain):
    before = documents(db)
    for cls in set(GOAL_CLASSES) - {"ShowGoal", "ShowFundingGoal"}:
        goal = goal_of(cls, world)
        assert receivers.bind_show_goal_to_funding_goal(goal["_id"], cls, goal["context"]) is None
        assert receivers.bind_show_goals_to_session(goal["_id"], cls, goal["conditions"], goal["context"]) is None
    drain()
    assert documents(db) == before and capture.calls == []


def test_seed_003_show_flow(db, capture, drain):
    """Funding goal created -> pair added, goal.added; show goal created -> funding goal
    bound, the pair's show_goal set, goal.added with the seed's arguments."""
    streamer, session_id = str(ObjectId()), ObjectId()
    sid = str(session_id)
    db.sessions.insert_one({"_id": session_id, "user": streamer, "active": True, "sources": [], "show_goal_pairs": []})
    world = {"streamer": streamer, "session_id": sid}

    funding = goal_of("ShowFundingGoal", world)
    enqueue_create_goal(funding)
    drain()
    assert db.sessions.find_one({"_id": session_id})["show_goal_pairs"] == [{"funding_goal": funding["_id"], "show_goal": None}]
    assert capture.calls == [added_arguments(funding, world)]

    show = goal_of("ShowGoal", {**world, "funding_id": funding["_id"]})
    enqueue_create_goal(show)
    drain()
    assert db.goals.find_one({"_id": ObjectId(funding["_id"])})["context"]["show_goal_id"] == show["_id"]
    assert db.sessions.find_one({"_id": session_id})["show_goal_pairs"] == [{"funding_goal": funding["_id"], "show_goal": show["_id"]}]
    assert capture.calls[1] == {
        "goal_id": show["_id"],
        "_cls": "ShowGoal",
        "conditions": {"session_id": sid},
        "context": {"type": "show", "session_id": sid, "funding_goal_id": funding["_id"]},
        "session_id": sid,
        "streamer_id": streamer,
    }
    assert len(capture.calls) == 2
    statuses = {(o["event"], o["receiver"]): o["status"] for o in db.outcomes.find({"goal_id": show["_id"]})}
    assert statuses[("goal.added", "capture_goal_added")] == "ok"
    assert statuses[("goal.created", "bind_show_goals_to_session")] == "ok"


def test_delivering_the_same_events_twice_leaves_the_same_documents_and_one_goal_added(db, world, capture, drain):
    funding = goal_of("ShowFundingGoal", world)
    show = goal_of("ShowGoal", {**world, "funding_id": funding["_id"]})
    for goal in (funding, show):
        create_goal(goal)
        drain()
    once = documents(db)
    calls_once = copy.deepcopy(capture.calls)
    assert len(calls_once) == 2
    pairs = once["sessions"][world["session_id"]]["show_goal_pairs"]
    assert pairs[-1] == {"funding_goal": funding["_id"], "show_goal": show["_id"]}

    # Redelivery through the dispatch (a create_goal retry, a second fire) ...
    for goal in (funding, show):
        create_goal(goal)
        goalhub.send_event("goal.created", **created_arguments(db.goals.find_one({"_id": ObjectId(goal["_id"])})))
        drain()
    # ... and the receivers run again by hand (a worker that died before recording "ok"):
    # no second pair, and goal.added reaches its receivers once.
    for goal in (funding, show):
        receivers.bind_show_goals_to_session(goal["_id"], goal["_cls"], goal["conditions"], goal["context"])
    receivers.bind_show_goal_to_funding_goal(show["_id"], "ShowGoal", show["context"])
    drain()

    assert documents(db) == once
    assert capture.calls == calls_once


def test_a_show_goal_whose_funding_pair_is_missing_adds_it_complete(db, world, capture, drain):
    """The funding goal's own binding has not run yet (retrying): the show goal's binding adds
    the pair itself, and the funding goal's binding arriving later adds no second pair."""
    funding_id = str(ObjectId())
    show = goal_of("ShowGoal", {**world, "funding_id": funding_id})
    receivers.bind_show_goals_to_session(show["_id"], "ShowGoal", show["conditions"], show["context"])
    receivers.bind_show_goals_to_session(funding_id, "ShowFundingGoal", show["conditions"], {"type": "show_funding"})
    pairs = db.sessions.find_one({"_id": ObjectId(world["session_id"])})["show_goal_pairs"]
    assert [p for p in pairs if p["funding_goal"] == funding_id] == [{"funding_goal": funding_id, "show_goal": show["_id"]}]


def test_a_funding_goal_bound_to_another_show_goal_is_not_rebound(db, world, capture):
    other = str(ObjectId())
    db.goals.update_one({"_id": ObjectId(world["funding_id"])}, {"$set": {"context.show_goal_id": other}})
    db.sessions.update_one({"_id": ObjectId(world["session_id"])}, {"$set": {"show_goal_pairs.0.show_goal": other}})
    before = documents(db)
    show = goal_of("ShowGoal", world)
    with pytest.raises(BindingConflict):
        receivers.bind_show_goal_to_funding_goal(show["_id"], "ShowGoal", show["context"])
    with pytest.raises(BindingConflict):
        receivers.bind_show_goals_to_session(show["_id"], "ShowGoal", show["conditions"], show["context"])
    assert documents(db) == before
