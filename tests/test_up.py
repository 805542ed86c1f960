"""``goalhub up`` as a user runs it: a real subprocess with its API, worker, scheduler and
embedded Redis; Ctrl-C (SIGINT) must leave no process behind, work-horses included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import redis
import requests
from rq import Queue
from rq.job import Job, JobStatus
from venv_copy import private_venv

from goalhub import connection
from goalhub.queues import queue_names
from goalhub.testing import free_port

pytestmark = pytest.mark.e2e


class Up(subprocess.Popen):
    """``goalhub up``, its output read as it comes (a full pipe would block up and every child
    that logs) and kept for the assertions and for any failure's message."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(self.stdout.readline, "")), daemon=True)
        self._reader.start()

    def output(self, tail: int = 12000) -> str:
        return "".join(self.lines)[-tail:]

    def finish(self, timeout: float = 60) -> str:
        """Wait for up to exit; all it printed."""
        self.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> str:
        self.send_signal(sig)
        return self.finish(timeout)


def start_up(home: Path, port: int, *extra: str, redis_url: str | None = None,
             env: dict[str, str] | None = None, python: Path | str = sys.executable) -> Up:
    env = {**os.environ, "GOALHUB_HOME": str(home), **(env or {})}
    env.pop("GOALHUB_REDIS_URL", None)
    if redis_url:
        env["GOALHUB_REDIS_URL"] = redis_url
    return Up(
        [str(python), "-m", "goalhub", "up", "--port", str(port), "--workers", "1", "--api-workers", "1", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_healthy(up: Up, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert up.poll() is None, up.output()
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    up.kill()
    pytest.fail(f"goalhub up never became healthy:\n{up.finish()}")


def tree(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(predicate, timeout: float = 30, detail=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out\n{detail()}"
        time.sleep(0.05)


def test_ctrl_c_stops_every_process_including_a_busy_pool_worker_and_the_embedded_redis(tmp_path):
    home, port = tmp_path / "up-home", free_port()
    home.mkdir()
    up = start_up(home, port, "--stop-timeout", "3", "--api-threads", "2")
    try:
        wait_healthy(up, port)
        redis_pid = int((home / "redis.pid").read_text())
        # A job that outlives the grace period: its work-horse must be killed, not left behind.
        client = redis.Redis(unix_socket_path=str(connection.ensure_embedded_redis(home)))
        job = Queue(queue_names()[1], connection=client).enqueue(time.sleep, 120)
        wait_for(lambda: Job.fetch(job.id, connection=client).get_status() == JobStatus.STARTED)
        client.close()  # a client left connected would keep the shared Redis running
        processes = tree(up.pid)
        names = [" ".join(p.cmdline()[2:4]) for p in processes]
        assert {"goalhub serve", "goalhub worker", "goalhub scheduler"} <= set(names), names
        assert names.count("goalhub worker") >= 2  # the pool and its busy worker (forked, same command line)
    finally:
        output = up.stop()

    assert up.returncode == 0, output
    for prefix in ("api       |", "workers   |", "scheduler |", "goalhub   | SIGINT received; stopping everything"):
        assert prefix in output
    assert "goalhub   | embedded Redis stopped" in output
    assert f"goalhub API listening on 127.0.0.1:{port} (1 processes x 2 threads)" in output  # --api-threads
    left = [p for p in processes if not gone(p)]
    assert left == [], [p.cmdline() for p in left]
    assert not psutil.pid_exists(redis_pid) or gone(psutil.Process(redis_pid))


@pytest.mark.parametrize("command", [["serve", "--threads", "0"], ["serve", "--threads", "65"],
                                     ["up", "--api-threads", "0"], ["up", "--api-threads", "65"]])
def test_a_thread_count_out_of_range_is_a_usage_error_before_anything_starts(tmp_path, command):
    result = subprocess.run([sys.executable, "-m", "goalhub", *command], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "GOALHUB_HOME": str(tmp_path)})
    assert result.returncode == 2, result
    assert "is not in the range 1<=x<=64" in result.stderr, result.stderr
    assert not (tmp_path / "redis.pid").exists()


def test_a_child_that_crashes_in_a_loop_stops_everything_and_up_exits_non_zero(tmp_path, redis_url):
    home, port = tmp_path / "up-home", free_port()
    home.mkdir()
    up = start_up(home, port, redis_url=redis_url, env={"GOALHUB_RESTART_LIMIT": "2"})
    try:
        wait_healthy(up, port)
        processes = tree(up.pid)
        for _ in range(2):
            scheduler = wait_for_child(up, "scheduler")
            processes.append(scheduler)
            scheduler.kill()
            wait_for(lambda scheduler=scheduler: gone(scheduler))
        output = up.finish()
    finally:
        if up.poll() is None:
            up.kill()
    assert up.returncode == 1, output
    assert "scheduler exited with code -9; restarting it in 1 s (crash 1 of 2 allowed in 60 s)" in output
    assert "scheduler exited with code -9, its 2th crash within 60 s; stopping everything" in output
    left = [p for p in processes if not gone(p)]
    assert left == [], [p.cmdline() for p in left]
    # A Redis given by URL is not ours to start or stop.
    assert "embedded Redis" not in output
    assert redis.Redis.from_url(redis_url).ping()


def wait_for_child(up: Up, command: str, exclude: set[int] = frozenset()) -> psutil.Process:
    """The running ``goalhub <command>`` child of ``up`` (not one of ``exclude``)."""
    found: list[psutil.Process] = []

    def find() -> bool:
        found.clear()
        for p in psutil.Process(up.pid).children():
            try:
                if p.pid not in exclude and not gone(p) and p.cmdline()[2:4] == ["goalhub", command]:
                    found.append(p)
            except psutil.Error:
                pass  # a child that just died
        return bool(found)

    wait_for(find, timeout=60)
    return found[0]


PLUGINS = "exclusive,show,karaoke,snapshot,analytics,livestream"
STREAMER = "6800a9073e0c346531958b03"


def goal_round_trip(up: Up, base: str, token: str) -> None:
    """A session and a countdown goal over HTTP: created, dispatched (its receivers ok) and
    activated at its nbf by the scheduler and a worker."""
    auth = {"Authorization": f"Bearer {token}"}
    session = requests.post(f"{base}/sessions", json={}, headers=auth, timeout=10)
    assert session.status_code == 201, (session.text, up.output())
    now = time.time()
    body = {"levels": [{"target": 60}], "context": {"session_id": session.json()["_id"]},
            "nbf": round(now + 1, 3), "exp": round(now + 3600, 3)}
    created = requests.post(f"{base}/goals?type=trigger_exclusive", json=body, headers=auth, timeout=10)
    assert created.status_code == 202, (created.text, up.output())
    goal_id = created.json()["goal_id"]
    seen: dict = {}

    def settled() -> bool:
        response = requests.get(f"{base}/goals/{goal_id}", headers=auth, timeout=10)
        if response.status_code != 200 or "active" not in response.json():
            return False
        seen.update(response.json())
        statuses = {o["status"] for o in seen["outcomes"]}
        return seen["active"] is True and bool(statuses) and statuses <= {"ok", "skipped"}

    wait_for(settled, timeout=60, detail=lambda: f"{seen}\n{up.output()}")
    assert seen["activated_at"] >= body["nbf"]


def test_up_restarts_each_crashed_child_and_the_embedded_redis_and_stops_all_it_started(tmp_path, monkeypatch):
    from goalhub.auth import mint_token

    monkeypatch.setenv("GOALHUB_JWT_KEYS", "k1:a-test-signing-key-of-enough-length-1234567890")
    home, port = tmp_path / "up-home", free_port()
    home.mkdir()
    up = start_up(home, port, env={"GOALHUB_LOAD_PLUGINS": PLUGINS, "GOALHUB_HOME": str(home)})
    base = f"http://127.0.0.1:{port}"
    redis_pids: set[int] = set()
    killed: list[psutil.Process] = []
    try:
        wait_healthy(up, port)
        token = mint_token(STREAMER, ["CREATOR"])
        goal_round_trip(up, base, token)
        for command in ("worker", "scheduler", "serve"):
            child = wait_for_child(up, command)
            child.kill()
            killed.append(child)
            wait_for(lambda child=child: gone(child))
            wait_for_child(up, command, exclude={child.pid})
            wait_healthy(up, port)
            goal_round_trip(up, base, token)
        redis_pid = connection.embedded_redis_pid(home)
        redis_pids.add(redis_pid)
        os.kill(redis_pid, signal.SIGKILL)
        # Its watch asks about once a second: a killed server is back within seconds (each
        # question to the dead one once took 5 s of redis-py's retries, the restart 17 s).
        wait_for(lambda: connection.embedded_redis_pid(home) not in (None, redis_pid), timeout=5)
        redis_pids.add(connection.embedded_redis_pid(home))
        wait_healthy(up, port)
        goal_round_trip(up, base, token)
        processes = tree(up.pid)
    finally:
        output = up.stop()
    assert up.returncode == 0, output
    for command in ("workers", "scheduler", "api"):
        assert f"{command} exited with code -9; restarting it in 1 s" in output, output
        assert f"restarted {command} (pid" in output
    # The watch started the killed Redis again (nothing else in `up` starts it), and said so
    # with the new server's pid; at the end, every server of the run was stopped.
    restarted = sorted(redis_pids - {redis_pid})
    assert f"embedded Redis was not answering; started it again (pid {restarted[0]})" in output, output
    assert "embedded Redis stopped" in output
    left = [p for p in processes + killed if not gone(p)]
    assert left == [], [p.cmdline() for p in left]
    for pid in redis_pids:
        assert not psutil.pid_exists(pid) or gone(psutil.Process(pid)), pid


def test_sigterm_stops_up_like_ctrl_c(tmp_path, redis_url):
    home, port = tmp_path / "up-home", free_port()
    home.mkdir()
    up = start_up(home, port, redis_url=redis_url)
    try:
        wait_healthy(up, port)
        processes = tree(up.pid)
    finally:
        output = up.stop(signal.SIGTERM)
    assert up.returncode == 0, output
    assert "SIGTERM received; stopping everything" in output
    assert [p for p in processes if not gone(p)] == []


PROBE_PLUGIN = {
    # A receiver, and a goal type the API does not know until the reload.
    "gh_reload_probe.py": '''import goalhub


@goalhub.receiver("goal.created")
def probe(goal_id):
    return {"probed": goal_id}


def prepare(req):
    session_id = goalhub.object_id(goalhub.required(req.body, "session_id"), "session_id")
    return goalhub.GoalDraft(cls="ReloadProbeGoal", active=True, conditions={"session_id": session_id},
                             levels=[{"target": 1}], nbf=None, exp=None,
                             context={"type": "reload_probe", "session_id": session_id},
                             metadata={"user_id": req.user_id})


@goalhub.hookimpl
def goal_types():
    return [goalhub.GoalType("reload_probe", "ReloadProbeGoal", prepare, activate_at_nbf=False, end_at_exp=False)]
''',
    "setup.cfg": (
        "[metadata]\nname = goalhub-reload-probe\nversion = 1.0.0\n\n"
        "[options]\npy_modules = gh_reload_probe\n\n"
        "[options.entry_points]\ngoalhub =\n    reload_probe = gh_reload_probe\n"
    ),
    "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\nbuild-backend = "setuptools.build_meta"\n',
}


def test_a_plugin_installed_into_a_running_up_serves_after_goalhub_reload_without_a_failed_request(tmp_path, monkeypatch):
    """Install a plugin editable (``pip install -e``, what ``goalhub new-plugin`` suggests) into
    the venv of a running ``goalhub up``; every process says its plugins differ from those
    installed, and its goal type is unknown to every API process;
    ``goalhub reload`` restarts API processes, worker and scheduler one at a time while a
    client keeps calling: no request fails, nothing counts as a crash, the next goal reaches
    the new receiver, and a goal of the new type is accepted and created by a worker."""
    from goalhub.auth import mint_token

    monkeypatch.setenv("GOALHUB_JWT_KEYS", "k1:a-test-signing-key-of-enough-length-1234567890")
    home, port, python = tmp_path / "up-home", free_port(), private_venv(tmp_path)
    home.mkdir()
    source = tmp_path / "probe-src"
    source.mkdir()
    for name, text in PROBE_PLUGIN.items():
        (source / name).write_text(text)
    env = {"GOALHUB_LOAD_PLUGINS": PLUGINS + ",reload_probe",
           "GOALHUB_LIVE_INTERVAL": "0.3", "GOALHUB_RATE_LIMIT_GOALS": "off"}
    up = start_up(home, port, "--api-workers", "2", env=env, python=python)
    base = f"http://127.0.0.1:{port}"
    cli_env = {**os.environ, "GOALHUB_HOME": str(home), **env}
    cli_env.pop("GOALHUB_REDIS_URL", None)
    calls: list[int | str] = []
    calling = threading.Event()

    def keep_calling() -> None:
        while not calling.is_set():
            try:
                calls.append(requests.get(f"{base}/readyz", timeout=30).status_code)
            except requests.RequestException as exc:
                calls.append(repr(exc))

    try:
        wait_healthy(up, port)
        token = mint_token(STREAMER, ["CREATOR"])
        wait_for(lambda: requests.get(f"{base}/readyz", timeout=5).json()["status"] == "ready", timeout=60)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                        "--disable-pip-version-check", "--no-deps", "--no-build-isolation", "-e", str(source)],
                       check=True, capture_output=True, timeout=300)
        # Every process notices: /readyz is degraded, `goalhub plugins` names each process.
        wait_for(lambda: requests.get(f"{base}/readyz", timeout=5).json().get("reload_needed") == 4, timeout=60)
        listed = subprocess.run([str(python), "-m", "goalhub", "plugins"], env=cli_env,
                                capture_output=True, text=True, timeout=60)
        assert listed.stdout.count("installed since: reload_probe goalhub-reload-probe 1.0.0") == 4, listed.stdout
        auth = {"Authorization": f"Bearer {token}"}
        session_id = _session(base, token)
        for _ in range(4):  # both API processes (each connection may land on either)
            unknown = requests.post(f"{base}/goals?type=reload_probe", json={"session_id": session_id},
                                    headers={**auth, "Connection": "close"}, timeout=10)
            assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "unknown_goal_type", unknown.text
        caller = threading.Thread(target=keep_calling)
        caller.start()
        try:
            reloaded = subprocess.run([str(python), "-m", "goalhub", "reload", "--timeout", "120"],
                                      env=cli_env, capture_output=True, text=True, timeout=180)
        finally:
            calling.set()
            caller.join()
        if reloaded.returncode != 0:
            pytest.fail(reloaded.stdout + reloaded.stderr + up.stop())
        assert "live view: ready" in reloaded.stdout, reloaded.stdout
        print(f"{len(calls)} requests during the reload, {sum(c != 200 for c in calls)} failed")
        assert calls and all(code == 200 for code in calls), ([c for c in calls if c != 200][:5], up.output())
        goal_id = _create_goal(base, token)

        def probed(goal_id: str) -> bool:
            outcomes = requests.get(f"{base}/goals/{goal_id}", headers=auth, timeout=10).json().get("outcomes", [])
            return any(o.get("plugin") == "reload_probe" and o.get("status") == "ok" for o in outcomes)

        wait_for(lambda: probed(goal_id), timeout=60)
        # The new goal type, on every API process now, and created by a worker.
        new_type = []
        for _ in range(4):
            accepted = requests.post(f"{base}/goals?type=reload_probe", json={"session_id": session_id},
                                     headers={**auth, "Connection": "close"}, timeout=10)
            assert accepted.status_code == 202, accepted.text
            new_type.append(accepted.json()["goal_id"])
        for new_goal in new_type:
            wait_for(lambda new_goal=new_goal: probed(new_goal), timeout=60)
            shown = requests.get(f"{base}/goals/{new_goal}", headers=auth, timeout=10).json()
            assert shown["_cls"] == "ReloadProbeGoal" and "created_at" in shown, shown  # stored by create_goal
    finally:
        output = up.stop()
    assert up.returncode == 0, output
    assert "reload done in" in output, output
    for name in ("workers", "scheduler"):  # the workers: one pool (up's default)
        assert f"reloaded {name} (pid" in output, output
    # Not a crash: no exit reported as one, nothing restarted, the crash count untouched.
    assert "exited with code" not in output and "restarted " not in output and "crash" not in output, output
    # Each API process the reload replaced drained (the final stop drains the new ones again).
    before = output[:output.index("reload done in")]
    assert before.count("draining for a reload: accepting no more") == 2, output
    assert "/readyz answers 503" not in before, output  # a reload does not take the machine out of rotation


def _session(base: str, token: str) -> str:
    session = requests.post(f"{base}/sessions", json={}, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert session.status_code == 201, session.text
    return session.json()["_id"]


def _create_goal(base: str, token: str) -> str:
    auth = {"Authorization": f"Bearer {token}"}
    body = {"levels": [{"target": 60}], "context": {"session_id": _session(base, token)},
            "nbf": round(time.time() + 3600, 3), "exp": round(time.time() + 7200, 3)}
    created = requests.post(f"{base}/goals?type=trigger_exclusive", json=body, headers=auth, timeout=10)
    assert created.status_code == 202, created.text
    return created.json()["goal_id"]
