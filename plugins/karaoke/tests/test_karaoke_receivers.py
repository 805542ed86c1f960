"""The karaoke and private-countdown session bindings through the real dispatch."""

from __future__ import annotations

import copy

import pytest
from bson import ObjectId
from goalhub_demo.world import GOAL_CLASSES, goal_document, live_session
from goalhub_karaoke import receivers

import goalhub
from goalhub.testing import create_goal, created_arguments, documents, enqueue_create_goal

PLUGIN_RECEIVERS = {
    "bind_karaoke_goal_to_session": ({"KaraokeGoal"}, "karaoke_goal"),
    "bind_trigger_private_goal_to_session": ({"TriggerPrivateGoal"}, "trigger_private_goal"),
}


@pytest.fixture
def world(db):
    return live_session(db)


def goal_of(cls: str, world: dict) -> dict:
    conditions, context = {}, {}
    if cls == "ShowGoal":
        context.update(type="show", funding_goal_id=world["funding_id"])
    elif cls in ("ExclusiveGoal", "TriggerExclusiveGoal"):
        conditions["exclusive_to"] = "viewer-1"
        context.update(exclusive_to="viewer-1", trigger_exclusive_goal_id=world["trigger_id"])
    return goal_document(cls, world["session_id"], world["streamer"], conditions=conditions, context=context)


@pytest.mark.parametrize("cls", GOAL_CLASSES)
def test_each_goal_class_is_acted_on_only_by_its_receivers(cls, db, world, use_plugins, drain):
    use_plugins("karaoke")
    before = documents(db)
    goal = goal_of(cls, world)
    enqueue_create_goal(goal)
    drain()

    after = documents(db)
    assert after["goals"].pop(goal["_id"])["_cls"] == cls
    expected = copy.deepcopy(before)
    for classes, field in PLUGIN_RECEIVERS.values():
        if cls in classes:
            expected["sessions"][world["session_id"]][field] = goal["_id"]
    assert after == expected

    outcomes = {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal["_id"], "plugin": "karaoke"})}
    assert set(outcomes) == set(PLUGIN_RECEIVERS)
    for name, (classes, _) in PLUGIN_RECEIVERS.items():
        assert outcomes[name]["status"] == ("ok" if cls in classes else "skipped"), (name, outcomes[name].get("error"))


def test_receivers_called_directly_return_at_once_for_other_classes(db, world):
    before = documents(db)
    for cls in GOAL_CLASSES:
        goal = goal_of(cls, world)
        if cls != "KaraokeGoal":
            assert receivers.bind_karaoke_goal_to_session(goal["_id"], cls, goal["conditions"]) is None
        if cls != "TriggerPrivateGoal":
            assert receivers.bind_trigger_private_goal_to_session(goal["_id"], cls, goal["conditions"]) is None
    assert documents(db) == before


def test_delivering_the_same_events_twice_leaves_the_same_documents(db, world, use_plugins, drain):
    use_plugins("karaoke")
    older, newer = goal_of("KaraokeGoal", world), goal_of("KaraokeGoal", world)
    private = goal_of("TriggerPrivateGoal", world)
    for goal in (older, newer, private):
        create_goal(goal)
        drain()
    once = documents(db)
    session = once["sessions"][world["session_id"]]
    assert (session["karaoke_goal"], session["trigger_private_goal"]) == (newer["_id"], private["_id"])

    # Redelivered through the dispatch, and run again by hand (a worker that died before
    # recording "ok"): the older karaoke goal's event does not take the session back.
    for goal in (older, newer, private):
        create_goal(goal)
        goalhub.send_event("goal.created", **created_arguments(db.goals.find_one({"_id": ObjectId(goal["_id"])})))
        drain()
    result = receivers.bind_karaoke_goal_to_session(older["_id"], "KaraokeGoal", older["conditions"])
    assert result == {"session_id": world["session_id"], "karaoke_goal": newer["_id"], "superseded": True}
    receivers.bind_karaoke_goal_to_session(newer["_id"], "KaraokeGoal", newer["conditions"])
    receivers.bind_trigger_private_goal_to_session(private["_id"], "TriggerPrivateGoal", private["conditions"])
    assert documents(db) == once


def test_a_goal_of_an_unknown_session_fails_loudly(db):
    with pytest.raises(LookupError):
        receivers.bind_karaoke_goal_to_session(str(ObjectId()), "KaraokeGoal", {"session_id": str(ObjectId())})
