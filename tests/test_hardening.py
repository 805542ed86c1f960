"""Issue 12, rows 2 to 10 and the abuse limits, through the API as a client or operator sees
it (Flask's test client on a real Redis and the real store); rows 1 and 9 over a real server
are in ``test_slow_clients.py``, ``goalhub up`` healing in ``test_up.py``, retention in
``test_retention.py``, the dashboard in a real browser in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import os
import stat
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from rq import Queue
from rq.job import Job

import goalhub
from goalhub import config, connection, outbound, redaction, tasks
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.queues import get_queue, queue_names

STREAMER = "6800a9073e0c346531958b03"
OTHER = "6800a9073e0c346531958b04"
PLATFORM_SERVICE = "6800a9073e0c346531958bff"  # the platform backend's own service identity
XSS = "<img src=x onerror=alert(document.domain)>"
SECRET_URL = "https://ops:hunter2@sink.example.com/hook?token=abc123&region=sg"


def bearer(user: str = STREAMER, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(user, list(scopes) or ['CREATOR'])}"}


@pytest.fixture
def client():
    return create_app().test_client()


def session(db, user: str = STREAMER, sources: list | None = None, active: bool = True) -> str:
    _id = ObjectId()
    db.sessions.insert_one({"_id": _id, "user": user, "active": active, "sources": sources or [],
                            "exclusive_goal_pairs": {}, "show_goal_pairs": [], "started_at": time.time()})
    return str(_id)


def goal(db, session_id: str, user: str = STREAMER, **extra: Any) -> str:
    _id = ObjectId()
    db.goals.insert_one({"_id": _id, "_cls": "TriggerExclusiveGoal", "active": True,
                         "conditions": {"session_id": session_id, "exclusive_to": "room"},
                         "levels": [{"target": 60}], "nbf": None, "exp": time.time() + 3600,
                         "context": {"type": "trigger_exclusive", "session_id": session_id},
                         "metadata": {"user_id": user}, "created_at": time.time(), **extra})
    return str(_id)


# --- row 2: ids in their alphabet, no user text in job results, the dashboard escaped ----------


@pytest.mark.parametrize("room_id", [XSS, "room 1", "room\"1", "r" * 129, "房間", "a/b", "<b>"])
def test_room_and_task_ids_outside_rtcs_alphabet_are_refused(client, db, room_id):
    for source in ({"room_id": room_id, "task_id": "t1"}, {"room_id": "r1", "task_id": room_id}):
        response = client.post("/sessions", json={"sources": [source]}, headers=bearer(STREAMER, "CREATOR", "PLATFORM"))
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["code"] == "invalid_source_id"
        assert room_id not in response.get_data(as_text=True)
    assert db.sessions.count_documents({}) == 0


def test_ids_in_rtcs_alphabet_are_accepted(client):
    source = {"room_id": "room-681831d3_A.b@c", "task_id": "snapshot-1"}
    response = client.post("/sessions", json={"sources": [source]}, headers=bearer(STREAMER, "CREATOR", "PLATFORM"))
    assert response.status_code == 201 and response.get_json()["sources"] == [source]


class Echo:
    """Receivers that return user-supplied text, as the snapshot receiver returns room ids: one
    runs inline in create_goal's job, the other (isolated) as a job of its own."""

    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def echo(self, goal_id, context):
        return {"room_id": context["room"], "goal_id": goal_id}

    @goalhub.receiver("goal.created", "ExclusiveGoal", isolated=True)
    def echo_alone(self, goal_id, context):
        return {"room_id": context["room"], "goal_id": goal_id}


def test_a_receivers_return_value_is_not_the_rq_job_result(db, inline_plugin, drain):
    inline_plugin(Echo(), "echo")
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None,
                               "context": {"room": XSS}, "metadata": {"user_id": STREAMER}})
    drain()
    for name in ("echo", "echo_alone"):
        outcome = db.outcomes.find_one({"goal_id": gid, "receiver": name})
        assert outcome["status"] == "ok" and outcome["result"]["room_id"] == XSS  # the detail stays here
    jobs = [Job.fetch(jid, connection=get_queue().connection)
            for jid in get_queue().finished_job_registry.get_job_ids()]
    receiver_jobs = [job for job in jobs if job.func_name.endswith("run_receiver")]
    assert len(receiver_jobs) == 1
    for job in receiver_jobs:
        assert job.return_value() == {"status": "ok", "outcome": job.args[0]}
    for job in jobs:  # create_goal's job ran the inline receiver: its result is the goal id
        assert "<img" not in repr(job.return_value()) and "<img" not in (job.description or "")


