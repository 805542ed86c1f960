"""The exclusive binding receivers through the real dispatch (create_goal -> RQ -> receiver).

Every goal class is fired at the plugin: it changes exactly the documents seed 000 names
for its own classes and leaves every other document as it was.
"""

from __future__ import annotations

import copy
import time

import pytest
from bson import ObjectId
from goalhub_demo.world import GOAL_CLASSES, goal_document

import goalhub
from goalhub import BindingConflict
from goalhub.testing import create_goal, created_arguments, documents, enqueue_create_goal
from goalhub_exclusive import receivers

PLUGIN_RECEIVERS = {
    "bind_exclusive_goal_to_trigger_exclusive_goal": {"ExclusiveGoal"},
    "bind_exclusive_goals_to_session": {"ExclusiveGoal", "TriggerExclusiveGoal"},
}


@pytest.fixture
def world(db):
    """A live session with an ended trigger countdown and a show funding goal in it."""
    now = time.time()
    streamer = str(ObjectId())
    session_id = ObjectId()
    sid = str(session_id)
    db.sessions.insert_one(
        {
            "_id": session_id,
            "user": streamer,
            "active": True,
            "sources": [{"room_id": "room-1", "task_id": "task-1"}],
            "exclusive_goal_pairs": {"viewer-1": {"trigger_exclusive_goal": None, "exclusive_goal": None}},
            "show_goal_pairs": [],
        }
    )
    trigger_id, funding_id = ObjectId(), ObjectId()
    db.goals.insert_many(
        [
            {
                "_id": trigger_id,
                "_cls": "TriggerExclusiveGoal",
                "active": False,
                "conditions": {"session_id": sid, "exclusive_to": "viewer-1"},
                "levels": [{"target": 60}],
                "nbf": now - 120,
                "exp": now - 1,
                "context": {"type": "trigger_exclusive", "session_id": sid, "exclusive_to": "viewer-1"},
                "metadata": {"user_id": streamer},
            },
            {
                "_id": funding_id,
                "_cls": "ShowFundingGoal",
                "active": True,
                "conditions": {"session_id": sid},
                "levels": [{"target": 1000}],
                "nbf": now - 120,
                "exp": now - 1,
                "context": {"type": "show_funding", "session_id": sid},
                "metadata": {"user_id": streamer},
            },
        ]
    )
    db.sessions.update_one({"_id": session_id}, {"$set": {"exclusive_goal_pairs.viewer-1.trigger_exclusive_goal": str(trigger_id)}})
    return {"streamer": streamer, "session_id": sid, "trigger_id": str(trigger_id), "funding_id": str(funding_id)}


def goal_of(cls: str, world: dict) -> dict:
    """A goal of ``cls`` as the API would draft it, pointing at the world's documents."""
    conditions, context = {}, {}
    if cls == "ExclusiveGoal":
        conditions["exclusive_to"] = "viewer-1"
        context.update(type="exclusive", exclusive_to="viewer-1", trigger_exclusive_goal_id=world["trigger_id"])
    elif cls == "TriggerExclusiveGoal":
        conditions["exclusive_to"] = "viewer-2"
        context.update(type="trigger_exclusive", exclusive_to="viewer-2")
    elif cls == "ShowGoal":
        context.update(type="show", funding_goal_id=world["funding_id"])
    return goal_document(cls, world["session_id"], world["streamer"], conditions=conditions, context=context)


def expected_after(before: dict, cls: str, goal_id: str, world: dict) -> dict:
    """Seed 000's effects of one goal of ``cls`` on the documents that were there before it."""
    after = copy.deepcopy(before)
    session = after["sessions"][world["session_id"]]
    if cls == "ExclusiveGoal":
        after["goals"][world["trigger_id"]]["context"]["exclusive_goal_id"] = goal_id
        session["exclusive_goal_pairs"]["viewer-1"]["exclusive_goal"] = goal_id
    elif cls == "TriggerExclusiveGoal":
        session["exclusive_goal_pairs"]["viewer-2"] = {"trigger_exclusive_goal": goal_id}
    return after


