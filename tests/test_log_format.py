"""What a log line looks like (issue 22 row 8, issue 24 item 8): RFC 3339 UTC times in every
format, no forged line in any format, a crash at start as one JSON record, and the client's
address and user on every request line."""

from __future__ import annotations

import io
import json
import logging
import logging.config
import re
import signal
import socket
import subprocess
import sys
import time

import api_support
import pytest
from rq.exceptions import StopRequested
from rq.timeouts import JobTimeoutException

from goalhub import logs
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.budget import ReceiverTimeout

STREAMER = "6800a9073e0c346531958b03"
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
FORGED = "\n2026-12-02T17:13:22.223Z WARNING api goalhub: [forged]\r\x1b[2K"


@pytest.fixture
def captured():
    """Records of the request logger, as each format writes them."""
    streams = {fmt: io.StringIO() for fmt in ("json", "console")}
    handlers = []
    for fmt, stream in streams.items():
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logs.formatter(fmt))
        handler.addFilter(logs.ContextFilter())
        handlers.append(handler)
    logger = logging.getLogger("goalhub")
    level = logger.level
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    yield streams
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def emit(message: str, *args: object, **extra: object) -> None:
    logging.getLogger("goalhub.test").warning(message, *args, extra=extra)


def test_times_are_rfc3339_utc_in_every_format(captured):
    emit("hello")
    line = json.loads(captured["json"].getvalue())
    assert RFC3339_UTC.match(line["time"]), line["time"]
    assert RFC3339_UTC.match(captured["console"].getvalue().split(" ", 1)[0])


def test_control_characters_cannot_forge_a_line_in_any_format(captured):
    emit("GET %s 404", f"/healthz{FORGED}")
    try:
        raise ValueError(f"bad{FORGED}")
    except ValueError:
        logging.getLogger("goalhub.test").exception("failed %s", FORGED)
    console = captured["console"].getvalue()
    records = [line for line in console.splitlines() if not line.startswith("    ")]
    assert len(records) == 2, console  # the traceback's lines are indented, never a record of their own
    assert "\x1b" not in console and "\r" not in console
    assert "\\n2026-12-02T17:13:22.223Z WARNING" in records[0]
    json_lines = captured["json"].getvalue().splitlines()
    assert len(json_lines) == 2 and all(json.loads(line) for line in json_lines)


def test_request_lines_name_the_client_and_the_user(captured, monkeypatch):
    client = create_app().test_client()
    auth = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR'])}"}
    client.get("/goals/6800a9073e0c346531958bff", headers={**auth, "X-Forwarded-For": "203.0.113.7"},
               environ_base={"REMOTE_ADDR": "10.0.0.2"})
    # Off by default: a header a client can send itself names no one.
    line = json.loads(captured["json"].getvalue().splitlines()[-1])
    assert (line["client"], line["user"]) == ("10.0.0.2", STREAMER)
    assert f"client=10.0.0.2 user={STREAMER}" in captured["console"].getvalue()

    monkeypatch.setenv("GOALHUB_TRUSTED_PROXY_HEADER", "X-Forwarded-For")
    client.get("/healthz", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7"},
               environ_base={"REMOTE_ADDR": "10.0.0.2"})
    line = json.loads(captured["json"].getvalue().splitlines()[-1])
    assert (line["client"], line["user"]) == ("203.0.113.7", "-")  # the address the proxy appended
    client.get("/healthz", headers={"X-Forwarded-For": "not an address"}, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert json.loads(captured["json"].getvalue().splitlines()[-1])["client"] == "10.0.0.2"


def test_a_bad_trusted_proxy_header_setting_is_refused(monkeypatch):
    from goalhub import config

    monkeypatch.setenv("GOALHUB_TRUSTED_PROXY_HEADER", "X-Forwarded-For: 1.2.3.4")
    with pytest.raises(config.ConfigError, match="GOALHUB_TRUSTED_PROXY_HEADER"):
        config.settings()


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "goalhub", *args], env=api_support.process_env(**env),
                          capture_output=True, text=True, timeout=60)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
def test_a_bad_setting_at_start_is_one_json_record(command):
    done = run_cli(command, GOALHUB_LOG_FORMAT="json", GOALHUB_JOB_TIMEOUT="soon")
    assert done.returncode == 1
    (record,) = json_lines(done.stdout + done.stderr)  # every line is JSON
    assert record["level"] == "CRITICAL" and "GOALHUB_JOB_TIMEOUT" in record["message"]
    assert RFC3339_UTC.match(record["time"])


