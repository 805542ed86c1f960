"""The event payloads are a contract: what docs/plugins.md documents (each event's arguments
with their types, the goal document) is what the hook specs declare and what receivers
actually get through the real dispatch (real RQ jobs), for a live goal and a test fire; and
``goalhub outcomes --purge-test`` calls each plugin's ``purge_test_fires`` hook."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from click.testing import CliRunner

import goalhub
from goalhub import hookspecs, tasks
from goalhub.cli import main

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"
TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "bool": (bool,), "dict": (dict,), "list": (list,), "list of str": (list,),
    "float or None": (float, int, type(None)), "str or None": (str, type(None)),
    "float": (float,), "ObjectId": (ObjectId,), "float, str": (float, str),
}
STREAMER = "6800a9073e0c346531958b03"


def documented(heading: str) -> dict[str, str]:
    """The ``| name | type | meaning |`` rows after ``heading`` in the plugin reference."""
    text = REFERENCE.read_text()
    start = text.index(heading)
    rows: dict[str, str] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#") or (line.startswith("**") and rows):
            break
        match = re.match(r"\| `([\w]+)`(?:, `(\w+)`)? \| ([^|]+) \|", line)
        if match:
            for name in filter(None, match.group(1, 2)):
                rows[name] = match.group(3).strip()
    return rows


HOOKS = {"goal.created": "goal_created", "goal.added": "goal_added", "goal.ended": "goal_ended"}


@pytest.mark.parametrize("hook", [*HOOKS.values(), "purge_test_fires"])
def test_the_documented_arguments_are_the_hook_specs(hook: str) -> None:
    spec = getattr(hookspecs, hook)
    assert set(documented(f"### `{hook}`")) == set(inspect.signature(spec).parameters)


class Everything:
    """Receivers asking for every documented argument of their event."""

    def __init__(self) -> None:
        self.got: dict[str, dict[str, Any]] = {}

    @goalhub.receiver("goal.created")
    def created(self, goal_id, active, _cls, conditions, context, levels, nbf, exp, streamer_id, test_fire):
        self.got["goal.created"] = dict(locals(), self=None)

    @goalhub.receiver("goal.added")
    def added(self, goal_id, _cls, conditions, context, session_id, streamer_id, test_fire):
        self.got["goal.added"] = dict(locals(), self=None)

    @goalhub.receiver("goal.ended")
    def ended(self, goal_id, _cls, conditions, context, reason, test_fire):
        self.got["goal.ended"] = dict(locals(), self=None)


def check(event: str, got: dict[str, Any]) -> None:
    rows = documented(f"### `{HOOKS[event]}`")
    got = {k: v for k, v in got.items() if k != "self"}
    assert set(got) == set(rows), event
    for name, value in got.items():
        assert isinstance(value, TYPES[rows[name]]), (event, name, value, rows[name])


def test_receivers_get_the_documented_arguments_with_their_types_live(db, inline_plugin, drain):
    everything = Everything()
    inline_plugin(everything, "payloads")
    session_id = str(ObjectId())
    goal = {"_id": str(ObjectId()), "_cls": "PayloadGoal", "active": True, "conditions": {"session_id": session_id},
            "levels": [{"target": 5}], "nbf": None, "exp": None, "context": {"type": "payload"},
            "metadata": {"user_id": STREAMER}}
    tasks.create_goal(goal)
    drain()
    goalhub.send_event("goal.added", goal_id=goal["_id"], _cls="PayloadGoal", conditions=goal["conditions"],
                       context=goal["context"], session_id=session_id, streamer_id=STREAMER)
    drain()
    tasks.end_goal(goal["_id"], "ended")
    drain()
    assert set(everything.got) == set(HOOKS)
    for event, got in everything.got.items():
        check(event, got)
        assert got["test_fire"] is False
    assert everything.got["goal.created"]["streamer_id"] == STREAMER  # the streamer, without a lookup
    # The goal document: the documented fields, with their types; its _id is an ObjectId, so a
    # lookup by the event's string id must convert it (docs/plugins.md says so).
    assert db.goals.find_one({"_id": goal["_id"]}) is None
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    rows = documented("**The goal document**")
    assert set(stored) - {"test_fire", "activated_at"} <= set(rows)
    for name, value in stored.items():
        assert isinstance(value, TYPES[rows[name]]), (name, value)


def test_a_test_fire_says_so_to_its_receivers(inline_plugin, fire):
    everything = Everything()
    inline_plugin(everything, "payloads")
    for event in HOOKS:
        fire(event, "PayloadGoal")
        check(event, everything.got[event])
        assert everything.got[event]["test_fire"] is True


class Tally:
    """Writes a document per goal it sees and purges those of test fires (the hook)."""

    @goalhub.receiver("goal.created")
    def count(self, goal_id, test_fire):
        goalhub.get_database().tallies.insert_one({"goal_id": goal_id, "test": test_fire})

    @goalhub.hookimpl
    def purge_test_fires(self, goal_ids, session_ids):
        return goalhub.get_database().tallies.delete_many({"goal_id": {"$in": goal_ids}}).deleted_count


class Broken:
    @goalhub.hookimpl
    def purge_test_fires(self, goal_ids):
        raise RuntimeError("cannot purge")


def test_purge_test_calls_each_plugins_purge_hook_and_keeps_live_data(db, inline_plugin, fire, drain):
    inline_plugin(Tally(), "tally")
    inline_plugin(Broken(), "broken")
    fire("goal.created", "PayloadGoal")
    fire("goal.created", "PayloadGoal")
    live = {"_id": str(ObjectId()), "_cls": "PayloadGoal", "active": True, "conditions": {"session_id": "s"},
            "levels": [], "nbf": None, "exp": None, "context": {}, "metadata": {"user_id": STREAMER}}
    tasks.create_goal(live)
    drain()
    assert db.tallies.count_documents({}) == 3
    result = CliRunner().invoke(main, ["outcomes", "--purge-test", "--json"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["plugin:tally"] == 2 and counts["goals"] == 2
    assert counts["plugin:broken"] == "failed: RuntimeError: cannot purge"
    assert [t["goal_id"] for t in db.tallies.find()] == [live["_id"]]


JSON = {"str": "string", "bool": "boolean", "dict": "object", "list": "array",
        "float or None": ["number", "null"], "str or None": ["string", "null"]}


def test_the_openapi_document_has_each_events_payload_as_documented():
    from goalhub.api import create_app

    schemas = create_app().test_client().get("/openapi.json").get_json()["components"]["schemas"]
    for hook in HOOKS.values():
        properties = schemas[f"Event_{hook}"]["properties"]
        rows = documented(f"### `{hook}`")
        assert {name: p["type"] for name, p in properties.items()} == {name: JSON[t] for name, t in rows.items()}
