"""The API goal types ``karaoke`` and ``trigger_private``.

``prepare`` only reads: it validates the body against the store and returns the draft,
or raises a goalhub error (``goalhub.BadRequest``, ...).
"""

from __future__ import annotations

import goalhub
from goalhub import CreateRequest, GoalDraft, GoalType, SampleRequest, hookimpl


def prepare_karaoke(request: CreateRequest) -> GoalDraft:
    """Body ``{levels, context: {session_id}, nbf, exp?}``: active from creation (the core
    schedules no activation for it); ``exp``, when given, ends it."""
    body = goalhub.goal_body(request.body, request.now)
    goalhub.own_active_session(request.db, body.session_id, request.user_id)
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
    body = goalhub.goal_body(request.body, request.now, exp_required=True)
    goalhub.own_active_session(request.db, body.session_id, request.user_id)
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


def _sample(cls: str, kind: str, request: SampleRequest, exp: float | None) -> GoalDraft:
    return GoalDraft(
        cls=cls,
        active=True,
        conditions={"session_id": request.session_id},
        levels=[{"target": 300}],
        nbf=request.now,
        exp=exp,
        context={"type": kind, "session_id": request.session_id},
        metadata={"user_id": request.user_id},
    )


def sample_karaoke(request: SampleRequest) -> GoalDraft:
    """A karaoke goal of a test session, for ``goalhub fire``."""
    return _sample("KaraokeGoal", "karaoke", request, None)


def sample_trigger_private(request: SampleRequest) -> GoalDraft:
    """A running private-show countdown of a test session, for ``goalhub fire``."""
    return _sample("TriggerPrivateGoal", "trigger_private", request, request.now + 3600)


@hookimpl
def goal_types() -> list[GoalType]:
    return [
        GoalType(
            name="karaoke",
            goal_class="KaraokeGoal",
            prepare=prepare_karaoke,
            description="a karaoke goal, active from creation",
            # Active from creation, never scheduled.
            activate_at_nbf=False,
            end_at_exp=False,
            sample=sample_karaoke,
            body_schema=goalhub.body_schema({"session_id": goalhub.OBJECT_ID_SCHEMA}),
        ),
        GoalType(
            name="trigger_private",
            goal_class="TriggerPrivateGoal",
            prepare=prepare_trigger_private,
            description="the countdown before a private show (exp required)",
            # A countdown: activated at nbf, ended at exp.
            activate_at_nbf=True,
            end_at_exp=True,
            sample=sample_trigger_private,
            body_schema=goalhub.body_schema({"session_id": goalhub.OBJECT_ID_SCHEMA}, exp="required"),
        ),
    ]
