"""``goalhub token``, ``goalhub goals show`` and ``goalhub sessions show``."""

from __future__ import annotations

import click
from bson import ObjectId

from goalhub import dispatch, validation
from goalhub.cli.output import clock, echo_json, outcome_json, print_outcomes, show_document, table
from goalhub.errors import BadRequest, NotFound
from goalhub.store import get_database


@click.command()
@click.option("--sub", required=True, help="The caller's user id (24 hex).")
@click.option("--scope", "scopes", multiple=True, help="A scope (repeatable) [default: CREATOR].")
@click.option(
    "--ttl", default=3600, show_default=True, type=click.IntRange(min=1), help="Seconds until it expires."
)
def token(sub: str, scopes: tuple[str, ...], ttl: int) -> None:
    """Mint a dev bearer token signed with the configured key; prints the token alone."""
    # Deferred: pyjwt loads cryptography (~0.1 s of CPU), and only this command signs.
    from goalhub.auth import mint_token

    try:
        click.echo(mint_token(sub, scopes or ("CREATOR",), ttl=ttl))
    except (ValueError, TypeError) as exc:
        raise BadRequest(str(exc)) from None


@click.group()
def goals() -> None:
    """Read goals."""


@goals.command("show")
@click.argument("goal_id")
@click.option("--json", "as_json", is_flag=True)
def show_goal(goal_id: str, as_json: bool) -> None:
    """A goal and its receiver outcomes."""
    db = get_database()
    goal = db.goals.find_one({"_id": ObjectId(validation.object_id(goal_id, "GOAL_ID"))})
    if goal is None:
        raise NotFound(f"goal {goal_id} not found")
    found = sorted(
        db.outcomes.find({"goal_id": str(goal["_id"])}), key=dispatch.recorded_at
    )
    if as_json:
        echo_json({**goal, "outcomes": [outcome_json(o) for o in found]})
        return
    show_document(goal)
    if found:
        click.echo()
        print_outcomes(found)


@click.group()
def sessions() -> None:
    """Read live sessions."""


@sessions.command("show")
@click.argument("session_id")
@click.option("--json", "as_json", is_flag=True)
def show_session(session_id: str, as_json: bool) -> None:
    """A session and the goals bound to it."""
    db = get_database()
    session = db.sessions.find_one({"_id": ObjectId(validation.object_id(session_id, "SESSION_ID"))})
    if session is None:
        raise NotFound(f"session {session_id} not found")
    bound = list(
        db.goals.find({"conditions.session_id": str(session["_id"])}, {"_cls": 1, "active": 1, "ended_at": 1})
    )
    if as_json:
        echo_json({**session, "goals": bound})
        return
    show_document(session)
    if bound:
        click.echo()
        table(
            ["GOAL", "CLASS", "ACTIVE", "ENDED"],
            [[g["_id"], g["_cls"], g.get("active"), clock(g.get("ended_at"))] for g in bound],
        )
