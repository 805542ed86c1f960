"""Fixtures the core's tests share."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import settings
from world import DASHBOARD_PASSWORD, DASHBOARD_USER, OTEL_SITE

from goalhub.api import create_app

# Property tests draw the same examples on every run ("ci", the default: a red CI must be a
# change's fault, not a new draw's); HYPOTHESIS_PROFILE=explore draws new ones each run.
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

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
