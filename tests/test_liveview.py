"""The live view of plugin health (``goalhub.liveview``) through real parts: real worker
processes reporting to the real embedded Redis, the API app's ``/readyz`` and
``/admin/receivers``, ``goalhub plugins`` and the circuit breaker's state in Redis.
A problem only a worker has, or a tripped breaker, makes the view degraded; the fix clears it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import goalhub
from goalhub import breaker, liveview
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.cli import main

pytestmark = pytest.mark.e2e

ADMIN_USER = "6800a9073e0c346531958b03"


@pytest.fixture
def live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOALHUB_LIVE_INTERVAL", "0.2")
    monkeypatch.setenv("GOALHUB_JWT_KEYS", "k1:a-test-signing-key-of-enough-length-1234567890")


def start_worker(tmp_path: Path, *plugin_modules: str) -> subprocess.Popen:
    """A real ``goalhub worker`` process; ``plugin_modules`` load in it alone (GOALHUB_PLUGINS)."""
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "GOALHUB_PLUGINS": ",".join(plugin_modules)}
    return subprocess.Popen([sys.executable, "-m", "goalhub", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def reporting(process: subprocess.Popen) -> bool:
    assert process.poll() is None, process.stderr.read() if process.stderr else ""
    return any(e["pid"] == process.pid and not e["stale"] for e in liveview.processes())


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> None:
    process.send_signal(signum)
    process.wait(timeout=60)


def readyz(client, admin: bool = False) -> dict:
    headers = {"Authorization": "Bearer " + mint_token(ADMIN_USER, ["ADMIN"])} if admin else {}
    response = client.get("/readyz", headers=headers)
    assert response.status_code == 200
    return response.get_json()


def plugins_output() -> str:
    result = CliRunner().invoke(main, ["plugins"], catch_exceptions=False)
    return result.output


def test_a_plugin_broken_only_in_a_worker_makes_the_view_degraded_until_the_worker_runs_fixed(tmp_path, live):
    (tmp_path / "lv_feed.py").write_text("raise ImportError('No module named feedkit')\n")
    client = create_app().test_client()
    assert readyz(client)["status"] == "ready"  # the API process itself loads it fine: it has no such plugin

    worker = start_worker(tmp_path, "lv_feed")
    try:
        wait_for(lambda: reporting(worker))
        public = readyz(client)
        assert public["status"] == "degraded" and public["plugins"] == ["lv_feed"]
        assert "feedkit" not in json.dumps(public)  # reasons need an ADMIN token
        problems = readyz(client, admin=True)["problems"]
        assert problems == [{"plugin": "lv_feed", "reason": "failed to load: ImportError: No module named feedkit",
                             "processes": [liveview.process_id("worker", worker.pid)]}]
        listed = plugins_output()
        assert "live view: degraded" in listed
        assert "lv_feed: failed to load: ImportError: No module named feedkit  [worker@" in listed
        admin = client.get("/admin/receivers",
                           headers={"Authorization": "Bearer " + mint_token(ADMIN_USER, ["ADMIN"])}).get_json()
        assert admin["live"]["status"] == "degraded" and admin["live"]["problems"][0]["plugin"] == "lv_feed"
    finally:
        stop(worker)
    # The fix: the worker runs again without the broken plugin. The stopped one withdrew its report.
    (tmp_path / "lv_feed.py").write_text("import goalhub\n")
    fixed = start_worker(tmp_path, "lv_feed")
    try:
        wait_for(lambda: reporting(fixed))
        assert readyz(client) == {"status": "ready", "store": "ok", "redis": "ok"}
        assert "live view: ready; 1 api, 1 worker, 0 scheduler process(es) reporting" in plugins_output()
    finally:
        stop(fixed)


class SnapshotReceivers:
    @goalhub.receiver("goal.created")
    def pause(self, goal_id):
        return goal_id


def test_a_tripped_breaker_is_degraded_until_resumed(live, monkeypatch, inline_plugin):
    monkeypatch.setenv("GOALHUB_BREAKER_THRESHOLD", "2")
    inline_plugin(SnapshotReceivers(), "lv_snap")
    client = create_app().test_client()
    for event_id in ("e1", "e2"):
        breaker.record_failure("lv_snap.pause", event_id, "ConnectionError: snapshots down")
    public = readyz(client)
    assert public["status"] == "degraded" and public["plugins"] == ["lv_snap"]
    reasons = [p["reason"] for p in readyz(client, admin=True)["problems"]]
    assert reasons == ["receiver lv_snap.pause is paused by its circuit breaker after 2 failed events: "
                       "ConnectionError: snapshots down"]
    assert "lv_snap: receiver lv_snap.pause is paused by its circuit breaker" in plugins_output()
    assert CliRunner().invoke(main, ["resume", "lv_snap.pause"]).exit_code == 0
    assert readyz(client)["status"] == "ready"
    assert "live view: ready" in plugins_output()


class TypoReceivers:
    @goalhub.receiver("goal.created", "KaraokeGaol")
    def sing(self, goal_id):
        return goal_id


def test_a_receiver_for_a_class_no_goal_type_creates_is_degraded_and_fails_check(live, inline_plugin):
    inline_plugin(TypoReceivers(), "lv_typo")
    client = create_app().test_client()
    assert readyz(client)["plugins"] == ["lv_typo"]
    reasons = [p["reason"] for p in readyz(client, admin=True)["problems"]]
    assert reasons == ["lv_typo.sing names goal class 'KaraokeGaol', which no installed goal type creates"]
    checked = CliRunner().invoke(main, ["plugins", "--check"])
    assert checked.exit_code == 1
    assert "broken plugin lv_typo: lv_typo.sing names goal class 'KaraokeGaol'" in checked.output


def test_a_process_that_stopped_reporting_shows_stale_not_healthy(tmp_path, live, monkeypatch):
    monkeypatch.setenv("GOALHUB_LIVE_STALE_AFTER", "1")
    worker = start_worker(tmp_path)
    try:
        wait_for(lambda: reporting(worker))
    finally:
        stop(worker, signal.SIGKILL)  # no goodbye: its last report stays
    wait_for(lambda: any(e["pid"] == worker.pid and e["stale"] for e in liveview.processes()))
    view = liveview.health()
    assert view["status"] == "degraded" and view["stale"] == [liveview.process_id("worker", worker.pid)]
    assert readyz(create_app().test_client())["stale_processes"] == 1
    assert "stale (no report for over 1 s): worker@" in plugins_output()