def test_an_address_in_use_at_start_is_one_json_record():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_cli("serve", "--port", str(taken.getsockname()[1]), "--workers", "1", GOALHUB_LOG_FORMAT="json")
    assert done.returncode == 1
    records = json_lines(done.stdout + done.stderr)  # every line is JSON
    assert records[-1]["level"] == "CRITICAL" and "in use" in records[-1]["message"]


def test_an_uncaught_exception_is_a_json_record_with_its_traceback_redacted():
    code = ("from goalhub import logs; logs.configure('worker'); "
            "raise RuntimeError('cannot reach billing at https://svc:Pa55word@billing?api_key=k123')")
    done = subprocess.run([sys.executable, "-c", code], env=api_support.process_env(GOALHUB_LOG_FORMAT="json"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    (record,) = json_lines(done.stdout + done.stderr)  # the whole traceback is in one JSON record
    assert record["level"] == "CRITICAL" and "Traceback" in record["exc_info"]
    assert "RuntimeError" in record["exc_info"] and "Pa55word" not in record["exc_info"]


def test_a_broken_plugin_in_strict_mode_is_json_records_with_its_reason_redacted(tmp_path):
    (tmp_path / "boom_plugin.py").write_text(
        "raise RuntimeError('cannot reach billing at https://svc:Pa55word@billing?api_key=k123')\n")
    done = run_cli("worker", "--burst", GOALHUB_LOG_FORMAT="json", GOALHUB_PLUGINS="boom_plugin",
                   GOALHUB_STRICT_PLUGINS="1", PYTHONPATH=f"{tmp_path}:{api_support.ROOT}")
    assert done.returncode == 1
    records = json_lines(done.stdout + done.stderr)  # every line is JSON
    assert records[-1]["level"] == "CRITICAL" and "boom_plugin" in records[-1]["message"]
    assert "Pa55word" not in done.stdout + done.stderr and "k123" not in done.stdout + done.stderr


def test_a_request_path_cannot_forge_a_console_line(captured):
    create_app().test_client().get("/healthz%0a2026-12-02T17:13:22.223Z%20WARNING%20api%20goalhub:%20[forged]")
    console = captured["console"].getvalue()
    assert len(console.splitlines()) == 1, console
    assert "/healthz\\n2026-12-02T17:13:22.223Z WARNING" in console


class _SlowStream(io.StringIO):
    """A stderr that takes a while to write (a full pipe): the alarm fires inside ``write``."""

    def write(self, text: str) -> int:
        time.sleep(0.5)
        return super().write(text)


class _BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("the pipe is gone")


def _worker_logger(stream: io.StringIO) -> logging.Logger:
    """A logger with the handler and filter a goalhub process's configuration gives its root."""
    config = logs.dict_config("worker", "console")["handlers"]["stderr"]
    handler_class = logging.config.BaseConfigurator({}).resolve(config["class"])
    handler = handler_class(stream)
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger(f"goalhub.test.stops.{id(stream)}")
    logger.handlers, logger.propagate = [handler], False
    return logger


@pytest.mark.parametrize("stop", [JobTimeoutException, ReceiverTimeout, StopRequested])
def test_a_stop_that_a_signal_raises_while_a_line_is_written_is_not_swallowed(stop):
    # RQ's job timeout and a receiver's budget arrive by SIGALRM, RQ's stop by SIGTERM; each
    # raises in whatever runs then. logging used to print one raised in a write and go on: the
    # job ran past its timeout, the worker never stopped.
    logger = _worker_logger(_SlowStream())

    def fire(*_: object) -> None:
        raise stop("stop now")

    previous = signal.signal(signal.SIGALRM, fire)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(stop):
            logger.warning("a line written while the alarm fires")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_any_other_error_in_a_write_is_still_reported_and_the_process_goes_on(capsys):
    _worker_logger(_BrokenStream()).warning("a line to a pipe that is gone")
    assert "the pipe is gone" in capsys.readouterr().err  # logging's own report, then on


@pytest.mark.parametrize("stop", [JobTimeoutException, StopRequested])
def test_a_stop_that_lands_while_a_metric_is_recorded_is_not_taken_for_a_metric_failure(stop, monkeypatch, caplog):
    from goalhub import metrics

    class Landing:
        def inc(self, value: float) -> None:
            raise stop("the signal landed here")

    monkeypatch.setitem(metrics._children, ("goals", ("goal_type", "stopped")), Landing())
    with pytest.raises(stop):
        metrics.goal_created("stopped")

    class Broken:
        def inc(self, value: float) -> None:
            raise ValueError("a metric that cannot be recorded")

    monkeypatch.setitem(metrics._children, ("goals", ("goal_type", "broken")), Broken())
    with caplog.at_level(logging.ERROR, logger="goalhub.metrics"):
        metrics.goal_created("broken")  # any other failure is logged, and the job goes on
    assert "could not record metric goals" in caplog.text
