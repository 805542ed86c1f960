"""Watching goalhub run, with real processes (the waitress API, a forking RQ worker, the scheduler,
each started through the ``goalhub`` CLI): the Prometheus scrape after a seed flow, one
request id followed from the API log to the job log and the outcome records, and a deleted
activation job that does not lose its goal."""

from __future__ import annotations

import json
import time
import uuid
from types import SimpleNamespace
from typing import Any

import api_support
import pytest
import requests
from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families

from goalhub.auth import mint_token
from goalhub.store import get_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLUGINS = ("karaoke", "analytics")
STREAMER = "6800a9073e0c346531958b03"
DASHBOARD = ("ops", "a long dashboard password")
FINAL = {"ok", "failed", "skipped"}


@pytest.fixture
def stack(tmp_path, use_plugins, monkeypatch):
    started = time.time()
    use_plugins(*PLUGINS)
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", DASHBOARD[0])
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", DASHBOARD[1])
    monkeypatch.setenv("GOALHUB_RECONCILE_INTERVAL", "0.5")
    monkeypatch.setenv("GOALHUB_RECONCILE_GRACE", "0.5")
    monkeypatch.setenv("GOALHUB_LOG_FORMAT", "json")
    env = api_support.process_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    processes = [
        api_support.ChildProcess("worker", "from goalhub.cli import main; main(['worker'])", env, tmp_path),
        api_support.ChildProcess("scheduler", "from goalhub.cli import main; main(['scheduler'])", env, tmp_path),
    ]
    try:
        server, base = api_support.start_api(env, tmp_path, workers=2, threads=4)
        processes.append(server)
        token = mint_token(STREAMER, ["CREATOR", "PLATFORM"])  # the platform opens sessions with RTC sources
        yield SimpleNamespace(base=base, auth={"Authorization": f"Bearer {token}"},
                              logs={p.name: p.log_path for p in processes}, started=started)
    finally:
        for process in processes:
            process.stop()
        for process in processes:
            print(f"--- {process.name} ---\n{process.output()}")


def post(stack, path: str, body: dict[str, Any] | None = None, **headers: str) -> requests.Response:
    return requests.post(f"{stack.base}{path}", json=body, headers={**stack.auth, **headers}, timeout=10)


