"""Repairing what a class typo skipped: ``goalhub backfill TARGET --redeliver-skipped`` delivers,
once, each event whose outcome for TARGET was ``skipped`` because TARGET did not act on the
class then, and acts on it now. Real RQ jobs on the embedded Redis, real dispatch."""

from __future__ import annotations

import json

from bson import ObjectId
from click.testing import CliRunner

import goalhub
from goalhub import plugins, tasks
from goalhub.cli import main


class Typo:
    @goalhub.receiver("goal.created", "KaraokeGaol")
    def sing(self, goal_id):
        return "sang"


class Fixed:
    @goalhub.receiver("goal.created", "KaraokeGoal")
    def sing(self, goal_id):
        Fixed.sung.append(goal_id)
        return "sang"

    sung: list[str] = []


def goal(cls: str) -> dict:
    return {"_id": str(ObjectId()), "_cls": cls, "active": True, "conditions": {"session_id": str(ObjectId())},
            "levels": [{"target": 1}], "nbf": None, "exp": None, "context": {}, "metadata": {"user_id": "u"}}


def backfill(*extra: str) -> dict:
    result = CliRunner().invoke(main, ["backfill", "karaoke_fan", "--event", "goal.created", "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_fixed_class_typo_is_repaired_once_and_only_for_the_class_it_acts_on(db, inline_plugin, drain):
    inline_plugin(Typo(), "karaoke_fan")
    karaoke = [goal("KaraokeGoal") for _ in range(3)]
    other = goal("ShowGoal")
    for document in [*karaoke, other]:
        tasks.create_goal(document)
    drain()
    assert {o["status"] for o in db.outcomes.find({"plugin": "karaoke_fan"})} == {"skipped"}

    plugins.unregister("karaoke_fan")  # the fix, installed: the same receiver, the right class
    inline_plugin(Fixed(), "karaoke_fan")
    Fixed.sung.clear()
    # Without the flag nothing changes: skipped counts as done, as before.
    assert backfill()["redelivered_skipped"] == 0 and Fixed.sung == []
    assert backfill("--dry-run", "--redeliver-skipped")["redelivered_skipped"] == 3 and Fixed.sung == []

    repaired = backfill("--redeliver-skipped")
    drain()
    assert repaired["redelivered_skipped"] == 3 and repaired["failed"] == 0
    assert sorted(Fixed.sung) == sorted(g["_id"] for g in karaoke)
    statuses = {o["goal_id"]: o["status"] for o in db.outcomes.find({"plugin": "karaoke_fan"})}
    assert statuses == {**{g["_id"]: "ok" for g in karaoke}, other["_id"]: "skipped"}  # ShowGoal: still not its class
    # Exactly once: again, nothing is delivered.
    again = backfill("--redeliver-skipped")
    drain()
    assert again["redelivered_skipped"] == 0 and len(Fixed.sung) == 3
