"""The API goal types ``show_funding`` and ``show`` (SPEC.md, seed 003).

``prepare`` only reads: it validates the body against the store and returns the draft
(with the claim the core takes on the funding goal), or raises a ``goalhub.errors`` error.
"""

from __future__ import annotations

from goalhub import hookimpl, validation
from goalhub.goaltypes import CreateRequest, GoalDraft, GoalType

FUNDING_FIELD = "context.funding_goal_id"


def prepare_show_funding(request: CreateRequest) -> GoalDraft:
    """Body ``{levels, context: {session_id}, nbf, exp}``; ``exp`` is required (the countdown's end)."""
    body = validation.goal_body(request.body, request.now, exp_required=True)
    session_id = body.session_id
    validation.own_active_session(request.db, session_id, request.user_id)
    return GoalDraft(
        cls="ShowFundingGoal",
        # A countdown: active only once nbf has passed; activate_goal does it at nbf otherwise.
        active=body.nbf is None or body.nbf <= request.now,
        conditions={"session_id": session_id},
        levels=body.levels,
        nbf=body.nbf,
        exp=body.exp,
        context={"type": "show_funding", "session_id": session_id},
        metadata={"user_id": request.user_id},
    )


def prepare_show(request: CreateRequest) -> GoalDraft:
    """Seed 003 ``create_show_goal``: body ``{levels, context: {funding_goal_id, session_id},
    nbf, exp}``. Beyond the seed, the session is the caller's and live, and the funding goal a
    ``ShowFundingGoal`` of it not yet bound to a show goal."""
    body = validation.goal_body(request.body, request.now)
    session_id = body.session_id
    funding_id = validation.object_id(validation.required(body.context, "funding_goal_id", FUNDING_FIELD), FUNDING_FIELD)

    validation.own_active_session(request.db, session_id, request.user_id)
    funding = validation.linked_goal(request.db, funding_id, FUNDING_FIELD, goal_class="ShowFundingGoal", session_id=session_id)
    claim = validation.binding_claim(funding, "show_goal_id", "show_goal", FUNDING_FIELD, request.goal_id)
    return GoalDraft(
        cls="ShowGoal",
        active=True,
        conditions={"session_id": session_id},
        levels=body.levels,
        nbf=body.nbf,
        exp=body.exp,
        context={"type": "show", "funding_goal_id": funding_id, "session_id": session_id},
        metadata={"user_id": request.user_id},
        claims=[claim],
    )


@hookimpl
def goal_types() -> list[GoalType]:
    return [
        GoalType(
            name="show_funding",
            goal_class="ShowFundingGoal",
            prepare=prepare_show_funding,
            description="the funding countdown before a show (exp required)",
            body_schema=validation.body_schema({"session_id": validation.OBJECT_ID_SCHEMA}, exp="required"),
        ),
        GoalType(
            name="show",
            goal_class="ShowGoal",
            prepare=prepare_show,
            description="the show, bound to a funding goal of the session (seed 003)",
            body_schema=validation.body_schema(
                {"session_id": validation.OBJECT_ID_SCHEMA, "funding_goal_id": validation.OBJECT_ID_SCHEMA},
                context_required=("session_id", "funding_goal_id")),
        ),
    ]
