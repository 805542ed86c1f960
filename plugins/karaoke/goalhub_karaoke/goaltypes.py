"""The API goal types ``karaoke`` and ``trigger_private``.

``prepare`` only reads: it validates the body against the store and returns the draft,
or raises a ``goalhub.errors`` error.
"""

from __future__ import annotations

from goalhub import hookimpl, validation
from goalhub.goaltypes import CreateRequest, GoalDraft, GoalType


def prepare_karaoke(request: CreateRequest) -> GoalDraft:
    """Body ``{levels, context: {session_id}, nbf, exp?}``: active from creation (the core
    schedules no activation for it); ``exp``, when given, ends it."""
    body = validation.goal_body(request.body, request.now)
    validation.own_active_session(request.db, body.session_id, request.user_id)
    return GoalDraft(
        cls="KaraokeGoal",
        active=True,
        conditions={"session_id": body.session_id},
        levels=body.levels,
        nbf=body.nbf,
        exp=body.exp,
        context={"type": "karaoke", "session_id": body.session_id},
        metadata={"user_id": request.user_id},
    )


def prepare_trigger_private(request: CreateRequest) -> GoalDraft:
    """Body ``{levels, context: {session_id}, nbf, exp}``; ``exp`` is required (the countdown's end)."""
    body = validation.goal_body(request.body, request.now, exp_required=True)
    validation.own_active_session(request.db, body.session_id, request.user_id)
    return GoalDraft(
        cls="TriggerPrivateGoal",
        # A countdown: active only once nbf has passed; activate_goal does it at nbf otherwise.
        active=body.nbf is None or body.nbf <= request.now,
        conditions={"session_id": body.session_id},
        levels=body.levels,
        nbf=body.nbf,
        exp=body.exp,
        context={"type": "trigger_private", "session_id": body.session_id},
        metadata={"user_id": request.user_id},
    )


@hookimpl
def goal_types() -> list[GoalType]:
    return [
        GoalType(name="karaoke", goal_class="KaraokeGoal", prepare=prepare_karaoke, description="a karaoke goal, active from creation",
                 body_schema=validation.body_schema({"session_id": validation.OBJECT_ID_SCHEMA})),
        GoalType(
            name="trigger_private",
            goal_class="TriggerPrivateGoal",
            prepare=prepare_trigger_private,
            description="the countdown before a private show (exp required)",
            body_schema=validation.body_schema({"session_id": validation.OBJECT_ID_SCHEMA}, exp="required"),
        ),
    ]
