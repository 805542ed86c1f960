"""``/healthz`` (the process answers), ``/readyz`` (its store and Redis answer too: send it
traffic) and ``/healthz/deep`` (the system does its work: live workers, a scheduler polling,
room on the disk; for monitoring, never for a load balancer, which would take every API
process out because the workers stopped).

A plugin problem does not make the API unready (the other plugins serve), but ``/readyz``
says ``degraded`` when the live view (``goalhub.liveview``: every API process, worker and
scheduler, and the circuit breakers) shows one: a plugin that failed to load or warns in any
process, a receiver paused by its breaker, a stale process, one that needs ``goalhub reload``.
Anyone gets the names of the plugins concerned; the reasons and processes need an ADMIN
bearer token (they can carry paths and hostnames; redacted even then). An API process told to
stop answers ``/readyz`` 503 ``draining`` (``goalhub.drain``)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from flask import Blueprint, request

from goalhub import config, drain, liveness, liveview
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
        log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)  # redacted by the formatter
        return name
    return None


def _backends_down() -> tuple[dict[str, Any], int] | None:
    down = [name for name in (
        _check("store", lambda: get_database().command("ping")),
        _check("redis", lambda: get_redis().ping()),
    ) if name]
    if not down:
        return None
    error = {"code": "backend_unavailable", "message": f"not ready: {', '.join(down)} unreachable",
             "field": down[0], "down": down}
    return {"error": error}, 503


@blueprint.get("/readyz")
def readyz() -> tuple[dict[str, Any], int]:
    if drain.draining():  # told to stop: a load balancer sends its requests elsewhere
        return {"error": {"code": "draining", "message": "not ready: this process is shutting down"}}, 503
    down = _backends_down()
    if down:
        return down
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


# Below this much free space where GOALHUB_HOME is (the embedded store, the metrics files), the
# deep check fails: SQLite and Redis's AOF fail their writes soon after.
MIN_FREE_BYTES = 64 * 1024 * 1024


@blueprint.get("/healthz/deep")
def deep() -> tuple[dict[str, Any], int]:
    down = _backends_down()
    if down:
        return down
    work = liveness.work()
    free = shutil.disk_usage(config.home()).free
    problems = list(work["problems"]) + (["disk_full"] if free < MIN_FREE_BYTES else [])
    if problems:
        window = config.settings().LIVENESS_WINDOW
        said = {"no_worker": f"no live worker for {window:g} s",
                "no_scheduler": f"no scheduler poll for {window:g} s",
                "disk_full": f"{free // (1024 * 1024)} MiB free under GOALHUB_HOME"}
        error = {"code": "work_stalled" if problems != ["disk_full"] else "storage_full",
                 "message": "; ".join(said[p] for p in problems), "down": problems}
        return {"error": error}, 503
    return {"status": "ok", "workers": work["workers"], "schedulers": work["schedulers"],
            "scheduler_last_poll_age": work["scheduler_last_poll_age"], "disk_free_bytes": free}, 200


def _is_admin() -> bool:
    header = request.headers.get("Authorization")
    if not header:
        return False
    try:
        return bearer_principal(header).has_scope(ADMIN)
    except Exception:  # noqa: BLE001  (a bad token on a health probe: the public answer)
        return False
