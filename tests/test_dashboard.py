"""The operator dashboard (goalhub.api.dashboard, rq-dashboard under /rq): job data escaped,
CSP and nosniff, clean answers for unknown jobs, throttled logins (issue 12, rows 2 and 10).
goalhub's own pages beside it are in ``test_ops_dashboard.py``; a real browser in
``test_dashboard_browser.py``.
"""

from __future__ import annotations

import time

from world import SECRET_URL, STREAMER, XSS, basic, bearer

from goalhub.queues import get_queue, queue_names


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


def test_failed_dashboard_logins_are_throttled(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "a long dashboard password")
    monkeypatch.setenv("GOALHUB_DASHBOARD_LOGIN_LIMIT", "3/300s")
    assert client.get("/rq/", headers=basic()).status_code == 200
    for _ in range(3):
        assert client.get("/rq/", headers=basic(password="guess")).status_code == 401
    blocked = client.get("/rq/", headers=basic())
    assert blocked.status_code == 429
    assert blocked.get_json()["error"]["code"] == "login_throttled"
    assert 1 <= int(blocked.headers["Retry-After"]) <= 300

