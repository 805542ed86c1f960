"""Per-receiver circuit breaker: pause a receiver that keeps failing, resume it by hand.

A receiver whose runs fail for ``GOALHUB_BREAKER_THRESHOLD`` different events in a row,
within ``GOALHUB_BREAKER_WINDOW`` seconds, trips. While tripped, ``goalhub.dispatch``
records its new outcomes ``paused`` and does not run it; a retry that comes due finds it
paused too, so a dead downstream costs one failed call per event, not one per retry. The
goal's other receivers are untouched. ``resume`` (``goalhub resume``, the ADMIN API) closes
it and delivers every ``paused`` (and ``failed``) outcome of the receiver again, exactly once:
``run_receiver`` never runs a receiver whose outcome is already ``ok``.

No half-open probe: a tripped receiver stays paused until an operator resumes it, so a
flapping downstream never gets live traffic without someone deciding so.

State lives in Redis, shared by every process: ``goalhub:breaker:open`` (hash: receiver id
-> JSON of when it tripped and the last error), ``goalhub:breaker:failing`` (hash: receiver
id -> last error) and one sorted set per failing receiver of the events that failed in the
current streak. ``is_paused`` answers from a copy of both hashes refreshed at most every
``REFRESH`` seconds, so a receiver that runs costs no Redis round trip per event.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from goalhub import config
from goalhub.connection import get_redis

log = logging.getLogger(__name__)

OPEN = "goalhub:breaker:open"
FAILING = "goalhub:breaker:failing"
REFRESH = 0.5  # seconds a process trusts its copy of the breaker states

_seen: dict[str, Any] = {"at": 0.0, "pid": 0, "open": frozenset(), "failing": frozenset()}


def _streak_key(receiver_id: str) -> str:
    return f"goalhub:breaker:streak:{receiver_id}"


def _states() -> dict[str, Any]:
    now = time.monotonic()
    if _seen["pid"] != os.getpid() or now - _seen["at"] > REFRESH:
        pipe = get_redis().pipeline(transaction=False)
        pipe.hkeys(OPEN)
        pipe.hkeys(FAILING)
        opened, failing = pipe.execute()
        _seen.update(at=now, pid=os.getpid(), open=frozenset(k.decode() for k in opened),
                     failing=frozenset(k.decode() for k in failing))
    return _seen


def forget() -> None:
    """Drop this process's copy of the breaker states (tests, after a resume)."""
    _seen.update(at=0.0, pid=0)


def is_paused(receiver_id: str) -> bool:
    """Whether ``plugin.receiver`` is tripped: dispatch then records the outcome ``paused``,
    does not run it and schedules no retry."""
    return receiver_id in _states()["open"]


def record_ok(receiver_id: str) -> None:
    """A run of the receiver returned normally: its failure streak ends."""
    states = _states()
    if receiver_id in states["failing"]:
        pipe = get_redis().pipeline()
        pipe.delete(_streak_key(receiver_id))
        pipe.hdel(FAILING, receiver_id)
        pipe.execute()
        forget()


def record_failure(receiver_id: str, event_id: str, error: str) -> None:
    """A run of the receiver raised or ran over its budget (every failed attempt). The streak
    counts events, not attempts: a receiver retried three times on one event failed once."""
    threshold = config.settings().BREAKER_THRESHOLD
    if threshold <= 0:
        return
    now = time.time()
    key = _streak_key(receiver_id)
    pipe = get_redis().pipeline()
    pipe.zadd(key, {event_id: now})
    pipe.zremrangebyscore(key, "-inf", now - config.settings().BREAKER_WINDOW)
    pipe.zcard(key)
    pipe.expire(key, int(config.settings().BREAKER_WINDOW) + 1)
    pipe.hset(FAILING, receiver_id, error[:500])
    failures = pipe.execute()[2]
    if failures >= threshold:
        state = {"tripped_at": now, "failures": failures, "last_error": error[:500]}
        if get_redis().hsetnx(OPEN, receiver_id, json.dumps(state)):
            log.error("receiver %s tripped after failing %d events in a row: %s; paused until "
                      "`goalhub resume %s`", receiver_id, failures, error[:200], receiver_id)
        forget()


def tripped() -> dict[str, dict[str, Any]]:
    """Every tripped receiver with when it tripped, how many events failed and the last error."""
    found: dict[Any, Any] = get_redis().hgetall(OPEN)
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in found.items()}


def close(receiver_id: str) -> bool:
    """Close the breaker of ``receiver_id`` (and clear its streak); whether it was tripped."""
    pipe = get_redis().pipeline()
    pipe.hdel(OPEN, receiver_id)
    pipe.hdel(FAILING, receiver_id)
    pipe.delete(_streak_key(receiver_id))
    was_open = pipe.execute()[0] == 1
    forget()
    return bool(was_open)
