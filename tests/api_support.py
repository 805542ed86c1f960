"""Support for the API tests: inline goal types and a real HTTP server in a subprocess.

``goal_types`` here is a tiny goalhub plugin (register the module with ``inline_plugin``,
or name it in ``GOALHUB_PLUGINS`` for server and worker processes) with the seed-000 pair
``trigger_exclusive`` and ``exclusive``, written against goalhub's public API only, so
the API's tests do not depend on the real plugins.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import goalhub
from goalhub import validation
from goalhub.errors import BadRequest, Conflict, NotFound, Unprocessable
from goalhub.goaltypes import Claim, CreateRequest, GoalDraft, GoalType
from goalhub.testing import ChildProcess, free_port, start_api  # noqa: F401  (used by the tests through this module)

TESTS_DIR = Path(__file__).resolve().parent
ROOT = TESTS_DIR.parent


def prepare_trigger_exclusive(req: CreateRequest) -> GoalDraft:
    body = req.body
    context = validation.mapping(validation.required(body, "context"), "context")
    session_id = validation.object_id(validation.required(context, "session_id", "context.session_id"),
                                      "context.session_id")
    levels = validation.levels(validation.required(body, "levels"))
    nbf, exp = validation.window(body, exp_required=True)
    exclusive_to = context.get("exclusive_to", "room")
    if not isinstance(exclusive_to, str) or not exclusive_to:
        raise BadRequest("context.exclusive_to must be a string", code="invalid_type",
                                        field="context.exclusive_to")
    validation.own_active_session(req.db, session_id, req.user_id)
    return GoalDraft(
        cls="TriggerExclusiveGoal",
        active=nbf is None or nbf <= req.now,
        conditions={"session_id": session_id, "exclusive_to": exclusive_to},
        levels=levels,
        nbf=nbf,
        exp=exp,
        context={"type": "trigger_exclusive", "session_id": session_id, "exclusive_to": exclusive_to},
        metadata={"user_id": req.user_id},
    )


def prepare_exclusive(req: CreateRequest) -> GoalDraft:
    body = req.body
    context = validation.mapping(validation.required(body, "context"), "context")
    session_id = validation.object_id(validation.required(context, "session_id", "context.session_id"),
                                      "context.session_id")
    trigger_id = validation.object_id(
        validation.required(context, "trigger_exclusive_goal_id", "context.trigger_exclusive_goal_id"),
        "context.trigger_exclusive_goal_id",
    )
    levels = validation.levels(validation.required(body, "levels"))
    nbf, _ = validation.window(body)
    validation.own_active_session(req.db, session_id, req.user_id)
    trigger = req.db.goals.find_one(
        {"_id": validation.oid(trigger_id), "_cls": "TriggerExclusiveGoal", "conditions.session_id": session_id}
    )
    if trigger is None:
        raise NotFound("trigger goal not found", code="trigger_not_found", field="context.trigger_exclusive_goal_id")
    if trigger.get("exp") is None or trigger["exp"] >= req.now:
        raise Unprocessable("the countdown has not ended", code="countdown_running",
                            field="context.trigger_exclusive_goal_id")
    if "exclusive_goal_id" in trigger.get("context", {}):
        raise Conflict("the trigger goal is already bound", code="already_bound",
                       field="context.trigger_exclusive_goal_id")
    exclusive_to = trigger["conditions"]["exclusive_to"]
    # Widens the window between this check and the claim, as a slow store would: only the
    # atomic claim can then keep concurrent requests from binding the trigger twice.
    time.sleep(float(os.environ.get("GOALHUB_TEST_PREPARE_DELAY", "0")))
    return GoalDraft(
        cls="ExclusiveGoal",
        active=True,
        conditions={"session_id": session_id, "exclusive_to": exclusive_to},
        levels=levels,
        nbf=nbf,
        exp=None,
        context={"type": "exclusive", "exclusive_to": exclusive_to, "session_id": session_id,
                 "trigger_exclusive_goal_id": trigger_id},
        metadata={"user_id": req.user_id},
        claims=[Claim("goals", {"_id": validation.oid(trigger_id)}, "context.exclusive_goal_id",
                      error_field="context.trigger_exclusive_goal_id")],
    )


@goalhub.hookimpl
def goal_types() -> list[GoalType]:
    return [
        GoalType("trigger_exclusive", "TriggerExclusiveGoal", prepare_trigger_exclusive,
                 session_fields={"exclusive_goal_pairs": {}}),
        GoalType("exclusive", "ExclusiveGoal", prepare_exclusive, session_fields={"exclusive_goal_pairs": {}}),
    ]


# --- a real server -----------------------------------------------------------------------


def process_env(**extra: str) -> dict[str, str]:
    """This test's GOALHUB_* environment, for child processes, with this module importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS_DIR), str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


@contextmanager
def http_server(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server of ``handler`` on 127.0.0.1 for the block; yields its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
