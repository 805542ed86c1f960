"""The reconciler (goalhub.scheduler): overdue goals whose jobs were deleted are activated and
ended; a job an operator cancelled leaves its goal alone.
"""

from __future__ import annotations

import time

from bson import ObjectId
from rq.job import Job
from world import basic, countdown

from goalhub import scheduler
from goalhub.connection import get_redis
from goalhub.queues import get_scheduler

# What else the reconciler rebuilds from the store after a Redis loss: none of it here.
NOTHING_ELSE = {"create": [], "end-request": [], "receiver": [], "backfill": [], "job": []}


def test_cancel_removes_the_job_and_the_reconciler_leaves_the_goal_alone(dashboard_client, db, monkeypatch):
    client = dashboard_client
    nbf = time.time() + 1
    goal_id = countdown(db, nbf)
    job_id = f"activate-{goal_id}"
    # An action riding on the browser's Basic credentials from another site is refused.
    refused = client.post(f"/rq/goalhub/scheduled/{job_id}/cancel", headers={**basic(), "Origin": "https://evil.example"})
    assert refused.status_code == 403 and job_id in get_scheduler()
    done = client.post(f"/rq/goalhub/scheduled/{job_id}/cancel", headers={**basic(), "Origin": "http://localhost"})
    assert done.status_code == 303
    assert job_id not in get_scheduler() and Job.fetch_many([job_id], connection=get_redis())[0] is None
    monkeypatch.setenv("GOALHUB_RECONCILE_GRACE", "0")
    assert scheduler.reconcile(now=nbf + 5) == {"activate": [], "end": [], "requeue": [], **NOTHING_ELSE}  # cancelled on purpose


def test_the_reconciler_activates_and_ends_overdue_goals_whose_jobs_were_deleted(db, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECONCILE_GRACE", "0")
    nbf = time.time() + 0.5
    lost = countdown(db, nbf, nbf + 1)
    kept = countdown(db, nbf + 3600)
    for kind in ("activate", "end"):
        Job.fetch(f"{kind}-{lost}", connection=get_redis()).delete()  # what rq-dashboard's Delete does
    assert scheduler.reconcile(now=nbf - 1) == {"activate": [], "end": [], "requeue": [], **NOTHING_ELSE}  # not due yet
    time.sleep(max(0.0, nbf + 0.1 - time.time()))
    assert scheduler.reconcile() == {"activate": [lost], "end": [], "requeue": [], **NOTHING_ELSE}
    assert scheduler.reconcile() == {"activate": [], "end": [], "requeue": [], **NOTHING_ELSE}  # its job is pending now: not twice
    drain(scheduled=False)
    goal = db.goals.find_one({"_id": ObjectId(lost)})
    assert goal["active"] is True and goal["activated_at"] >= nbf
    assert scheduler.reconcile(now=nbf + 2) == {"activate": [], "end": [lost], "requeue": [], **NOTHING_ELSE}
    drain(scheduled=False)
    assert db.goals.find_one({"_id": ObjectId(lost)})["end_reason"] == "expired"
    assert db.goals.find_one({"_id": ObjectId(kept)})["active"] is False  # its job is pending

