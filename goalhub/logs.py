"""Structured logs and the request id that follows one goal through every process.

The API takes a request's id from its ``x-request-id`` header (or makes one) and answers
with it. ``goalhub.queues.enqueue_once`` and the lifecycle jobs put it in the RQ job's
``meta``; a job that enqueues more jobs (``create_goal`` -> receivers) passes it on, and
dispatch writes it on every outcome record. Every log line a goalhub process writes
carries it, so ``grep <request-id>`` over the API's and workers' logs and the outcome
records follows one goal from its request to each receiver's outcome.

Logs are JSON, one object a line (python-json-logger), from every process: API (waitress
too), workers and their work-horses, scheduler. ``GOALHUB_LOG_FORMAT=console`` gives
human-readable lines instead; ``goalhub up`` uses it unless told otherwise.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import uuid
from contextvars import ContextVar
from typing import Any

from goalhub import config
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


def _current_job() -> Any:
    from rq import get_current_job

    try:
        return get_current_job()
    except Exception:  # no Redis connection in this context: no job either
        return None


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
    """RQ job ``meta`` carrying the current request id (for jobs enqueued while handling it) and
    the version of the job's payload (``goalhub.schema.PAYLOAD_VERSION``: a worker refuses newer)."""
    meta = {"payload_version": PAYLOAD_VERSION, **(meta or {})}
    request_id = current_request_id()
    if request_id and "request_id" not in meta:
        meta["request_id"] = request_id
    return meta


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``job_id`` and the process ``role`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            try:
                record.request_id = current_request_id() or "-"
            except Exception:
                record.request_id = "-"
        if not getattr(record, "job_id", None):
            job = None
            try:
                job = _current_job()
            except Exception:
                pass
            record.job_id = job.id if job is not None else None
        record.role = _role
        return True


class ConsoleFormatter(logging.Formatter):
    """Human-readable lines; the request id at the end when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        return f"{line} [{request_id}]" if request_id and request_id != "-" else line


def formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter for ``GOALHUB_LOG_FORMAT`` (or ``fmt``): JSON or console lines."""
    if (fmt or config.log_format()) == "console":
        return ConsoleFormatter(CONSOLE_FORMAT)
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
                         timestamp=False)


def dict_config(role: str, fmt: str | None = None, level: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a goalhub process:
    one stderr handler on the root logger; waitress's and RQ's loggers propagate to it."""
    global _role
    _role = role
    level = level or config.log_level()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"goalhub": {"()": formatter, "fmt": fmt}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "goalhub", "filters": ["context"]}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            name: {"level": level, "handlers": [], "propagate": True}
            for name in ("waitress", "rq.worker", "rq.scheduler", "rq_scheduler.scheduler", "goalhub")
        },
    }


def configure(role: str, fmt: str | None = None, level: str | None = None) -> None:
    """Set up this process's logs (JSON unless ``GOALHUB_LOG_FORMAT=console``)."""
    logging.config.dictConfig(dict_config(role, fmt, level))
