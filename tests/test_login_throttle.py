"""Failed dashboard logins are throttled per user name and client address, so one outsider's
failures never refuse an operator's correct password (issue 22, row 4): neither from another
address, nor behind the reverse proxy (with ``GOALHUB_TRUSTED_PROXY_HEADER``), nor under
another user name. The client's own failures still throttle it (tests/test_dashboard.py)."""

from __future__ import annotations

import base64

import pytest

from goalhub.api import create_app

PASSWORD = "a long dashboard password"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def client(monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", "ops")
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", PASSWORD)
    monkeypatch.setenv("GOALHUB_DASHBOARD_LOGIN_LIMIT", "10/300s")
    return create_app().test_client()


def attempt(client, path: str, user: str, password: str, address: str, **headers: str):
    return client.get(path, headers={**basic(user, password), **headers}, environ_base={"REMOTE_ADDR": address})


def test_an_outsiders_failures_do_not_lock_out_an_operator_at_another_address(client):
    for n in range(11):
        attempt(client, "/metrics", "ops", f"wrong{n}", "203.0.113.66")
    assert attempt(client, "/metrics", "ops", PASSWORD, "203.0.113.66").status_code == 429  # its own failures
    assert attempt(client, "/metrics", "ops", PASSWORD, "198.51.100.7").status_code == 200
    assert attempt(client, "/rq/", "ops", PASSWORD, "198.51.100.7").status_code == 200


def test_behind_the_proxy_the_trusted_header_tells_the_outsider_from_the_operator(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_TRUSTED_PROXY_HEADER", "X-Forwarded-For")
    proxy = "10.0.0.1"  # every request comes from the reverse proxy
    for n in range(11):
        attempt(client, "/metrics", "ops", f"wrong{n}", proxy, **{"X-Forwarded-For": "203.0.113.66"})
    assert attempt(client, "/metrics", "ops", PASSWORD, proxy, **{"X-Forwarded-For": "203.0.113.66"}).status_code == 429
    assert attempt(client, "/metrics", "ops", PASSWORD, proxy, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200
    assert attempt(client, "/rq/", "ops", PASSWORD, proxy, **{"X-Forwarded-For": "198.51.100.7"}).status_code == 200


def test_failures_under_another_user_name_do_not_throttle_the_operator(client):
    for n in range(11):
        attempt(client, "/metrics", "admin", f"wrong{n}", "10.0.0.1")
    assert attempt(client, "/metrics", "admin", "anything", "10.0.0.1").status_code == 429
    assert attempt(client, "/metrics", "ops", PASSWORD, "10.0.0.1").status_code == 200


def test_a_correct_login_clears_its_own_failures(client, monkeypatch):
    monkeypatch.setenv("GOALHUB_DASHBOARD_LOGIN_LIMIT", "3/300s")
    for n in range(2):
        assert attempt(client, "/rq/", "ops", f"typo{n}", "10.0.0.9").status_code == 401
    assert attempt(client, "/rq/", "ops", PASSWORD, "10.0.0.9").status_code == 200
    for n in range(2):
        assert attempt(client, "/rq/", "ops", f"typo{n}", "10.0.0.9").status_code == 401
    assert attempt(client, "/rq/", "ops", PASSWORD, "10.0.0.9").status_code == 200
