"""Issue 24 item 4 (the parts that stand alone): the store records its schema version, goalhub
refuses a newer one and migrates an older one; job payloads carry a version and a worker refuses
a newer one. The N -> N+1 drain with a real earlier release is ``test_upgrade_drain.py``."""

from __future__ import annotations

import subprocess
import sys

import api_support
import pytest
from rq.job import Job

from goalhub import schema, store
from goalhub.connection import get_redis
from goalhub.logs import job_meta
from goalhub.queues import get_queue
from goalhub.store import get_database
from goalhub.worker import RecoveringSimpleWorker, noop


def test_the_store_records_its_schema_version_and_a_newer_one_is_refused():
    db = get_database()
    assert schema.stored_version(db) == schema.SCHEMA_VERSION
    db[schema.COLLECTION].update_one({"_id": "schema"}, {"$set": {"version": schema.SCHEMA_VERSION + 1}})
    store.reset()
    with pytest.raises(schema.StoreTooNew, match="newer than this goalhub's"):
        get_database()
    done = subprocess.run([sys.executable, "-m", "goalhub", "goals", "show", "6800a9073e0c346531958b03"],
                          env=api_support.process_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "written by a newer goalhub" in done.stderr and "Traceback" not in done.stderr


def test_jobs_carry_their_payload_version_and_a_worker_refuses_a_newer_one():
    queue = get_queue()
    current = queue.enqueue(noop, meta={"request_id": "r-1"}, job_id="current")
    assert job_meta() == {"payload_version": schema.PAYLOAD_VERSION}
    newer = queue.enqueue(noop, meta={"payload_version": schema.PAYLOAD_VERSION + 1}, job_id="newer")
    RecoveringSimpleWorker([queue], connection=get_redis()).work(burst=True)
    assert Job.fetch("current", connection=get_redis()).get_status() == "finished"
    refused = Job.fetch("newer", connection=get_redis())
    assert refused.get_status() == "failed"
    assert "newer than this worker's" in (refused.latest_result().exc_string or "")
    assert "newer" in queue.failed_job_registry.get_job_ids()
    assert current.id != newer.id


def test_a_store_from_before_schema_versions_is_migrated_and_what_it_finished_never_runs_again(inline_plugin):
    """Version 0 (goals and outcomes, no schema record, no ledger): the first open records what
    each ``ok`` outcome finished in the ledger, so a redelivery after retention purged the
    outcome runs nothing again; an empty store without a record starts at this version."""
    import goalhub
    from goalhub import dispatch, ledger

    class Once:
        runs: list[str] = []

        @goalhub.receiver("goal.created")
        def once(self, goal_id):
            self.runs.append(goal_id)

    inline_plugin(Once(), "once")
    db = get_database()
    goal_id = "6800a9073e0c346531958b04"
    arguments = {"goal_id": goal_id, "_cls": "ConfettiGoal", "active": True, "conditions": {}, "context": {},
                 "levels": [], "nbf": None, "exp": None, "streamer_id": None, "test_fire": False}
    db.goals.insert_one({"_id": goal_id, "_cls": "ConfettiGoal"})
    db.outcomes.insert_one({"_id": f"goal.created:{goal_id}|once.once", "event": "goal.created", "goal_id": goal_id,
                            "plugin": "once", "receiver": "once", "status": "ok"})
    db[schema.COLLECTION].delete_many({})
    store.reset()
    db = get_database()
    assert schema.stored_version(db) == schema.SCHEMA_VERSION
    assert ledger.finished(db, goal_id) == {"goal.created|once.once"}
    db.outcomes.delete_many({})  # retention purged it
    dispatch.deliver("goal.created", arguments)
    assert Once.runs == [] and db.outcomes.find_one()["result"] == dispatch.FINISHED_BEFORE
    # Opened again (another process), nothing changes; an empty store starts at this version.
    store.reset()
    assert schema.check(get_database()) == schema.SCHEMA_VERSION
    for name in ("goals", "outcomes", schema.COLLECTION):
        db[name].delete_many({})
    assert schema.check(db) == schema.SCHEMA_VERSION
