"""Every short CLI command stops the embedded Redis it started (issue 22): run on a fresh
home, none leaves a redis-server behind; a server that was running before is left running."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

from goalhub import connection

COMMANDS = [["plugins", "--check"], ["hooks"], ["outcomes"], ["breakers"], ["config"], ["retry", "--all-failed"],
            ["outbound"], ["outbound", "--kinds"], ["goals", "list"], ["purge", "--dry-run"]]


def redis_servers(home) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["name", "cmdline", "cwd"]):
        try:
            if process.info["name"] == "redis-server" and str(home) in " ".join(
                    [*(process.info["cmdline"] or []), process.info["cwd"] or ""]):
                found.append(process)
        except psutil.Error:
            pass
    return found


def run(home, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GOALHUB_HOME": str(home)}
    env.pop("GOALHUB_REDIS_URL", None)
    return subprocess.run([sys.executable, "-m", "goalhub", *args], env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_short_command_on_a_fresh_home_leaves_no_server(tmp_path, command):
    home = tmp_path / "home"
    done = run(home, *command)
    assert "Traceback" not in done.stderr, done.stderr
    assert redis_servers(home) == [], (command, done.stdout, done.stderr)


def test_a_server_that_was_running_is_left_running(tmp_path):
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    connection.ensure_embedded_redis(home)
    try:
        run(home, "outcomes")
        assert connection.embedded_redis_running(home)
    finally:
        connection.stop_embedded_redis(home)