def settled_goal(stack, goal_id: str, **fields: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        response = requests.get(f"{stack.base}/goals/{goal_id}", headers=stack.auth, timeout=10)
        goal = response.json()
        if goal.get("state") == "creating" or not goal.get("events"):
            return None
        if any(o["status"] not in FINAL for o in goal["outcomes"]):
            return None
        if any(goal.get(name) != value for name, value in fields.items()):
            return None
        return goal

    return api_support.wait_for(check, timeout=30, what=f"goal {goal_id} settled with {fields}")


def scrape(stack, auth: tuple[str, str] | None = DASHBOARD) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = requests.get(f"{stack.base}/metrics", auth=auth, timeout=10)
    assert response.status_code == 200, response.text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def start_session(stack) -> str:
    response = post(stack, "/sessions", {"sources": [{"room_id": "room-1", "task_id": "task-1"}]})
    assert response.status_code == 201, response.text
    return response.json()["_id"]


def test_metrics_scrape_after_a_seed_flow_counts_what_happened(stack):
    assert requests.get(f"{stack.base}/metrics", timeout=10).status_code == 401  # protected like /rq
    assert requests.get(f"{stack.base}/metrics", auth=("ops", "wrong"), timeout=10).status_code == 401
    session_id = start_session(stack)
    now = time.time()
    karaoke = post(stack, "/goals?type=karaoke", {"levels": [{"target": 30}], "context": {"session_id": session_id}})
    private = post(stack, "/goals?type=trigger_private", {"levels": [{"target": 60}], "context": {"session_id": session_id},
                                                            "nbf": now + 1.5, "exp": now + 120})
    assert karaoke.status_code == private.status_code == 202, (karaoke.text, private.text)
    settled_goal(stack, karaoke.json()["goal_id"])
    settled_goal(stack, private.json()["goal_id"], active=True)

    # A horse's samples are recorded by its worker once the horse has exited (goalhub.metrics):
    # a moment after the goal it activated shows active. Then every count must be exact.
    def recorded() -> dict | None:
        samples = scrape(stack)
        done = (value(samples, "goalhub_activation_lateness_seconds_count")
                and value(samples, "goalhub_receiver_outcomes_total", plugin="analytics", receiver="track_goals",
                          status="ok") >= 2)
        return samples if done else None

    samples = api_support.wait_for(recorded, timeout=30, what="the activation's samples, recorded by its worker")
    assert value(samples, "goalhub_goals_created_total", goal_type="KaraokeGoal") == 1
    assert value(samples, "goalhub_goals_created_total", goal_type="TriggerPrivateGoal") == 1
    # karaoke: its binding and track_goals ran ok, once per goal that they act on.
    assert value(samples, "goalhub_receiver_outcomes_total", plugin="karaoke", receiver="bind_karaoke_goal_to_session",
                 status="ok") == 1
    assert value(samples, "goalhub_receiver_outcomes_total", plugin="analytics", receiver="track_goals", status="ok") == 2
    assert value(samples, "goalhub_receiver_outcomes_total", plugin="karaoke",
                 receiver="bind_trigger_private_goal_to_session", status="skipped") == 1
    assert value(samples, "goalhub_receiver_duration_seconds_count", plugin="analytics", receiver="track_goals") == 2
    assert value(samples, "goalhub_activation_lateness_seconds_count") == 1
    assert 0 <= value(samples, "goalhub_activation_lateness_seconds_sum") < 5
    assert value(samples, "goalhub_http_requests_total", method="POST", route="/goals", status="202") == 2
    assert value(samples, "goalhub_http_requests_total", method="POST", route="/sessions", status="201") == 1
    assert ("goalhub_queue_depth", (("queue", "goalhub"),)) in samples
    assert value(samples, "goalhub_scheduled_jobs") == 1  # the trigger_private goal's end at exp
    assert value(samples, "goalhub_scheduler_last_poll_age_seconds") < 5
    # The embedded store's one write lock: the API's requests and the worker's jobs (its horses'
    # samples handed to it) record their write transactions. One writer at a time holds it, so
    # its holders' seconds cannot add up to more than the time since the stack started.
    # At least the API's three stored requests, and each create job's goal, outcome records, event
    # record and outbox deletion (69 in a run by hand).
    def both(name: str) -> float:
        return value(samples, name, role="api") + value(samples, name, role="worker")

    assert value(samples, "goalhub_store_writes_total", role="api") >= 3
    assert value(samples, "goalhub_store_writes_total", role="worker") >= 2 * 4
    assert 0 < both("goalhub_store_write_held_seconds_total") < time.time() - stack.started
    assert both("goalhub_store_write_wait_seconds_total") >= 0


def test_one_request_id_is_in_the_api_log_the_job_log_and_every_outcome_record(stack):
    session_id = start_session(stack)
    request_id = f"trail-{uuid.uuid4().hex}"
    created = post(stack, "/goals?type=karaoke", {"levels": [{"target": 30}], "context": {"session_id": session_id}},
                   **{"x-request-id": request_id})
    assert created.status_code == 202 and created.headers["X-Request-Id"] == request_id
    goal_id = created.json()["goal_id"]
    settled_goal(stack, goal_id)

    def lines(name: str) -> list[dict[str, Any]]:
        found = []
        for line in stack.logs[name].read_text().splitlines():
            if request_id in line:
                found.append(json.loads(line))  # every line carrying it is a JSON record
        return found

    api_lines = api_support.wait_for(lambda: lines("api"), what="the request in the API log")
    assert any(r["route"] == "/goals" and r["status"] == 202 and r["request_id"] == request_id for r in api_lines)
    worker_lines = api_support.wait_for(lambda: lines("worker"), what="the jobs in the worker log")
    messages = [r["message"] for r in worker_lines if r["request_id"] == request_id]
    assert any(m.startswith("create_goal stored KaraokeGoal") for m in messages), messages
    assert any("bind_karaoke_goal_to_session ok" in m for m in messages), messages
    outcomes = list(get_database().outcomes.find({"goal_id": goal_id}))
    assert outcomes and {o.get("request_id") for o in outcomes} == {request_id}
    assert get_database().goals.find_one({"_id": ObjectId(goal_id)})["request_id"] == request_id
    # Without a header, the API makes an id and answers with it.
    assert len(requests.get(f"{stack.base}/healthz", timeout=5).headers["X-Request-Id"]) == 32


def test_a_deleted_activation_job_does_not_lose_its_goal(stack):
    session_id = start_session(stack)
    # Far enough ahead that the delete below comes before the scheduler moves the job, even
    # when creating and settling the goal takes seconds on a loaded machine.
    nbf = time.time() + 8
    created = post(stack, "/goals?type=trigger_private", {"levels": [{"target": 60}], "context": {"session_id": session_id},
                                                           "nbf": nbf, "exp": nbf + 120})
    goal_id = created.json()["goal_id"]
    settled_goal(stack, goal_id, active=False)
    job_id = f"activate-{goal_id}"
    page = requests.get(f"{stack.base}/rq/goalhub/scheduled", auth=DASHBOARD, timeout=10)
    assert job_id in page.text and "TriggerPrivateGoal" in page.text
    # The operator deletes the pending activation from rq-dashboard's job page.
    assert time.time() < nbf - 1, "too slow to delete the activation before it was due"
    deleted = requests.post(f"{stack.base}/rq/job/{job_id}/delete", auth=DASHBOARD,
                            headers={"Origin": stack.base}, timeout=10)
    assert deleted.status_code == 200, deleted.text
    goal = settled_goal(stack, goal_id, active=True)
    assert goal["activated_at"] >= nbf  # late, never early
    # The scheduler counts it once its job is enqueued, so a worker may activate the goal first.
    api_support.wait_for(lambda: value(scrape(stack), "goalhub_reconciled_total", action="activate") == 1,
                         timeout=30, what="the reconciled activation counted")
    assert value(scrape(stack), "goalhub_reconciled_total", action="activate") == 1
    assert any("reconciler: activate of goal " + goal_id in line
               for line in stack.logs["scheduler"].read_text().splitlines())
