"""``/healthz`` (the process answers) and ``/readyz`` (its store and Redis answer too).

A plugin that failed to load does not make the API unready (the other plugins serve), but
``/readyz`` says ``degraded`` and names each broken plugin and whether it ``loaded`` (false:
left out; true: loaded with a problem, such as a clashing goal type name). ``/readyz`` answers anyone, so it gives no reason:
an exception's text may name hosts and credentials. ``goalhub plugins`` and the process logs
give the reasons, redacted."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from goalhub import plugins
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
        log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)  # redacted by the formatter
        return name
    return None


@blueprint.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    down = [name for name in (
        _check("store", lambda: get_database().command("ping")),
        _check("redis", lambda: get_redis().ping()),
    ) if name]
    if down:
        error = {"code": "backend_unavailable", "message": f"not ready: {', '.join(down)} unreachable",
                 "field": down[0], "down": down}
        return {"error": error}, 503
    broken = [{"plugin": problem["plugin"], "loaded": problem["loaded"]} for problem in plugins.problems()]
    if broken:
        return {"status": "degraded", "store": "ok", "redis": "ok", "plugins": broken}, 200
    return {"status": "ready", "store": "ok", "redis": "ok"}, 200
