"""The repo's tests (the core's and the bundled plugins') all run in goalhub's isolated
environment: goalhub.testing is opt-in, so this opts in for every test here."""

import os

import pytest

# Registered by goalhub's pytest11 entry point; named here too so a checkout without the
# entry point installed gets the fixtures (pytest skips a plugin already registered).
pytest_plugins = ["goalhub.testing"]


@pytest.fixture(autouse=True)
def _goalhub_isolated(goalhub_env: None) -> None:
    """A fresh home, store and flushed Redis for every test; no installed plugin loaded."""


def pytest_report_header(config: pytest.Config) -> list[str]:
    uri = os.environ.get("GOALHUB_TEST_MONGO_URI")
    return [f"goalhub: real MongoDB tests {'against ' + uri if uri else 'skipped (GOALHUB_TEST_MONGO_URI not set)'}"]
