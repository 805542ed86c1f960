"""Configuration: parsed in one place; a bad value is one line naming it; ``goalhub config``."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from goalhub import config


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "goalhub", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


BAD_VALUES = [
    ("GOALHUB_JOB_TIMEOUT", "abc", "a whole number of seconds >= 1"),
    ("GOALHUB_RECEIVER_BACKOFF", "1,x,3", "comma-separated whole seconds"),
    ("GOALHUB_SCHEDULER_INTERVAL", "-1", "seconds > 0"),
    ("GOALHUB_LOG_FORMAT", "xml", "json or console"),
    ("GOALHUB_REDIS_URL", "localhost:6379", "a redis://, rediss:// or unix:// URL"),
]


def assert_one_line(result: subprocess.CompletedProcess[str], variable: str, value: str, allowed: str) -> None:
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # no traceback
    assert variable in lines[0] and repr(value) in lines[0] and allowed in lines[0], lines[0]


@pytest.mark.parametrize(("variable", "value", "allowed"), BAD_VALUES)
def test_a_bad_value_is_one_line_naming_the_variable_the_value_and_what_is_allowed(variable, value, allowed):
    assert_one_line(run_cli("config", **{variable: value}), variable, value, allowed)


@pytest.mark.parametrize("command", [["worker", "--burst"], ["scheduler", "--burst"], ["serve", "--port", "1"]])
def test_every_process_refuses_a_bad_value_in_one_line(command):
    """The long-running processes read their settings through their own start-up path (logs
    configured first): each says what is wrong in one line, whatever the variable (one value
    each here; every value's message is checked through ``goalhub config`` above)."""
    for variable, value, allowed in (BAD_VALUES[0], BAD_VALUES[3]):  # a value, and the log format itself
        assert_one_line(run_cli(*command, **{variable: value}), variable, value, allowed)


def test_accessors_read_the_environment_as_it_is_now(monkeypatch):
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "7")
    assert config.settings().JOB_TIMEOUT == 7
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "8")
    assert config.settings().JOB_TIMEOUT == 8
    monkeypatch.setenv("GOALHUB_RECEIVER_BACKOFF", "2, 4")
    assert list(config.settings().RECEIVER_BACKOFF) == [2, 4]
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "")  # empty is unset: the default
    assert config.settings().JOB_TIMEOUT == 60
    monkeypatch.setenv("GOALHUB_JOB_TIMEOUT", "0")
    with pytest.raises(config.ConfigError, match="GOALHUB_JOB_TIMEOUT='0'"):
        config.settings()


def test_goalhub_config_prints_the_effective_configuration_with_secrets_masked():
    secrets = {"GOALHUB_DASHBOARD_PASSWORD": "hunter2-dashboard", "GOALHUB_JWT_KEYS": '{"k1": "jwt-secret-value"}',
               "GOALHUB_MONGO_URI": "mongodb://app:mongo-pass@db.example:27017/goalhub"}
    result = run_cli("config", "--json", GOALHUB_JOB_TIMEOUT="42", **secrets)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["GOALHUB_JOB_TIMEOUT"] == 42
    assert shown["GOALHUB_DASHBOARD_PASSWORD"] == "***"
    assert shown["GOALHUB_MONGO_URI"] == "mongodb://app:***@db.example:27017/goalhub"
    for secret in ("hunter2-dashboard", "jwt-secret-value", "mongo-pass"):
        assert secret not in result.stdout
    table = run_cli("config", **secrets)
    assert table.returncode == 0 and "GOALHUB_JOB_TIMEOUT" in table.stdout and "hunter2" not in table.stdout


def test_home_is_private(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    monkeypatch.setenv("GOALHUB_HOME", str(fresh))
    assert stat.S_IMODE(config.home().stat().st_mode) == 0o700
    old = tmp_path / "old"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)
    monkeypatch.setenv("GOALHUB_HOME", str(old))
    assert stat.S_IMODE(config.home().stat().st_mode) == 0o700



@pytest.mark.parametrize(("variable", "text", "expected"), [
    ("GOALHUB_STRICT_PLUGINS", "yes", True), ("GOALHUB_STRICT_PLUGINS", "Off", False),
    ("GOALHUB_STRICT_PLUGINS", "1", True), ("GOALHUB_JOB_TIMEOUT", " 42 ", 42),
    ("GOALHUB_SCHEDULER_INTERVAL", "1e-2", 0.01), ("GOALHUB_RECEIVER_BACKOFF", " 2 , 4,", [2, 4]),
    ("GOALHUB_DISABLED_PLUGINS", "a, b", ["a", "b"]), ("GOALHUB_LOG_LEVEL", "DEBUG", "DEBUG"),
    ("GOALHUB_METRICS_DIR", "/tmp/m", config.Path("/tmp/m")), ("GOALHUB_TRUSTED_PROXY_HEADER", "X-Real-IP", "X-Real-IP"),
])
def test_each_type_parses_what_its_allowed_text_says(monkeypatch, variable, text, expected):
    monkeypatch.setenv(variable, text)
    assert getattr(config.settings(), variable.removeprefix(config.PREFIX)) == expected


@pytest.mark.parametrize(("variable", "text"), [
    ("GOALHUB_STRICT_PLUGINS", "maybe"), ("GOALHUB_JOB_TIMEOUT", "1.5"), ("GOALHUB_JOB_TIMEOUT", "1e3"),
    ("GOALHUB_JOB_TIMEOUT", "9" * 40), ("GOALHUB_BREAKER_WINDOW", "inf"), ("GOALHUB_BREAKER_WINDOW", "nan"),
    ("GOALHUB_SCHEDULER_INTERVAL", "0"), ("GOALHUB_SCHEDULER_INTERVAL", "3601"), ("GOALHUB_RECEIVER_BACKOFF", ","),
    ("GOALHUB_RECEIVER_BACKOFF", "1,-1"), ("GOALHUB_LOG_LEVEL", "debug"), ("GOALHUB_MONGO_DB", "a b"),
    ("GOALHUB_RATE_LIMIT_GOALS", "5/fortnight"), ("GOALHUB_TRUSTED_PROXY_HEADER", "X-Forwarded-For: 1"),
])
def test_a_value_outside_what_is_allowed_is_refused_naming_it(monkeypatch, variable, text):
    monkeypatch.setenv(variable, text)
    with pytest.raises(config.ConfigError, match=f"^{variable}="):
        config.settings()


def test_a_refused_secret_is_masked_in_its_error_and_load_plugins_empty_loads_none(monkeypatch):
    monkeypatch.setenv("GOALHUB_METRICS_TOKEN", "short-secret")  # fewer than 32 characters
    with pytest.raises(config.ConfigError) as refused:
        config.settings()
    assert "short-secret" not in str(refused.value) and "GOALHUB_METRICS_TOKEN='***'" in str(refused.value)
    monkeypatch.delenv("GOALHUB_METRICS_TOKEN")
    monkeypatch.setenv("GOALHUB_LOAD_PLUGINS", "")
    assert config.load_plugins() == set()
    monkeypatch.delenv("GOALHUB_LOAD_PLUGINS")
    assert config.load_plugins() is None
