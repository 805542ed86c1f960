"""``/admin``: operators' actions over HTTP (the ADMIN scope): receivers' circuit breakers,
resuming a paused receiver, backfilling past events to a newly installed one, and the pending
work of a receiver an upgrade renamed or removed.

- ``GET /admin/receivers``: every installed receiver and its breaker state, and the live view
  of plugin health across processes (``goalhub.liveview``)
- ``POST /admin/receivers/<target>/resume``: close the breaker, redeliver what it missed
- ``POST /admin/receivers/<old>/retarget`` ``{new, dry_run?}``: move ``old``'s pending work to
  ``new`` (``goalhub.retarget``); ``POST /admin/receivers/<old>/drop`` ``{dry_run?}``: drop it
- ``POST /admin/backfill`` ``{target, event, cls?, since?, until?, dry_run?, rate?, redeliver_skipped?}``: 202,
  the backfill runs as a job on the backfill queue
- ``GET /admin/backfill/<id>``: its progress
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint

from goalhub import liveview, replay, retarget
from goalhub.api.access import caller
from goalhub.api.payload import json_body
from goalhub.auth import ADMIN, Principal, require_scope
from goalhub.errors import BadRequest
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.receivers import check_target

blueprint = Blueprint("admin", __name__)

GOAL_CLASS = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# The latest time a backfill may name: 9999-12-31T23:59:59Z (epoch seconds).
LATEST = 253402300799.0
BACKFILL_FIELDS = {"target", "event", "cls", "since", "until", "dry_run", "rate", "redeliver_skipped"}


def admin() -> Principal:
    principal = caller()
    require_scope(principal, ADMIN)
    return principal


@blueprint.get("/admin/receivers")
def receivers() -> dict[str, Any]:
    admin()
    liveview.ensure("api")
    return {"receivers": replay.receiver_states(), "live": liveview.health()}


@blueprint.post("/admin/receivers/<target>/resume")
def resume(target: str) -> dict[str, Any]:
    admin()
    return replay.resume(check_target(target))


def _fields(body: dict[str, Any], allowed: set[str]) -> dict[str, Any]:
    unknown = set(body) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise BadRequest(f"unknown field {name[:40]!r}", code="unknown_field", field=name[:40])
    return body


def _dry_run(body: dict[str, Any]) -> bool:
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise BadRequest("dry_run must be true or false", code="invalid_type", field="dry_run")
    return dry_run


@blueprint.post("/admin/receivers/<old>/retarget")
def retarget_receiver(old: str) -> dict[str, Any]:
    admin()
    body = _fields(json_body(), {"new", "dry_run"})
    return retarget.retarget(check_target(old, "old"), check_target(body.get("new"), "new"), dry_run=_dry_run(body))


@blueprint.post("/admin/receivers/<old>/drop")
def drop_receiver(old: str) -> dict[str, Any]:
    admin()
    body = _fields(json_body(optional=True), {"dry_run"})
    return retarget.drop(check_target(old, "old"), dry_run=_dry_run(body))


@blueprint.post("/admin/backfill")
def start_backfill() -> tuple[dict[str, Any], int, dict[str, str]]:
    admin()
    body = _fields(json_body(), BACKFILL_FIELDS)
    params: dict[str, Any] = {"target": check_target(body.get("target"))}
    event = body.get("event", "goal.created")
    if not isinstance(event, str) or event not in EVENT_HOOKS:
        raise BadRequest(f"event must be one of {', '.join(EVENT_HOOKS)}", code="unknown_event", field="event")
    params["event"] = event
    cls = body.get("cls")
    if cls is not None and (not isinstance(cls, str) or not GOAL_CLASS.fullmatch(cls)):
        raise BadRequest("cls must be a goal class name", code="invalid_cls", field="cls")
    params["cls"] = cls
    for name in ("since", "until"):
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float | str)):
            raise BadRequest(f"{name} must be epoch seconds or a time", code="invalid_time", field=name)
        when = replay.parse_when(value, name)
        if when is not None and not 0 <= when <= LATEST:  # nan, inf and out of range too
            raise BadRequest(f"{name} must be a finite time from 1970 to 9999", code="invalid_time", field=name)
        params[name] = when
    params["dry_run"] = _dry_run(body)
    redeliver_skipped = body.get("redeliver_skipped", False)
    if not isinstance(redeliver_skipped, bool):
        raise BadRequest("redeliver_skipped must be true or false", code="invalid_type", field="redeliver_skipped")
    params["redeliver_skipped"] = redeliver_skipped
    rate = body.get("rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)
                             or not replay.MIN_RATE <= rate <= replay.MAX_RATE):  # nan is neither
        raise BadRequest(f"rate must be a number of events a second from {replay.MIN_RATE} to {replay.MAX_RATE:.0f}",
                         code="invalid_rate", field="rate")
    params["rate"] = rate
    replay.target_receivers(params["target"], event)  # 404 now rather than a failed job later
    backfill_id = replay.start_backfill_job(params)
    location = f"/admin/backfill/{backfill_id}"
    return {"backfill_id": backfill_id, "state": "queued"}, 202, {"Location": location}


@blueprint.get("/admin/backfill/<backfill_id>")
def backfill_progress(backfill_id: str) -> dict[str, Any]:
    admin()
    if not re.fullmatch(r"[0-9a-f]{24}", backfill_id):
        raise BadRequest("backfill_id must be 24 hex characters", code="invalid_id", field="backfill_id")
    return replay.backfill_progress(backfill_id)
