"""A goalhub plugin that injects faults on demand, for worker processes of the reliability tests.

Loaded with ``GOALHUB_PLUGINS=fault_plugin`` (this directory on ``PYTHONPATH``). Every
behaviour is off unless its environment variable names the goal class it applies to, so
one module serves every test. All bookkeeping goes to the store, where the test reads it:

- ``GOALHUB_TEST_HOLD=<classes>``: ``held_receiver`` counts its run, writes a
  ``started-<pid>`` marker in ``GOALHUB_TEST_FAULT_DIR`` and waits until the file ``gate``
  exists there, then applies its effect once through ``goalhub.outbound.send_once``
  (collection ``effects``: how many times the effect really happened).
- ``GOALHUB_TEST_HOLD_CREATE=1``: ``create_goal`` itself blocks on the gate (a signal
  receiver connected here runs inside the task), after a ``create-<pid>`` marker.
- ``GOALHUB_TEST_FLAKY=<classes>``: ``flaky_receiver`` raises a store error on its first
  ``GOALHUB_TEST_FLAKY_FAILURES`` runs (while ``repaired`` does not exist), then writes.
- ``GOALHUB_TEST_HANG=<classes>``: ``hanging_receiver`` never returns (its time budget or a job
  timeout stops it).
- ``GOALHUB_TEST_PRIOR=<classes>``: ``prior_receiver`` counts its run and applies its effect once;
  pluggy calls it before ``held_receiver`` (later names first), so a kill while the held one
  waits falls between two inline receivers.
- ``GOALHUB_TEST_ISOLATED=<classes>``: ``isolated_receiver`` (``isolated=True``: its own job)
  counts its run, writes an ``isolated-<pid>`` marker, waits for the gate, applies its effect once.
- ``GOALHUB_TEST_COUNT_ACTIVATIONS=1``: every run of ``goalhub.tasks.activate_goal`` is
  counted (collection ``activation_runs``); RQ resolves the job's function by name at run
  time, so the wrapper installed here is what the work-horse runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pymongo.errors import OperationFailure

import goalhub
from goalhub import signals, tasks
from goalhub.outbound import send_once
from goalhub.store import get_database


def _classes(name: str) -> set[str]:
    return {part.strip() for part in os.environ.get(name, "").split(",") if part.strip()}


def _fault_dir() -> Path:
    return Path(os.environ["GOALHUB_TEST_FAULT_DIR"])


def _wait_at_gate(marker: str) -> None:
    (_fault_dir() / f"{marker}-{os.getpid()}").write_text(str(os.getpid()))
    while not (_fault_dir() / "gate").exists():
        time.sleep(0.02)


def _count(collection: str, goal_id: str) -> None:
    get_database()[collection].update_one(
        {"_id": goal_id}, {"$inc": {"runs": 1}, "$push": {"pids": os.getpid()}}, upsert=True
    )


@goalhub.receiver("goal.created")
def held_receiver(goal_id: str, _cls: str) -> dict[str, Any] | None:
    if _cls not in _classes("GOALHUB_TEST_HOLD"):
        return None
    _count("held_runs", goal_id)
    _wait_at_gate("started")
    db = get_database()
    record = send_once(
        "test-effect", goal_id, {"goal_id": goal_id},
        lambda: db.effects.update_one({"_id": goal_id}, {"$inc": {"applied": 1}}, upsert=True) and None,
        goal_id=goal_id,
    )
    return {"duplicate": record["duplicate"]}


@goalhub.receiver("goal.created")
def prior_receiver(goal_id: str, _cls: str) -> dict[str, Any] | None:
    if _cls not in _classes("GOALHUB_TEST_PRIOR"):
        return None
    _count("prior_runs", goal_id)
    db = get_database()
    record = send_once("test-prior", goal_id, {"goal_id": goal_id},
                       lambda: db.prior_effects.update_one({"_id": goal_id}, {"$inc": {"applied": 1}}, upsert=True)
                       and None, goal_id=goal_id)
    return {"pid": os.getpid(), "duplicate": record["duplicate"]}


# Acts only on the classes named (read at import: the declaration routes), so no other test's goal
# gets an extra job.
@goalhub.receiver("goal.created", *sorted(_classes("GOALHUB_TEST_ISOLATED")) or ("NoSuchTestGoal",), isolated=True)
def isolated_receiver(goal_id: str, _cls: str) -> dict[str, Any] | None:
    if _cls not in _classes("GOALHUB_TEST_ISOLATED"):
        return None
    _count("isolated_runs", goal_id)
    _wait_at_gate("isolated")
    db = get_database()
    record = send_once("test-isolated", goal_id, {"goal_id": goal_id},
                       lambda: db.isolated_effects.update_one({"_id": goal_id}, {"$inc": {"applied": 1}}, upsert=True)
                       and None, goal_id=goal_id)
    return {"pid": os.getpid(), "duplicate": record["duplicate"]}


@goalhub.receiver("goal.created")
def flaky_receiver(goal_id: str, _cls: str) -> dict[str, Any] | None:
    if _cls not in _classes("GOALHUB_TEST_FLAKY"):
        return None
    db = get_database()
    attempt = db.flaky_runs.find_one_and_update(
        {"_id": goal_id}, {"$inc": {"runs": 1}}, upsert=True, return_document=True
    )["runs"]
    failures = int(os.environ.get("GOALHUB_TEST_FLAKY_FAILURES", "0"))
    if attempt <= failures and not (_fault_dir() / "repaired").exists():
        raise OperationFailure(f"simulated store write failure (attempt {attempt})")
    db.flaky_effects.update_one({"_id": goal_id}, {"$set": {"written": True, "attempt": attempt}}, upsert=True)
    return {"attempt": attempt}


@goalhub.receiver("goal.created")
def hanging_receiver(goal_id: str, _cls: str) -> None:
    if _cls not in _classes("GOALHUB_TEST_HANG"):
        return
    _count("hang_runs", goal_id)
    while True:
        time.sleep(1)


def _hold_create_goal(sender: str, **arguments: Any) -> None:
    if os.environ.get("GOALHUB_TEST_HOLD_CREATE") == "1":
        _count("create_holds", arguments["goal_id"])
        _wait_at_gate("create")


signals.leaderboards.connect(_hold_create_goal, sender="goal.created", weak=False)


if os.environ.get("GOALHUB_TEST_COUNT_ACTIVATIONS") == "1":
    _activate_goal = tasks.activate_goal

    def counted_activate_goal(goal_id: str) -> bool:
        changed = _activate_goal(goal_id)
        get_database().activation_runs.update_one(
            {"_id": goal_id},
            {"$inc": {"runs": 1, "changed": int(changed)}, "$push": {"pids": os.getpid(), "at": time.time()}},
            upsert=True,
        )
        return changed

    counted_activate_goal.__module__ = tasks.__name__
    counted_activate_goal.__qualname__ = "activate_goal"
    tasks.activate_goal = counted_activate_goal
