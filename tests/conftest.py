"""Fixtures the core's tests share."""

from __future__ import annotations

import pytest
from world import DASHBOARD_PASSWORD, DASHBOARD_USER

from goalhub.api import create_app


@pytest.fixture
def client():
    """Flask's test client of the API, on the test's Redis and store."""
    return create_app().test_client()


@pytest.fixture
def dashboard_client(monkeypatch):
    """The API's test client with the dashboard's operator login configured (``world.basic()``)."""
    monkeypatch.setenv("GOALHUB_DASHBOARD_USER", DASHBOARD_USER)
    monkeypatch.setenv("GOALHUB_DASHBOARD_PASSWORD", DASHBOARD_PASSWORD)
    return create_app().test_client()