def admin() -> dict[str, str]:
    return bearer(STREAMER, "ADMIN")


def test_the_dashboard_escapes_job_data_and_sends_csp_and_nosniff(client):
    job = get_queue().enqueue(time.sleep, 0, description=XSS + " " + SECRET_URL)
    response = client.get(f"/rq/0/data/job/{job.id}.json", headers=admin())
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert "<img" not in text and "&lt;img src=x onerror=alert(document.domain)&gt;" in text
    assert "hunter2" not in text and "abc123" not in text  # operator secrets redacted there too
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]

    page = client.get(f"/rq/0/view/job/{job.id}", headers=admin())
    assert page.status_code == 200 and page.headers["X-Content-Type-Options"] == "nosniff"
    nonce = page.headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    html = page.get_data(as_text=True)
    assert f'<script nonce="{nonce}" type="text/javascript">' in html  # the dashboard's own inline script
    assert "<img" not in html


# --- row 10: dashboard errors and login throttling ------------------------------------------------


def test_the_dashboard_answers_unknown_jobs_and_empty_queues_cleanly(client):
    for path in ("/rq/0/data/job/nope.json", "/rq/0/view/job/nope"):
        response = client.get(path, headers=admin())
        assert response.status_code == 404, (path, response.status_code)
        assert response.get_json()["error"]["code"] == "job_not_found"
    assert client.post("/rq/job/nope/delete", headers=admin()).status_code == 404
    assert client.post("/rq/job/nope/requeue", headers=admin()).status_code == 404
    get_queue().connection.delete(get_queue().key)
    compact = client.post(f"/rq/queue/{queue_names()[1]}/compact", headers=admin())
    assert compact.status_code == 200 and compact.get_json() == {"status": "OK"}


def basic(user: str, password: str) -> dict[str, str]:
    import base64

    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_failed_dashboard_logins_are_throttled(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "a long dashboard password")
    monkeypatch.setenv("GOALHUB_DASHBOARD_LOGIN_LIMIT", "3/300s")
    assert client.get("/rq/", headers=basic("ops", "a long dashboard password")).status_code == 200
    for _ in range(3):
        assert client.get("/rq/", headers=basic("ops", "guess")).status_code == 401
    blocked = client.get("/rq/", headers=basic("ops", "a long dashboard password"))
    assert blocked.status_code == 429
    assert blocked.get_json()["error"]["code"] == "login_throttled"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 300


# --- row 3: secrets in outcomes -------------------------------------------------------------------


@pytest.mark.parametrize("text, secret", [
    (SECRET_URL, "hunter2"),
    (SECRET_URL, "abc123"),
    ("POST https://api.example.com/v1?api_key=K3Y&x=1 failed", "K3Y"),
    ("redis://:s3cret@cache:6379/0 refused", "s3cret"),
    ("headers={'Authorization': 'HMAC-SHA256 Credential=AKLT/2024/rtc, Signature=deadbeef'}", "deadbeef"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig rejected", "eyJhbGciOiJIUzI1NiJ9"),
    ("https://sink.example.com/hook?client_secret=zz9&signature=ab", "zz9"),
])
def test_redact_removes_url_credentials_secret_parameters_and_authorization(text, secret):
    redacted = redaction.redact(text)
    assert secret not in redacted and "***" in redacted


def test_redact_keeps_what_is_not_secret():
    text = "HTTPError: 503 Server Error for url: https://sink.example.com/hook?region=sg&goal=1"
    assert redaction.redact(text) == text


class Leaky:
    @goalhub.receiver("goal.created", "ExclusiveGoal")
    def leak(self, goal_id):
        import requests

        raise requests.HTTPError(f"401 Client Error: Unauthorized for url: {SECRET_URL}")


def test_clients_see_an_error_class_and_code_operators_the_redacted_detail(client, db, inline_plugin, drain,
                                                                           monkeypatch):
    monkeypatch.setenv("GOALHUB_RECEIVER_RETRIES", "0")
    inline_plugin(Leaky(), "leaky")
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None, "context": {},
                               "metadata": {"user_id": STREAMER}})
    drain()
    seen = client.get(f"/goals/{gid}", headers=bearer()).get_json()
    failed = next(o for o in seen["outcomes"] if o["receiver"] == "leak")
    assert failed["status"] == "failed"
    assert failed["error_class"] == "HTTPError" and failed["error_code"] == "http_error"
    assert "error" not in failed and "traceback" not in failed
    assert "sink.example.com" not in str(seen)
    stored = db.outcomes.find_one({"goal_id": gid, "receiver": "leak"})
    assert "HTTPError: 401 Client Error" in stored["error"] and "https://***@sink.example.com" in stored["error"]
    for secret in ("hunter2", "abc123"):
        assert secret not in stored["error"] and secret not in stored["traceback"]


