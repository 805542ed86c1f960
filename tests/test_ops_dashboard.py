"""goalhub's dashboard pages beside rq-dashboard (/rq/goalhub/...), the scheduler's liveness,
and the reconciler, in-process against the real embedded Redis and store."""

from __future__ import annotations

import base64
import time

import pytest
from bson import ObjectId
from goalhub_demo.world import goal_document
from rq.job import Job

from goalhub import reconcile, tasks
from goalhub.api import create_app
from goalhub.connection import get_redis
from goalhub.queues import get_scheduler

USER, PASSWORD = "ops", "a long dashboard password"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}

# What else the reconciler rebuilds from the store after a Redis loss: none of it here.
NOTHING_ELSE = {"create": [], "end-request": [], "receiver": [], "backfill": [], "job": []}


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", USER)
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", PASSWORD)
    return create_app().test_client()


def countdown(db, nbf: float, exp: float | None = None, cls: str = "TriggerPrivateGoal") -> str:
    """A stored countdown goal, not active yet, with its lifecycle scheduled as the core does."""
    goal = goal_document(cls, str(ObjectId()), str(ObjectId()), active=False, nbf=nbf, exp=exp)
    db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    tasks.schedule("activate", goal["_id"], nbf)
    if exp is not None:
        tasks.schedule("end", goal["_id"], exp, reason="expired")
    return goal["_id"]


def test_the_scheduled_view_lists_activations_and_ends_with_goal_class_and_due_time(client, db):
    nbf = time.time() + 600
    goal_id = countdown(db, nbf, nbf + 300)
    assert client.get("/rq/goalhub/scheduled").status_code == 401
    page = client.get("/rq/goalhub/scheduled", headers=AUTH)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for text in (f"activate-{goal_id}", f"end-{goal_id}", "TriggerPrivateGoal",
                 time.strftime("%Y-%m-%d %H:%M", time.gmtime(nbf)), time.strftime("%Y-%m-%d %H:%M", time.gmtime(nbf + 300)),
                 f"/rq/goalhub/goals/{goal_id}", "in 600 s"):
        assert text in html, text
    home = client.get("/rq/goalhub/", headers=AUTH).get_data(as_text=True)
    assert "scheduled activations" in home and "No scheduler has polled" in home


def test_cancel_removes_the_job_and_the_reconciler_leaves_the_goal_alone(client, db, monkeypatch):
    nbf = time.time() + 1
    goal_id = countdown(db, nbf)
    job_id = f"activate-{goal_id}"
    # An action riding on the browser's Basic credentials from another site is refused.
    refused = client.post(f"/rq/goalhub/scheduled/{job_id}/cancel", headers={**AUTH, "Origin": "https://evil.example"})
    assert refused.status_code == 403 and job_id in get_scheduler()
    done = client.post(f"/rq/goalhub/scheduled/{job_id}/cancel", headers={**AUTH, "Origin": "http://localhost"})
    assert done.status_code == 303
    assert job_id not in get_scheduler() and Job.fetch_many([job_id], connection=get_redis())[0] is None
    monkeypatch.setenv("GOALHUB_RECONCILE_GRACE", "0")
    assert reconcile.reconcile(now=nbf + 5) == {"activate": [], "end": [], "requeue": [], **NOTHING_ELSE}  # cancelled on purpose


def test_the_reconciler_activates_and_ends_overdue_goals_whose_jobs_were_deleted(db, drain, monkeypatch):
    monkeypatch.setenv("GOALHUB_RECONCILE_GRACE", "0")
    nbf = time.time() + 0.5
    lost = countdown(db, nbf, nbf + 1)
    kept = countdown(db, nbf + 3600)
    for kind in ("activate", "end"):
        Job.fetch(f"{kind}-{lost}", connection=get_redis()).delete()  # what rq-dashboard's Delete does
    assert reconcile.reconcile(now=nbf - 1) == {"activate": [], "end": [], "requeue": [], **NOTHING_ELSE}  # not due yet
    time.sleep(max(0.0, nbf + 0.1 - time.time()))
    assert reconcile.reconcile() == {"activate": [lost], "end": [], "requeue": [], **NOTHING_ELSE}
    assert reconcile.reconcile() == {"activate": [], "end": [], "requeue": [], **NOTHING_ELSE}  # its job is pending now: not twice
    drain(scheduled=False)
    goal = db.goals.find_one({"_id": ObjectId(lost)})
    assert goal["active"] is True and goal["activated_at"] >= nbf
    assert reconcile.reconcile(now=nbf + 2) == {"activate": [], "end": [lost], "requeue": [], **NOTHING_ELSE}
    drain(scheduled=False)
    assert db.goals.find_one({"_id": ObjectId(lost)})["end_reason"] == "expired"
    assert db.goals.find_one({"_id": ObjectId(kept)})["active"] is False  # its job is pending


