"""The core tests' world, written against goalhub only (never the example app): users and
their tokens, sessions and goals as the store holds them, hostile strings, seed 000's request
headers, ``UnscheduledGoalTypes`` (goal classes that ask for no lifecycle task) and
``BundledGoalTypes`` (the installed bundled plugins' goal types, found by their entry points,
without their receivers).
"""

from __future__ import annotations

import base64
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from bson import ObjectId

from goalhub import hookimpl, tasks
from goalhub.auth import mint_token
from goalhub.errors import BadRequest
from goalhub.goaltypes import CreateRequest, GoalDraft, GoalType

# goalhub's otel extra (opentelemetry-sdk and the OTLP exporter): installed by
# scripts/install_otel.py outside the venv's path, for the trace tests alone (conftest.py puts it
# on this process's path, the trace tests on their child processes' PYTHONPATH).
OTEL_SITE = Path(sys.prefix) / "otel"
STREAMER = "6800a9073e0c346531958b03"
OTHER = "6800a9073e0c346531958b04"
PLATFORM_SERVICE = "6800a9073e0c346531958bff"  # the platform backend's own service identity
XSS = "<img src=x onerror=alert(document.domain)>"
SECRET_URL = "https://ops:hunter2@sink.example.com/hook?token=abc123&region=sg"
# Seed 000's browser request headers (without its token and content type).
SEED_000_HEADERS = {
    "accept": "*/*", "accept-language": "zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7", "cache-control": "no-cache",
    "origin": "https://swag.live", "pragma": "no-cache", "priority": "u=1, i", "referer": "https://swag.live/",
    "sec-ch-ua": '"Google Chrome";v="135", "Not-A.Brand";v="8", "Chromium";v="135"',
    "sec-ch-ua-mobile": "?0", "sec-ch-ua-platform": '"macOS"', "sec-fetch-dest": "empty",
    "sec-fetch-mode": "cors", "sec-fetch-site": "same-site",
    "user-agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
    "x-client-id": "ac9cd42b-2982-430f-bdd0-18b0ce505d0a",
    "x-request-id": "b3c220d5-02de-4a9b-91ae-0bd9643af014",
    "x-session-id": "9045460d-4eda-4089-b621-2acc22ed1d50",
}
# The dashboard's operator login (GOALHUB_DASHBOARD_USER/PASSWORD), as the ``dashboard_client`` fixture sets it.
DASHBOARD_USER, DASHBOARD_PASSWORD = "ops", "a long dashboard password"


def basic(user: str = DASHBOARD_USER, password: str = DASHBOARD_PASSWORD) -> dict[str, str]:
    """An Authorization header with Basic credentials (the dashboard's operator login)."""
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def bearer(user: str = STREAMER, *scopes: str) -> dict[str, str]:
    """An Authorization header with a token for ``user`` (scopes: CREATOR unless named)."""
    return {"Authorization": f"Bearer {mint_token(user, list(scopes) or ['CREATOR'])}"}


def session(db: Any, user: str = STREAMER, sources: list | None = None, active: bool = True) -> str:
    """A stored session of ``user``; returns its id."""
    _id = ObjectId()
    db.sessions.insert_one({"_id": _id, "user": user, "active": active, "sources": sources or [],
                            "exclusive_goal_pairs": {}, "show_goal_pairs": [], "started_at": time.time()})
    return str(_id)


def stored_goal(db: Any, session_id: str, user: str = STREAMER, **extra: Any) -> str:
    """A stored, active countdown goal in ``session_id``; returns its id."""
    _id = ObjectId()
    db.goals.insert_one({"_id": _id, "_cls": "TriggerExclusiveGoal", "active": True,
                         "conditions": {"session_id": session_id, "exclusive_to": "room"},
                         "levels": [{"target": 60}], "nbf": None, "exp": time.time() + 3600,
                         "context": {"type": "trigger_exclusive", "session_id": session_id},
                         "metadata": {"user_id": user}, "created_at": time.time(), **extra})
    return str(_id)


def goal_document(cls: str = "ExclusiveGoal", **overrides: Any) -> dict[str, Any]:
    """A goal of ``cls`` as ``create_goal`` gets it (its id allocated), active, one level."""
    goal = {
        "_id": str(ObjectId()),
        "_cls": cls,
        "active": True,
        "conditions": {"session_id": str(ObjectId()), "exclusive_to": "room"},
        "levels": [{"target": 300}],
        "nbf": None,
        "exp": None,
        "context": {"type": "exclusive"},
        "metadata": {"user_id": str(ObjectId())},
    }
    goal.update(overrides)
    return goal


def countdown(db: Any, nbf: float, exp: float | None = None, cls: str = "TriggerPrivateGoal") -> str:
    """A stored countdown goal, not active yet, with its lifecycle scheduled as the core does."""
    goal = goal_document(cls, active=False, nbf=nbf, exp=exp)
    db.goals.insert_one({**goal, "_id": ObjectId(goal["_id"])})
    tasks.schedule("activate", goal["_id"], nbf)
    if exp is not None:
        tasks.schedule("end", goal["_id"], exp, reason="expired")
    return goal["_id"]


def _refuse(req: CreateRequest) -> GoalDraft:
    raise BadRequest("created by the tests only", code="test_only")


class UnscheduledGoalTypes:
    """An inline plugin declaring ``KaraokeGoal`` and ``ShowGoal`` as goal classes that ask for
    no lifecycle task (as the karaoke and show plugins declare theirs): register it with
    ``inline_plugin(UnscheduledGoalTypes(), "unscheduled-goal-types")``."""

    CLASSES = ("KaraokeGoal", "ShowGoal")

    @hookimpl
    def goal_types(self) -> list[GoalType]:
        return [GoalType(cls.removesuffix("Goal").lower(), cls, _refuse, activate_at_nbf=False, end_at_exp=False)
                for cls in self.CLASSES]


# The bundled plugins that bring goal types (entry-point names in the ``goalhub`` group).
GOAL_TYPE_PLUGINS = ("exclusive", "show", "karaoke")


def bundled_goal_types() -> list[GoalType]:
    """The goal types of the installed bundled plugins, from their ``goal_types`` hooks."""
    found = {ep.name: ep for ep in entry_points(group="goalhub") if ep.name in GOAL_TYPE_PLUGINS}
    return [goal_type for name in GOAL_TYPE_PLUGINS for goal_type in found[name].load().goal_types()]


# The bundled plugins' goal classes, in the order their plugins declare them.
GOAL_CLASSES = tuple(goal_type.goal_class for goal_type in bundled_goal_types())


class BundledGoalTypes:
    """An inline plugin with the bundled plugins' goal types (their lifecycle, session fields and
    samples) and none of their receivers: ``inline_plugin(BundledGoalTypes(), "bundled-goal-types")``."""

    @hookimpl
    def goal_types(self) -> list[GoalType]:
        return bundled_goal_types()