def test_an_outbound_records_error_is_redacted(db):
    def send():
        raise ConnectionError(f"cannot reach {SECRET_URL}")

    with pytest.raises(ConnectionError):
        outbound.send_once("sink", "k1", {"a": 1}, send, goal_id="g")
    record = db.outbound.find_one({"_id": "sink:k1"})
    assert "hunter2" not in record["error"] and "abc123" not in record["error"] and "***" in record["error"]


# --- row 4: only the platform sets RTC sources --------------------------------------------------


def test_a_streamer_cannot_name_rtc_sources(client, db):
    response = client.post("/sessions", json={"sources": [{"room_id": "someone-elses-room", "task_id": "t"}]},
                           headers=bearer(STREAMER, "CREATOR"))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "sources_need_platform"
    assert db.sessions.count_documents({}) == 0
    assert client.post("/sessions", json={}, headers=bearer(STREAMER, "CREATOR")).status_code == 201


def test_the_platform_sets_a_sessions_sources(client, db):
    sid = session(db)
    sources = {"sources": [{"room_id": "room-9", "task_id": "task-9"}]}
    refused = client.put(f"/sessions/{sid}/sources", json=sources, headers=bearer(STREAMER, "CREATOR"))
    assert refused.status_code == 403 and db.sessions.find_one()["sources"] == []
    done = client.put(f"/sessions/{sid}/sources", json=sources, headers=bearer(PLATFORM_SERVICE, "PLATFORM"))
    assert done.status_code == 200 and done.get_json()["sources"] == sources["sources"]
    ended = session(db, active=False)
    gone = client.put(f"/sessions/{ended}/sources", json=sources, headers=bearer(PLATFORM_SERVICE, "PLATFORM"))
    assert gone.status_code == 409


def test_the_snapshot_client_refuses_a_stored_id_outside_the_alphabet():
    pytest.importorskip("goalhub_snapshot")
    from goalhub_snapshot import rtc

    with pytest.raises(ValueError) as caught:
        rtc.build_request(rtc.STOP, XSS, "t")
    assert "<img" not in str(caught.value)


# --- row 5: the socket's private directory ------------------------------------------------------


def test_a_long_home_gets_its_socket_in_a_private_directory(tmp_path):
    home = tmp_path / ("h" * 90)
    home.mkdir()
    path = connection._socket_path(home)
    assert len(str(path)) < 107 and not str(path.parent) == "/tmp"
    info = os.lstat(path.parent)
    assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o700


@pytest.mark.parametrize("make_unsafe", ["open", "symlink"])
def test_a_socket_directory_others_can_reach_is_refused(tmp_path, monkeypatch, make_unsafe):
    runtime = Path(tempfile.mkdtemp(dir="/tmp", prefix="gh"))
    try:
        if make_unsafe == "open":
            (runtime / "goalhub").mkdir(mode=0o777)
            os.chmod(runtime / "goalhub", 0o777)
        else:
            elsewhere = runtime / "elsewhere"
            elsewhere.mkdir(mode=0o700)
            (runtime / "goalhub").symlink_to(elsewhere)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        home = tmp_path / ("h" * 90)
        home.mkdir()
        with pytest.raises(connection.UnsafeSocketDirectory):
            connection.ensure_embedded_redis(home)
    finally:
        import shutil

        shutil.rmtree(runtime)


# --- row 6: the end race --------------------------------------------------------------------------


