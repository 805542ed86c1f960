"""``/healthz`` (the process answers) and ``/readyz`` (its store and Redis answer too).

A plugin that failed to load does not make the API unready (the other plugins serve), but
``/readyz`` says ``degraded`` and lists each broken plugin with its reason."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from goalhub import drain, plugins
from goalhub.connection import get_redis
from goalhub.store import get_database

log = logging.getLogger(__name__)

blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def healthz() -> dict[str, Any]:
    return {"status": "ok"}


def _check(name: str, probe: Any) -> str | None:
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; the log says which
        log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
        return name
    return None


@blueprint.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    if drain.draining():  # told to stop: a load balancer sends its requests elsewhere
        return {"error": {"code": "draining", "message": "not ready: this process is shutting down"}}, 503
    down = [name for name in (
        _check("store", lambda: get_database().command("ping")),
        _check("redis", lambda: get_redis().ping()),
    ) if name]
    if down:
        error = {"code": "backend_unavailable", "message": f"not ready: {', '.join(down)} unreachable",
                 "field": down[0], "down": down}
        return {"error": error}, 503
    broken = plugins.problems()
    if broken:
        return {"status": "degraded", "store": "ok", "redis": "ok", "plugins": broken}, 200
    return {"status": "ready", "store": "ok", "redis": "ok"}, 200
