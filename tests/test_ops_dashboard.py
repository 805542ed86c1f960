"""goalhub's dashboard pages beside rq-dashboard (/rq/goalhub/...: goalhub.api.ops) and the
scheduler's liveness, in-process against the real embedded Redis and store. The reconciler's
tests are in ``test_reconcile.py``."""

from __future__ import annotations

import time

import pytest
from world import basic, countdown, goal_document

from goalhub import liveness, scheduler, tasks


@pytest.fixture
def client(dashboard_client):
    return dashboard_client


def test_the_scheduled_view_lists_activations_and_ends_with_goal_class_and_due_time(client, db):
    nbf = time.time() + 600
    goal_id = countdown(db, nbf, nbf + 300)
    assert client.get("/rq/goalhub/scheduled").status_code == 401
    page = client.get("/rq/goalhub/scheduled", headers=basic())
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for text in (f"activate-{goal_id}", f"end-{goal_id}", "TriggerPrivateGoal",
                 time.strftime("%Y-%m-%d %H:%M", time.gmtime(nbf)), time.strftime("%Y-%m-%d %H:%M", time.gmtime(nbf + 300)),
                 f"/rq/goalhub/goals/{goal_id}", "in 600 s"):
        assert text in html, text
    home = client.get("/rq/goalhub/", headers=basic()).get_data(as_text=True)
    assert "scheduled activations" in home and "No scheduler has polled" in home


def test_scheduler_liveness_last_poll_and_lock_holder(client):
    process = scheduler.process()
    process.run(burst=True)
    beats = liveness.beats()
    assert [b["name"] for b in beats] == [process.name] and time.time() - beats[0]["last_poll"] < 5
    assert liveness.lock_holder()["holder"] == process.name
    home = client.get("/rq/goalhub/", headers=basic()).get_data(as_text=True)
    assert process.name in home and "last taken by" in home and "No scheduler has polled" not in home


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
    goal = goal_document("KaraokeGoal")
    tasks.enqueue_create_goal(goal)
    drain()
    page = client.get(f"/rq/goalhub/goals/{goal['_id']}", headers=basic()).get_data(as_text=True)
    assert "failing.always_fails" in page and "RuntimeError: the RTC service said no" in page
    outcome_job = "receiver-"  # the job ids derive from the outcome ids
    assert f'href="/rq/0/view/job/{outcome_job}' in page and 'class="failed"' in page
    # A receiver that ran inline links to the job that ran it: the goal's create_goal job.
    assert db.outcomes.find_one({"goal_id": goal["_id"], "receiver": "always_works"})["job_id"] == \
        f"create-{goal['_id']}"
    assert f'href="/rq/0/view/job/create-{goal["_id"]}"' in page
    assert client.get("/rq/goalhub/goals/not-an-id", headers=basic()).status_code == 404


def test_rq_dashboard_fits_goalhub(client):
    jobs = client.get("/rq/0/view/jobs", headers=basic()).get_data(as_text=True)
    assert "goalhub" in jobs and 'href="/rq/goalhub/scheduled"' in jobs  # the Scheduled tab in its navbar
    # The Jobs tab opens on goalhub's queue, not on a "default" queue goalhub never uses.
    assert 'id="select-queue" title="Queue name" value="goalhub"' in jobs
    assert "queued jobs on queue <strong>goalhub</strong>" in jobs
    # /rq answers the queues page itself: a redirect lost the Basic credentials in Chromium.
    root = client.get("/rq", headers=basic())
    assert root.status_code == 200 and "<h1>Queues</h1>" in root.get_data(as_text=True)
    assert client.get("/rq").status_code == 401
    assert 'href="/rq/0/view/queues"' in root.get_data(as_text=True)


