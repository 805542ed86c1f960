"""Abuse limits: per-user rate limits, failed-login throttling, open goals per session.

Rate limits are fixed windows counted in goalhub's Redis (one ``INCR`` per accepted request,
the key expiring with its window), so every API process and machine shares them. A request
over the limit is a 429 with ``Retry-After`` (seconds until the window ends). Only requests
that succeed are counted: a refused request writes nothing, not even a counter (concurrent
requests may overshoot a limit by as many as run at once). ADMIN tokens are never limited. Settings: ``GOALHUB_RATE_LIMIT_GOALS``, ``GOALHUB_RATE_LIMIT_SESSIONS``,
``GOALHUB_DASHBOARD_LOGIN_LIMIT``, ``GOALHUB_MAX_OPEN_GOALS`` (README).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import dataclass

from flask import Response, after_this_request

from goalhub import config
from goalhub.auth import ADMIN, Principal
from goalhub.connection import get_redis
from goalhub.errors import GoalhubError

log = logging.getLogger(__name__)

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_LIMIT = re.compile(r"\s*(\d+)\s*/\s*(?:(\d+)\s*s|(second|minute|hour|day)s?)\s*", re.IGNORECASE)


class TooManyRequests(GoalhubError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, *, code: str | None = None) -> None:
        super().__init__(message, code=code or self.code)
        self.retry_after = max(int(retry_after), 1)


@dataclass(frozen=True)
class Rate:
    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count} per {self.seconds} s"


def parse(text: str) -> Rate | None:
    """``"120/minute"``, ``"10/300s"`` -> Rate; ``"off"``/``"0"`` -> None (no limit)."""
    if text.strip().lower() in ("off", "0", "none", ""):
        return None
    match = _LIMIT.fullmatch(text)
    if match is None:
        raise ValueError(f"a rate limit is N/second|minute|hour|day or N/<seconds>s, not {text!r}")
    seconds = int(match[2]) if match[2] else _PERIODS[match[3].lower()]
    return Rate(int(match[1]), seconds)


def _key(kind: str, who: str, rate: Rate, now: float) -> tuple[str, int]:
    window = int(now // rate.seconds)
    digest = hashlib.sha1(who.encode()).hexdigest()[:20]
    return f"{config.settings().QUEUE_PREFIX}:limit:{kind}:{digest}:{window}", rate.seconds - int(now % rate.seconds)


def check(kind: str, who: str, rate: Rate | None) -> None:
    """429 (TooManyRequests) if ``who`` used up ``rate`` for ``kind`` in this window (reads only)."""
    if rate is None:
        return
    key, remaining = _key(kind, who, rate, time.time())
    if int(get_redis().get(key) or 0) >= rate.count:
        raise TooManyRequests(f"too many {kind} requests: at most {rate}", remaining)


def count(kind: str, who: str, rate: Rate | None) -> None:
    """Count one accepted request of ``who`` against ``rate``."""
    if rate is None:
        return
    key, _ = _key(kind, who, rate, time.time())
    pipe = get_redis().pipeline()
    pipe.incr(key)
    pipe.expire(key, rate.seconds + 1)
    pipe.execute()


def limit_user(kind: str, principal: Principal, setting: str) -> None:
    """Per-user rate limit ``setting`` (a rate string) for ``kind``: checked now, counted once the
    request succeeded. ADMIN is exempt."""
    if principal.has_scope(ADMIN):
        return
    rate = parse(setting)
    check(kind, principal.user_id, rate)

    @after_this_request
    def counted(response: Response) -> Response:
        # The request's work is done and answered: a counter that cannot be written (Redis gone
        # for a moment) costs one uncounted request, never a 500 for what succeeded (the client
        # would retry, and create it twice).
        if response.status_code < 400:
            try:
                count(kind, principal.user_id, rate)
            except Exception as exc:
                log.warning("could not count a %s request against its rate limit: %s: %s",
                            kind, type(exc).__name__, exc)
        return response


def login_blocked(who: str) -> None:
    """429 if ``who`` (a user name and client address) used up its failed dashboard logins for
    this window."""
    rate = parse(config.settings().DASHBOARD_LOGIN_LIMIT)
    if rate is None:
        return
    key, remaining = _key("login", who, rate, time.time())
    failures = int(get_redis().get(key) or 0)
    if failures >= rate.count:
        raise TooManyRequests("too many failed dashboard logins; try again later", remaining,
                              code="login_throttled")


def login_failed(who: str) -> None:
    count("login", who, parse(config.settings().DASHBOARD_LOGIN_LIMIT))


def login_succeeded(who: str) -> None:
    """A correct login clears ``who``'s failures of this window (a typo is forgiven)."""
    rate = parse(config.settings().DASHBOARD_LOGIN_LIMIT)
    if rate is not None:
        get_redis().delete(_key("login", who, rate, time.time())[0])
