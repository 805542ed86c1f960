"""``/healthz`` (the process answers) and ``/readyz`` (its store and Redis answer too).

A plugin problem does not make the API unready (the other plugins serve), but ``/readyz``
says ``degraded`` when the live view (``goalhub.liveview``: every API process, worker and
scheduler, and the circuit breakers) shows one: a plugin that failed to load or warns in any
process, a receiver paused by its breaker, a stale process, one that needs ``goalhub reload``.
Anyone gets the names of the plugins concerned; the reasons and processes need an ADMIN
bearer token (they can carry paths and hostnames)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, request

from goalhub import liveview
from goalhub.api.access import ADMIN
from goalhub.auth import bearer_principal
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
    down = [name for name in (
        _check("store", lambda: get_database().command("ping")),
        _check("redis", lambda: get_redis().ping()),
    ) if name]
    if down:
        error = {"code": "backend_unavailable", "message": f"not ready: {', '.join(down)} unreachable",
                 "field": down[0], "down": down}
        return {"error": error}, 503
    liveview.ensure("api")  # this process is in the view it reads, heartbeat thread or not
    view = liveview.health()
    if view["status"] == "ready":
        return {"status": "ready", "store": "ok", "redis": "ok"}, 200
    body: dict[str, Any] = {"status": "degraded", "store": "ok", "redis": "ok",
                            "plugins": sorted({p["plugin"] for p in view["problems"]}),
                            "stale_processes": len(view["stale"]), "reload_needed": len(view["reload_needed"])}
    if _is_admin():
        body.update(problems=view["problems"], stale=view["stale"], reload=view["reload_needed"])
    return body, 200


def _is_admin() -> bool:
    header = request.headers.get("Authorization")
    if not header:
        return False
    try:
        return bearer_principal(header).has_scope(ADMIN)
    except Exception:  # noqa: BLE001  (a bad token on a health probe: the public answer)
        return False