def test_scheduler_liveness_last_poll_and_lock_holder(client):
    scheduler = get_scheduler()
    scheduler.run(burst=True)
    beats = reconcile.schedulers()
    assert [b["name"] for b in beats] == [scheduler.name] and time.time() - beats[0]["last_poll"] < 5
    assert reconcile.lock_holder()["holder"] == scheduler.name
    home = client.get("/rq/goalhub/", headers=AUTH).get_data(as_text=True)
    assert scheduler.name in home and "last taken by" in home and "No scheduler has polled" not in home


def test_a_goals_outcomes_link_each_receiver_to_its_rq_job(client, db, drain, inline_plugin):
    import goalhub

    class Failing:
        @goalhub.receiver("goal.created")
        def always_fails(self, goal_id):
            raise RuntimeError("the RTC service said no")

        @goalhub.receiver("goal.created")
        def always_works(self, goal_id):
            return "fine"

    inline_plugin(Failing(), name="failing")
    goal = goal_document("KaraokeGoal", str(ObjectId()), str(ObjectId()))
    tasks.enqueue_create_goal(goal)
    drain()
    page = client.get(f"/rq/goalhub/goals/{goal['_id']}", headers=AUTH).get_data(as_text=True)
    assert "failing.always_fails" in page and "RuntimeError: the RTC service said no" in page
    outcome_job = "receiver-"  # the job ids derive from the outcome ids
    assert f'href="/rq/0/view/job/{outcome_job}' in page and 'class="failed"' in page
    # A receiver that ran inline links to the job that ran it: the goal's create_goal job.
    assert db.outcomes.find_one({"goal_id": goal["_id"], "receiver": "always_works"})["job_id"] == \
        f"create-{goal['_id']}"
    assert f'href="/rq/0/view/job/create-{goal["_id"]}"' in page
    assert client.get("/rq/goalhub/goals/not-an-id", headers=AUTH).status_code == 404


def test_rq_dashboard_fits_goalhub(client):
    jobs = client.get("/rq/0/view/jobs", headers=AUTH).get_data(as_text=True)
    assert "goalhub" in jobs and 'href="/rq/goalhub/scheduled"' in jobs  # the Scheduled tab in its navbar
    # The Jobs tab opens on goalhub's queue, not on a "default" queue goalhub never uses.
    assert 'id="select-queue" title="Queue name" value="goalhub"' in jobs
    assert "queued jobs on queue <strong>goalhub</strong>" in jobs
    # /rq answers the queues page itself: a redirect lost the Basic credentials in Chromium.
    root = client.get("/rq", headers=AUTH)
    assert root.status_code == 200 and "<h1>Queues</h1>" in root.get_data(as_text=True)
    assert client.get("/rq").status_code == 401
    assert 'href="/rq/0/view/queues"' in root.get_data(as_text=True)


def test_a_job_a_dying_worker_took_off_its_queue_is_put_back_once(db, drain, monkeypatch):
    """RQ takes a job from several queues with BLPOP: a worker killed before it starts the job
    leaves it in no list and no registry. The reconciler puts it back, once, at the second look."""
    from goalhub import worker
    from goalhub.queues import enqueued_key, get_queue

    monkeypatch.setattr(worker, "LOST_AFTER", 0.2)
    session, user = str(ObjectId()), str(ObjectId())
    waiting = goal_document("KaraokeGoal", session, user)
    lost = goal_document("KaraokeGoal", session, user)
    for goal in (lost, waiting):
        tasks.enqueue_create_goal(goal, fresh=True)
    connection = get_redis()
    taken = connection.lpop(get_queue().key).decode()  # the dying worker's BLPOP, and nothing after it
    assert taken == f"create-{lost['_id']}"
    time.sleep(0.3)
    assert worker.requeue_lost_jobs() == []  # first sighting: a live worker may be about to start it
    time.sleep(0.3)
    assert reconcile.reconcile()["requeue"] == [taken]  # still in no list, no registry: put back
    assert worker.requeue_lost_jobs() == []  # once
    assert get_queue().job_ids == [f"create-{waiting['_id']}", taken]  # the waiting one was left alone
    drain(scheduled=False)
    assert db.goals.count_documents({"_id": {"$in": [ObjectId(lost["_id"]), ObjectId(waiting["_id"])]}}) == 2
    time.sleep(0.3)
    assert worker.requeue_lost_jobs() == [] and connection.zcard(enqueued_key()) == 0  # started: watched no more
