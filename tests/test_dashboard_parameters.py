"""The dashboard's parameters are validated (issue 22, row 9): a bad one is a 400 or 404, never
a 500, and the goal lookup redirects only to a goal's page (no open redirect)."""

from __future__ import annotations

import base64

import pytest

from goalhub.api import create_app


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", "a long dashboard password")
    return create_app().test_client()


AUTH = {"Authorization": "Basic " + base64.b64encode(b"ops:a long dashboard password").decode()}


@pytest.mark.parametrize("query", ["abc%0d%0aX", "../../../admin/receivers", "%2F%2Fevil.example", "",
                                   "6800a9073e0c346531958b0", "6800a9073e0c346531958b03x"])
def test_the_goal_lookup_refuses_what_is_not_a_goal_id(client, query):
    response = client.get(f"/rq/goalhub/goals?id={query}", headers=AUTH)
    assert response.status_code == 400 and "Location" not in response.headers


def test_the_goal_lookup_redirects_to_the_goals_page(client):
    response = client.get("/rq/goalhub/goals?id=+6800A9073E0C346531958B03+", headers=AUTH)
    assert response.status_code == 303
    assert response.headers["Location"] == "/rq/goalhub/goals/6800a9073e0c346531958b03"


@pytest.mark.parametrize("path, status", [
    ("/rq/9/view/queues", 404),
    ("/rq/1/data/queues.json", 404),
    ("/rq/0/data/jobs/goalhub/bogus/8/asc/1.json", 404),
    ("/rq/0/view/jobs/goalhub/bogus/8/asc/1", 404),
    ("/rq/0/data/jobs/goalhub/failed/x/asc/1.json", 400),
    ("/rq/0/data/jobs/goalhub/failed/8/sideways/1.json", 400),
    ("/rq/0/data/jobs/goalhub/failed/8/asc/0.json", 400),
    ("/rq/0/data/jobs/goalhub/failed/100000/asc/1.json", 400),
    ("/rq/0/view/jobs/goalhub/failed/8/sideways/1", 400),
])
def test_bad_dashboard_parameters_are_4xx_not_500(client, path, status):
    assert client.get(path, headers=AUTH).status_code == status


@pytest.mark.parametrize("path", ["/rq/0/data/jobs/goalhub/failed/8/asc/1.json",
                                  "/rq/0/data/jobs/goalhub/queued/8/dsc/1.json", "/rq/0/data/queues.json",
                                  "/rq/0/view/jobs/goalhub/failed/8/asc/1"])
def test_good_dashboard_parameters_still_answer(client, path):
    assert client.get(path, headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/rq/goalhub/", "/rq/goalhub/scheduled"])
def test_goalhubs_own_dashboard_pages_carry_csp_and_frame_headers(client, path):
    page = client.get(path, headers=AUTH)
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