@pytest.mark.parametrize("cls", GOAL_CLASSES)
def test_each_goal_class_is_acted_on_only_by_its_receivers(cls, db, world, use_plugins, drain):
    use_plugins("exclusive")
    before = documents(db)
    goal = goal_of(cls, world)
    enqueue_create_goal(goal)
    drain()

    after = documents(db)
    assert after["goals"].pop(goal["_id"])["_cls"] == cls
    assert after == expected_after(before, cls, goal["_id"], world)

    outcomes = {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal["_id"], "plugin": "exclusive"})}
    assert set(outcomes) == set(PLUGIN_RECEIVERS)
    for name, classes in PLUGIN_RECEIVERS.items():
        expected = "ok" if cls in classes else "skipped"
        assert outcomes[name]["status"] == expected, (name, outcomes[name].get("error"))


def test_receivers_called_directly_return_at_once_for_other_classes(db, world):
    before = documents(db)
    for cls in GOAL_CLASSES:
        goal = goal_of(cls, world)
        if cls not in PLUGIN_RECEIVERS["bind_exclusive_goal_to_trigger_exclusive_goal"]:
            assert receivers.bind_exclusive_goal_to_trigger_exclusive_goal(goal["_id"], cls, goal["context"]) is None
        if cls not in PLUGIN_RECEIVERS["bind_exclusive_goals_to_session"]:
            assert receivers.bind_exclusive_goals_to_session(goal["_id"], cls, goal["conditions"]) is None
    assert documents(db) == before


def test_delivering_the_same_events_twice_leaves_the_same_documents(db, world, use_plugins, drain):
    use_plugins("exclusive")
    trigger = goal_of("TriggerExclusiveGoal", world)
    exclusive = goal_of("ExclusiveGoal", world)
    for goal in (trigger, exclusive):
        create_goal(goal)
        drain()
    once = documents(db)
    outcomes_once = {o["_id"]: (o["status"], o.get("attempts")) for o in db.outcomes.find()}

    # Redelivery through the dispatch (a create_goal retry, a second fire) ...
    for goal in (trigger, exclusive):
        create_goal(goal)
        goalhub.send_event("goal.created", **created_arguments(db.goals.find_one({"_id": ObjectId(goal["_id"])})))
        drain()
    # ... and the receivers run again by hand (a worker that died before recording "ok").
    for goal in (trigger, exclusive):
        receivers.bind_exclusive_goals_to_session(goal["_id"], goal["_cls"], goal["conditions"])
    receivers.bind_exclusive_goal_to_trigger_exclusive_goal(exclusive["_id"], "ExclusiveGoal", exclusive["context"])

    assert documents(db) == once
    assert {o["_id"]: (o["status"], o.get("attempts")) for o in db.outcomes.find()} == outcomes_once


def test_a_trigger_bound_to_another_goal_is_not_rebound(db, world):
    other = str(ObjectId())
    db.goals.update_one({"_id": ObjectId(world["trigger_id"])}, {"$set": {"context.exclusive_goal_id": other}})
    goal = goal_of("ExclusiveGoal", world)
    with pytest.raises(BindingConflict):
        receivers.bind_exclusive_goal_to_trigger_exclusive_goal(goal["_id"], "ExclusiveGoal", goal["context"])
    assert db.goals.find_one({"_id": ObjectId(world["trigger_id"])})["context"]["exclusive_goal_id"] == other


def test_an_exclusive_to_that_is_not_a_plain_key_never_reaches_an_update(db, world):
    before = documents(db)
    for bad in ("a.b", "$where", "", {"$ne": None}):
        goal = goal_of("TriggerExclusiveGoal", world)
        goal["conditions"]["exclusive_to"] = bad
        with pytest.raises(ValueError):
            receivers.bind_exclusive_goals_to_session(goal["_id"], "TriggerExclusiveGoal", goal["conditions"])
    assert documents(db) == before
