"""The API goal types ``show_funding`` and ``show`` (SPEC.md, seed 003).

``prepare`` only reads: it validates the body against the store and returns the draft
(with the claim the core takes on the funding goal), or raises a goalhub error (``goalhub.BadRequest``, ...).
"""

from __future__ import annotations

from bson import ObjectId

import goalhub
from goalhub import TEST_FIRE, CreateRequest, GoalDraft, GoalType, SampleRequest, hookimpl

FUNDING_FIELD = "context.funding_goal_id"


def prepare_show_funding(request: CreateRequest) -> GoalDraft:
    """Body ``{levels, context: {session_id}, nbf, exp}``; ``exp`` is required (the countdown's end)."""
    body = goalhub.goal_body(request.body, request.now, exp_required=True)
    session_id = body.session_id
    goalhub.own_active_session(request.db, session_id, request.user_id)
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
    body = goalhub.goal_body(request.body, request.now)
    session_id = body.session_id
    funding_id = goalhub.object_id(goalhub.required(body.context, "funding_goal_id", FUNDING_FIELD), FUNDING_FIELD)

    goalhub.own_active_session(request.db, session_id, request.user_id)
    funding = goalhub.linked_goal(request.db, funding_id, FUNDING_FIELD, goal_class="ShowFundingGoal", session_id=session_id)
    claim = goalhub.binding_claim(funding, "show_goal_id", "show_goal", FUNDING_FIELD, request.goal_id)
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


def sample_show_funding(request: SampleRequest) -> GoalDraft:
    """A running funding countdown of a test session, for ``goalhub fire``."""
    return GoalDraft(
        cls="ShowFundingGoal",
        active=True,
        conditions={"session_id": request.session_id},
        levels=[{"target": 300}],
        nbf=request.now,
        exp=request.now + 3600,
        context={"type": "show_funding", "session_id": request.session_id},
        metadata={"user_id": request.user_id},
    )


def sample_show(request: SampleRequest) -> GoalDraft:
    """A show goal as seed 003 creates it: its funding countdown ended, claimed for it and
    paired in the session (those documents are marked as a test fire's)."""
    funding_id = ObjectId()
    request.db.goals.insert_one({
        "_id": funding_id,
        "_cls": "ShowFundingGoal",
        "active": False,
        "conditions": {"session_id": request.session_id},
        "levels": [{"target": 300}],
        "nbf": request.now - 120,
        "exp": request.now - 1,
        "context": {"type": "show_funding", "session_id": request.session_id, "show_goal_id": request.goal_id},
        "metadata": {"user_id": request.user_id},
        TEST_FIRE: True,
    })
    request.db.sessions.update_one(
        {"_id": ObjectId(request.session_id)},
        {"$push": {"show_goal_pairs": {"funding_goal": str(funding_id), "show_goal": None}}},
    )
    return GoalDraft(
        cls="ShowGoal",
        active=True,
        conditions={"session_id": request.session_id},
        levels=[{"target": 300}],
        nbf=None,
        exp=None,
        context={"type": "show", "funding_goal_id": str(funding_id), "session_id": request.session_id},
        metadata={"user_id": request.user_id},
    )


@hookimpl
def goal_types() -> list[GoalType]:
    return [
        GoalType(
            name="show_funding",
            goal_class="ShowFundingGoal",
            prepare=prepare_show_funding,
            description="the funding countdown before a show (exp required)",
            # A countdown: activated at nbf, ended at exp.
            activate_at_nbf=True,
            end_at_exp=True,
            session_fields={"show_goal_pairs": []},
            sample=sample_show_funding,
            body_schema=goalhub.body_schema({"session_id": goalhub.OBJECT_ID_SCHEMA}, exp="required"),
        ),
        GoalType(
            name="show",
            goal_class="ShowGoal",
            prepare=prepare_show,
            description="the show, bound to a funding goal of the session (seed 003)",
            # Active from creation, never scheduled (seed 003).
            activate_at_nbf=False,
            end_at_exp=False,
            session_fields={"show_goal_pairs": []},
            sample=sample_show,
            body_schema=goalhub.body_schema(
                {"session_id": goalhub.OBJECT_ID_SCHEMA, "funding_goal_id": goalhub.OBJECT_ID_SCHEMA},
                context_required=("session_id", "funding_goal_id")),
        ),
    ]
