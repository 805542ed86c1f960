"""Fixtures the core's tests share."""

from __future__ import annotations

import sys

import pytest
from world import DASHBOARD_PASSWORD, DASHBOARD_USER, OTEL_SITE

from goalhub.api import create_app

# The otel extra, for the trace tests' in-process parts; last on the path, after the venv.
if str(OTEL_SITE) not in sys.path:
    sys.path.append(str(OTEL_SITE))


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
