"""The API goal types ``trigger_exclusive`` and ``exclusive`` (SPEC.md, seed 000).

``prepare`` only reads: it validates the body against the store and returns the draft
(with the claim the core takes on the trigger goal), or raises a goalhub error (``goalhub.BadRequest``, ...).
"""

from __future__ import annotations

from bson import ObjectId

import goalhub
from goalhub import (
    TEST_FIRE,
    BadRequest,
    CreateRequest,
    GoalDraft,
    GoalType,
    SampleRequest,
    Unprocessable,
    hookimpl,
)
from goalhub_exclusive.receivers import EXCLUSIVE_TO


def prepare_trigger_exclusive(request: CreateRequest) -> GoalDraft:
    """Body ``{levels, context: {session_id, exclusive_to?}, nbf, exp}``; ``exp`` is required
    (the countdown's end). ``exclusive_to`` defaults to the new trigger goal's own id, so each
    trigger opens a pair of its own in the session's ``exclusive_goal_pairs``."""
    body = goalhub.goal_body(request.body, request.now, exp_required=True)
    exclusive_to = body.context.get("exclusive_to")
    if exclusive_to is None:
        exclusive_to = request.goal_id
    elif not isinstance(exclusive_to, str) or not EXCLUSIVE_TO.fullmatch(exclusive_to):
        raise BadRequest(
            "context.exclusive_to must be 1 to 64 letters, digits, '_' or '-'",
            code="invalid_exclusive_to",
            field="context.exclusive_to",
        )
    goalhub.own_active_session(request.db, body.session_id, request.user_id)
    return GoalDraft(
        cls="TriggerExclusiveGoal",
        # A countdown: active only once nbf has passed; activate_goal does it at nbf otherwise.
        active=body.nbf is None or body.nbf <= request.now,
        conditions={"session_id": body.session_id, "exclusive_to": exclusive_to},
        levels=body.levels,
        nbf=body.nbf,
        exp=body.exp,
        context={"type": "trigger_exclusive", "session_id": body.session_id, "exclusive_to": exclusive_to},
        metadata={"user_id": request.user_id},
    )


def prepare_exclusive(request: CreateRequest) -> GoalDraft:
    """Seed 000 ``create_exclusive_goal``: body ``{levels, context: {session_id,
    trigger_exclusive_goal_id}, nbf}``. An exclusive goal has no ``exp``."""
    if isinstance(request.body, dict) and request.body.get("exp") is not None:
        raise BadRequest("an exclusive goal has no exp", code="unexpected_field", field="exp")
    body = goalhub.goal_body(request.body, request.now)
    trigger_field = "context.trigger_exclusive_goal_id"
    trigger_id = goalhub.object_id(goalhub.required(body.context, "trigger_exclusive_goal_id", trigger_field), trigger_field)
    session_id = body.session_id

    goalhub.own_active_session(request.db, session_id, request.user_id)
    trigger = goalhub.linked_goal(
        request.db, trigger_id, trigger_field, goal_class="TriggerExclusiveGoal", session_id=session_id
    )
    if trigger.get("exp") is None or trigger["exp"] >= request.now:
        raise Unprocessable("the trigger goal's countdown has not ended", code="countdown_not_ended", field=trigger_field)
    claim = goalhub.binding_claim(trigger, "exclusive_goal_id", "exclusive_goal", trigger_field, request.goal_id)
    exclusive_to = (trigger.get("conditions") or {}).get("exclusive_to")
    if not isinstance(exclusive_to, str) or not EXCLUSIVE_TO.fullmatch(exclusive_to):
        raise Unprocessable("the trigger goal has no exclusive_to", code="trigger_without_exclusive_to", field=trigger_field)
    return GoalDraft(
        cls="ExclusiveGoal",
        active=True,
        conditions={"session_id": session_id, "exclusive_to": exclusive_to},
        levels=body.levels,
        nbf=body.nbf,
        exp=None,
        context={
            "type": "exclusive",
            "exclusive_to": exclusive_to,
            "session_id": session_id,
            "trigger_exclusive_goal_id": trigger_id,
        },
        metadata={"user_id": request.user_id},
        claims=[claim],
    )


def sample_trigger_exclusive(request: SampleRequest) -> GoalDraft:
    """A running countdown of a test session, for ``goalhub fire``."""
    conditions = {"session_id": request.session_id, "exclusive_to": request.goal_id}
    return GoalDraft(
        cls="TriggerExclusiveGoal",
        active=True,
        conditions=conditions,
        levels=[{"target": 300}],
        nbf=request.now,
        exp=request.now + 3600,
        context={"type": "trigger_exclusive", **conditions},
        metadata={"user_id": request.user_id},
    )


def sample_exclusive(request: SampleRequest) -> GoalDraft:
    """An exclusive goal as seed 000 creates it: its trigger's countdown ended, the trigger
    claimed for it and paired in the session (those documents are marked as a test fire's)."""
    trigger_id = ObjectId()
    exclusive_to = str(trigger_id)
    conditions = {"session_id": request.session_id, "exclusive_to": exclusive_to}
    request.db.goals.insert_one({
        "_id": trigger_id,
        "_cls": "TriggerExclusiveGoal",
        "active": False,
        "conditions": conditions,
        "levels": [{"target": 300}],
        "nbf": request.now - 120,
        "exp": request.now - 1,
        "context": {"type": "trigger_exclusive", **conditions, "exclusive_goal_id": request.goal_id},
        "metadata": {"user_id": request.user_id},
        TEST_FIRE: True,
    })
    request.db.sessions.update_one(
        {"_id": ObjectId(request.session_id)},
        {"$set": {f"exclusive_goal_pairs.{exclusive_to}.trigger_exclusive_goal": exclusive_to}},
    )
    return GoalDraft(
        cls="ExclusiveGoal",
        active=True,
        conditions=conditions,
        levels=[{"target": 300}],
        nbf=None,
        exp=None,
        context={"type": "exclusive", **conditions, "trigger_exclusive_goal_id": exclusive_to},
        metadata={"user_id": request.user_id},
    )


@hookimpl
def goal_types() -> list[GoalType]:
    return [
        GoalType(
            name="trigger_exclusive",
            goal_class="TriggerExclusiveGoal",
            prepare=prepare_trigger_exclusive,
            description="the countdown before an exclusive show (exp required)",
            # A countdown: activated at nbf, ended at exp.
            activate_at_nbf=True,
            end_at_exp=True,
            session_fields={"exclusive_goal_pairs": {}},
            sample=sample_trigger_exclusive,
            body_schema=goalhub.body_schema(
                {"session_id": goalhub.OBJECT_ID_SCHEMA,
                 "exclusive_to": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}}, exp="required"),
        ),
        GoalType(
            name="exclusive",
            goal_class="ExclusiveGoal",
            prepare=prepare_exclusive,
            description="the exclusive show, once its trigger's countdown has ended (seed 000)",
            # Active from creation; activate_goal at nbf finds it active and does nothing (seed 000).
            activate_at_nbf=True,
            end_at_exp=True,
            session_fields={"exclusive_goal_pairs": {}},
            sample=sample_exclusive,
            body_schema=goalhub.body_schema(
                {"session_id": goalhub.OBJECT_ID_SCHEMA, "trigger_exclusive_goal_id": goalhub.OBJECT_ID_SCHEMA},
                context_required=("session_id", "trigger_exclusive_goal_id"), exp="absent"),
        ),
    ]
