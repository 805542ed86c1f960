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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``serial`` change what every test shares (the venv) or hold a deadline of
    seconds: beside other tests in parallel (pytest-xdist) they would break them or miss it.
    `make test` runs them alone, after the rest."""
    if item.get_closest_marker("serial") and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.fail("a test marked serial cannot run in parallel: add -m 'not serial' to -n and run "
                    "the serial tests alone (pytest -m serial)", pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``pytest -m serial <paths>`` with none of those tests marked serial has nothing to run,
    which is not a failure (tox runs the serial part after the parallel one with the same paths)."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.option.markexpr == "serial":
        session.exitstatus = pytest.ExitCode.OK
