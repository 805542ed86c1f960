"""Slow receivers run alone: a receiver that overran its budget is isolated for a while.

A receiver runs inline, in the job that sent its event, beside its siblings. One that runs
over its time budget holds that job (and its siblings, and the next goal on that worker) for
the whole budget. goalhub learns it the way the breaker learns failures: the first overrun
(``record_overrun``, from ``goalhub.dispatch``) isolates the receiver for
``GOALHUB_SLOW_ISOLATE_FOR`` seconds (600; 0: never): its next events run it as its own job,
so its siblings start on time. Each further overrun extends it; ``reset`` (``goalhub
resume``) ends it now. ``goalhub hooks``, the live view and the metric
``goalhub_receivers_isolated_total`` show it.

State lives in Redis, shared by every process: ``goalhub:slow:isolated`` (hash: receiver id
-> JSON of since, until, the overrun's seconds and budget). ``is_isolated`` answers from a
copy refreshed at most every ``REFRESH`` seconds, so a receiver that runs costs no Redis
round trip per event.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from goalhub import config, metrics
from goalhub.connection import get_redis

log = logging.getLogger(__name__)

ISOLATED = "goalhub:slow:isolated"
REFRESH = 0.5  # seconds a process trusts its copy

_seen: dict[str, Any] = {"at": 0.0, "pid": 0, "states": {}}


def forget() -> None:
    """Drop this process's copy (tests, after a change)."""
    _seen.update(at=0.0, pid=0)


def isolated() -> dict[str, dict[str, Any]]:
    """Every receiver isolated now, with since, until, the overrun and the budget."""
    now = time.monotonic()
    if _seen["pid"] != os.getpid() or now - _seen["at"] > REFRESH:
        raw: dict[Any, Any] = get_redis().hgetall(ISOLATED)
        states = {}
        expired = []
        for key, value in raw.items():
            name = key.decode() if isinstance(key, bytes) else key
            state = json.loads(value)
            if state.get("until", 0) < time.time():
                expired.append(name)
            else:
                states[name] = state
        if expired:
            get_redis().hdel(ISOLATED, *expired)
        _seen.update(at=now, pid=os.getpid(), states=states)
    return dict(_seen["states"])


def is_isolated(receiver_id: str) -> bool:
    """Whether ``plugin.receiver`` runs as its own job, not inline, because it was slow."""
    return receiver_id in isolated()


def record_overrun(receiver_id: str, seconds: float, budget: float) -> None:
    """A run of the receiver overran its budget: isolate it (or keep it isolated) for
    ``GOALHUB_SLOW_ISOLATE_FOR`` seconds from now."""
    period = config.settings().SLOW_ISOLATE_FOR
    if period <= 0:
        return
    now = time.time()
    current = isolated().get(receiver_id)
    state = {"since": current["since"] if current else now, "until": now + period,
             "overrun_s": round(seconds, 3), "budget_s": budget}
    get_redis().hset(ISOLATED, receiver_id, json.dumps(state))
    forget()
    if current is None:
        plugin, _, name = receiver_id.rpartition(".")
        metrics.receiver_isolated(plugin, name)
        log.warning("receiver %s overran its budget (%.1f s > %.1f s); it runs as its own job for the next "
                    "%g s (`goalhub resume %s` ends it)", receiver_id, seconds, budget, period, receiver_id)


def reset(receiver_id: str) -> bool:
    """End the isolation of ``receiver_id`` now; whether it was isolated."""
    was = bool(get_redis().hdel(ISOLATED, receiver_id))
    forget()
    return was
