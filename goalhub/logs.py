"""Structured logs and the request id that follows one goal through every process.

The API takes a request's id from its ``x-request-id`` header (or makes one) and answers
with it. ``goalhub.queues.enqueue_once`` and the lifecycle jobs put it in the RQ job's
``meta``; a job that enqueues more jobs (``create_goal`` -> receivers) passes it on, and
dispatch writes it on every outcome record. Every log line a goalhub process writes
carries it, so ``grep <request-id>`` over the API's and workers' logs and the outcome
records follows one goal from its request to each receiver's outcome.

Logs are JSON, one object a line (python-json-logger), from every process: API (waitress
too), workers and their work-horses, scheduler; a crash at start (a bad setting, an address
in use, an uncaught exception) is one JSON line too. ``GOALHUB_LOG_FORMAT=console`` gives
human-readable lines instead; ``goalhub up`` uses it unless told otherwise.

In every format (issue 22): timestamps are RFC 3339 in UTC (``2026-12-02T17:13:22.223Z``);
every record of every logger (goalhub's, RQ's, urllib3's...) is redacted by the formatter
(``goalhub.redaction.redact`` over its message, arguments, exception text, stack and extra
fields), so no secret a sink URL or an exception carries reaches a log file; and no record
can forge another line: JSON escapes control characters, the console format escapes them in
the message and indents every line of a traceback.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from goalhub import config, tracing
from goalhub.redaction import redact
from goalhub.schema import PAYLOAD_VERSION

REQUEST_ID_HEADER = "X-Request-Id"
MAX_REQUEST_ID = 128
CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(role)s %(name)s: %(message)s"
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(role)s %(process)d %(request_id)s %(job_id)s"

# For work outside a request or a job (the reconciler, a CLI command): set by ``bind``.
_bound: ContextVar[str | None] = ContextVar("goalhub_request_id", default=None)
_role = "goalhub"


def current_request_id() -> str | None:
    """The request id of the work in hand (the HTTP request, or the job's ``meta``), if any.
    Dispatch stores it on every outcome record as ``request_id``."""
    flask = sys.modules.get("flask")  # no request context without Flask loaded
    if flask is not None and flask.has_request_context():
        return flask.g.get("request_id")
    job = _current_job()
    if job is not None:
        request_id = (job.meta or {}).get("request_id")
        if request_id:
            return str(request_id)
    return _bound.get()


def _raise_if_stop(exc: BaseException) -> None:
    """``goalhub.budget.raise_if_stop``, imported only when an exception gets here: it imports
    RQ, which ``goalhub --help`` would otherwise load for nothing (about 0.1 s)."""
    from goalhub.budget import raise_if_stop as check  # deferred: it imports RQ (see above)

    check(exc)


def _current_job() -> Any:
    # Deferred: RQ is heavy, and the CLI's and the API's logs need it only inside a job.
    from rq import get_current_job

    try:
        return get_current_job()
    except Exception as exc:  # no Redis connection in this context: no job either
        _raise_if_stop(exc)
        return None


class StderrHandler(logging.StreamHandler):
    """``logging.StreamHandler`` on stderr, except that a stop raised by a signal handler while a
    record is being written goes on (``goalhub.budget.raise_if_stop``): ``logging`` prints any
    exception raised in a write and carries on, so a job whose timeout fired in a log write ran
    on past it (until a pool killed its worker, with whatever else it held,
    ``goalhub.pool.STUCK_GRACE`` seconds later), a receiver past its budget, and a worker asked
    to stop in one never stopped. Any other error in a write is printed and swallowed, as ever."""

    def handleError(self, record: logging.LogRecord) -> None:
        exc = sys.exc_info()[1]
        if exc is not None:
            _raise_if_stop(exc)
        super().handleError(record)


def bind(request_id: str | None) -> Any:
    """Make ``request_id`` current outside a request or job; returns the token to ``reset``."""
    return _bound.set(request_id)


def reset(token: Any) -> None:
    _bound.reset(token)


def new_request_id(given: str | None = None) -> str:
    """``given`` (a client's ``x-request-id``) if it is a sane one, else a new random id."""
    if given:
        given = given.strip()
        if 0 < len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
            return given
    return uuid.uuid4().hex


def job_meta(meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """RQ job ``meta`` carrying the current request id (for jobs enqueued while handling it), the
    version of the job's payload (``goalhub.schema.PAYLOAD_VERSION``: a worker refuses newer) and,
    when tracing, the current span's W3C trace context (``goalhub.tracing.FIELD``: the job's span
    is its child)."""
    meta = {"payload_version": PAYLOAD_VERSION, **(meta or {})}
    request_id = current_request_id()
    if request_id and "request_id" not in meta:
        meta["request_id"] = request_id
    if tracing.FIELD not in meta:
        meta.update(tracing.stamp())
    return meta


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``job_id`` and the process ``role`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            try:
                record.request_id = current_request_id() or "-"
            except Exception as exc:
                _raise_if_stop(exc)
                record.request_id = "-"
        if not getattr(record, "job_id", None):
            job = None
            try:
                job = _current_job()
            except Exception as exc:
                _raise_if_stop(exc)
            record.job_id = job.id if job is not None else None
        record.role = _role
        return True


def rfc3339(created: float) -> str:
    """A record's time, RFC 3339 in UTC with milliseconds: ``2026-12-02T17:13:22.223Z``."""
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# C0 and C1 control characters and DEL: a CR or LF in a request path must not start a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_controls(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: repr(m[0])[1:-1], text)


def _indented(text: str) -> str:
    # A traceback keeps its lines, each indented and escaped: none can pass for a record.
    return "\n".join("    " + escape_controls(line) for line in text.splitlines())


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines; the request id at the end when there is one. Redacted, with
    control characters escaped."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return rfc3339(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        record.message = escape_controls(redact(record.message))
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return _indented(redact(super().formatException(ei)))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _indented(redact(super().formatStack(stack_info)))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        # A request line's client and user (goalhub.api.observe), as JSON has them.
        who = " ".join(f"{name}={escape_controls(str(getattr(record, name)))}" for name in ("client", "user")
                       if getattr(record, name, None) is not None)
        if who:
            head, newline, rest = line.partition("\n")
            line = f"{head} {who}{newline}{rest}"
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id and request_id != "-" else line


# Fields goalhub itself fills in with no outside text: not redacted (the time alone would cost
# a full pass: it holds ":").
_OWN_FIELDS = frozenset({"time", "level", "logger", "role", "process", "request_id", "job_id", "route", "status",
                         "duration_ms", "client"})


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    return value


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter  # deferred: only the JSON format needs it

    class RedactingJsonFormatter(JsonFormatter):
        """One JSON object a line; every string field redacted (message, exc_info, stack_info,
        extras); the time in RFC 3339 UTC."""

        def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
            return rfc3339(record.created)

        def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
            return {key: value if key in _OWN_FIELDS else _redacted(value) for key, value in log_data.items()}

    return RedactingJsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level",
                                                              "name": "logger"}, timestamp=False)


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter for ``GOALHUB_LOG_FORMAT`` (or ``fmt``): JSON or console lines."""
    if (fmt or config.settings().LOG_FORMAT) == "console":
        return ConsoleFormatter(CONSOLE_FORMAT)
    return _json_formatter()


def dict_config(role: str, fmt: str | None = None, level: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a goalhub process:
    one stderr handler on the root logger; waitress's and RQ's loggers propagate to it."""
    global _role
    _role = role
    level = level or config.settings().LOG_LEVEL
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"goalhub": {"()": formatter, "fmt": fmt}},
        "handlers": {"stderr": {"class": "goalhub.logs.StderrHandler", "stream": "ext://sys.stderr",
                                "formatter": "goalhub", "filters": ["context"]}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("waitress", "rq.worker", "rq.scheduler", "rq_scheduler.scheduler", "goalhub")
        },
    }


def json_line(role: str, message: str, level: str = "INFO") -> str:
    """One JSON log line for text that did not come through ``logging`` (``goalhub up``'s own
    lines, a child's line that is not JSON), in the fields and form of every other line."""
    return json.dumps({"time": rfc3339(time.time()), "level": level, "logger": "goalhub.up", "role": role,
                       "message": redact(message), "process": os.getpid()})


_configured = False


def configure(role: str, fmt: str | None = None, level: str | None = None) -> None:
    """Set up this process's logs (JSON unless ``GOALHUB_LOG_FORMAT=console``), and log an
    uncaught exception as one record (JSON in JSON mode) instead of Python's plain traceback.
    A bad ``GOALHUB_*`` setting is logged the same way, and the process exits 1."""
    global _configured
    problem = None
    try:
        fmt, level = fmt or config.settings().LOG_FORMAT, level or config.settings().LOG_LEVEL
    except config.ConfigError as exc:
        # The settings cannot be read: still one line in the format asked for.
        fmt = fmt or config.log_format_asked()
        level, problem = level or "INFO", exc
    logging.config.dictConfig(dict_config(role, fmt, level))
    sys.excepthook = _crashed
    _configured = True
    if problem is not None:
        crash(problem.message)


def configured() -> bool:
    """Whether this process's logs were set up by ``configure`` (a long-running process)."""
    return _configured


def crash(message: str) -> None:
    """Log why this process cannot go on (a record, JSON in JSON mode) and exit 1."""
    logging.getLogger("goalhub").critical("Error: %s", message)  # the words click would print
    raise SystemExit(1)


def _crashed(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("goalhub").critical("crashed: %s: %s", kind.__name__, exc, exc_info=(kind, exc, tb))