def test_48_concurrent_ends_give_one_202_and_one_end_job(db):
    sid = session(db)
    gid = goal(db, sid)
    get_queue("lifecycle").empty()
    app = create_app()
    headers = bearer()
    statuses: list[int] = []
    barrier = threading.Barrier(48)

    def end() -> None:
        with app.test_client() as own:
            barrier.wait()
            statuses.append(own.post(f"/goals/{gid}/end", headers=headers).status_code)

    threads = [threading.Thread(target=end) for _ in range(48)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [202] + [409] * 47
    assert get_queue("lifecycle").count == 1


# --- row 8: the home directory --------------------------------------------------------------------


def test_home_is_private(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("GOALHUB_HOME", str(fresh))
    assert stat.S_IMODE(config.home().stat().st_mode) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    monkeypatch.setenv("GOALHUB_HOME", str(old))
    assert stat.S_IMODE(config.home().stat().st_mode) == 0o700


# --- abuse limits -------------------------------------------------------------------------------


def test_session_starts_are_rate_limited_per_user_but_not_for_admin(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_RATE_LIMIT_SESSIONS", "2/minute")
    for _ in range(2):
        assert client.post("/sessions", json={}, headers=bearer()).status_code == 201
    limited = client.post("/sessions", json={}, headers=bearer())
    assert limited.status_code == 429 and limited.get_json()["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert client.post("/sessions", json={}, headers=bearer(OTHER)).status_code == 201  # per user
    for _ in range(3):
        assert client.post("/sessions", json={}, headers=bearer(STREAMER, "CREATOR", "ADMIN")).status_code == 201


def test_goal_creation_is_rate_limited_per_user(client, db, inline_plugin, monkeypatch):
    import api_support

    inline_plugin(api_support, "test-goal-types")
    monkeypatch.setenv("GOALHUB_RATE_LIMIT_GOALS", "1/hour")
    sid = session(db)
    body = {"levels": [{"target": 60}], "context": {"session_id": sid}, "nbf": time.time(), "exp": time.time() + 60}
    refused = client.post("/goals?type=nope", json={}, headers=bearer())
    assert refused.status_code == 400  # a refused request is not counted (it writes nothing)
    assert client.post("/goals?type=trigger_exclusive", json=body, headers=bearer()).status_code == 202
    limited = client.post("/goals?type=trigger_exclusive", json=body, headers=bearer())
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 60


def test_a_session_holds_a_bounded_number_of_open_goals(client, db, inline_plugin, monkeypatch):
    import api_support

    inline_plugin(api_support, "test-goal-types")
    monkeypatch.setenv("GOALHUB_MAX_OPEN_GOALS", "2")
    sid = session(db)
    goal(db, sid)
    goal(db, sid, ended_at=time.time())  # an ended goal does not count
    body = {"levels": [{"target": 60}], "context": {"session_id": sid}, "nbf": time.time(), "exp": time.time() + 60}
    assert client.post("/goals?type=trigger_exclusive", json=body, headers=bearer()).status_code == 202
    goal(db, sid)  # now two open goals
    refused = client.post("/goals?type=trigger_exclusive", json=body, headers=bearer())
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "too_many_open_goals"


def test_rate_limit_settings_parse():
    from goalhub.api.limits import Rate, parse

    assert parse("120/minute") == Rate(120, 60) and parse("10/300s") == Rate(10, 300)
    assert parse("5 / hours") == Rate(5, 3600) and parse("off") is None
    with pytest.raises(ValueError):
        parse("lots")


def test_queue_job_descriptions_carry_no_user_text():
    # create_goal's description names the class and the id only, never body text.
    gid = str(ObjectId())
    tasks.enqueue_create_goal({"_id": gid, "_cls": "ExclusiveGoal", "active": True, "conditions": {},
                               "levels": [{"target": 1}], "nbf": None, "exp": None,
                               "context": {"room": XSS}, "metadata": {"user_id": STREAMER}})
    job = Queue(queue_names()[1], connection=get_queue().connection).jobs[-1]
    assert "<img" not in job.description


# --- found by the chaos soak: a job taken by a worker that died before its horse started it ----


def test_a_job_taken_by_a_worker_that_died_before_starting_it_is_queued_again(db):
    from rq import Worker

    from goalhub.recovery import recover_abandoned_jobs

    queue = get_queue()
    job = queue.enqueue(time.sleep, 0, job_id="taken-then-orphaned")
    taker = Worker([queue], connection=queue.connection, name="died-before-forking")
    taken, _ = Queue.dequeue_any([queue], None, connection=queue.connection)
    assert taken.id == job.id and queue.count == 0
    taker.prepare_execution(taken)  # in the started registry; the horse never ran: still "queued"
    assert job.id in queue.started_job_registry and taken.get_status() == "queued"
    queue.connection.delete(taker.key)  # the worker died (kill -9): its registration is gone
    assert recover_abandoned_jobs([queue]) == [job.id]
    assert queue.get_job_ids() == [job.id] and job.id not in queue.started_job_registry
