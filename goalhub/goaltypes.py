"""Goal types: what a plugin contributes to ``POST /goals?type=<name>``.

A plugin returns :class:`GoalType` objects from its ``goal_types`` hook. The API finds
the type by the ``type`` (or ``goal_type``) query parameter, calls its ``prepare`` with
the request, and ``prepare`` validates the body (raising ``goalhub.errors``) and returns
the :class:`GoalDraft` that the ``create_goal`` task will store. ``prepare`` only reads:
the core makes the claims and enqueues the task, so a rejected request writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Claim:
    """A binding reserved atomically when the request is accepted.

    The core sets ``field`` to the new goal's id on the one document of ``collection``
    that matches ``filter`` and has no ``field`` yet. If none matches, another request
    got there first: the answer is 409 with ``message``. If the job cannot be enqueued
    afterwards, the claim is released.
    """

    collection: str
    filter: dict[str, Any]
    field: str
    message: str = "already bound to another goal"
    error_field: str | None = None


@dataclass
class GoalDraft:
    """The goal document ``create_goal`` will write (its ``_id`` is allocated by the core)."""

    cls: str
    active: bool
    conditions: dict[str, Any]
    levels: list[dict[str, Any]]
    nbf: float | None
    exp: float | None
    context: dict[str, Any]
    metadata: dict[str, Any]
    claims: list[Claim] = field(default_factory=list)

    def document(self, goal_id: str) -> dict[str, Any]:
        return {
            "_id": goal_id,
            "_cls": self.cls,
            "active": self.active,
            "conditions": self.conditions,
            "levels": self.levels,
            "nbf": self.nbf,
            "exp": self.exp,
            "context": self.context,
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class CreateRequest:
    """What ``prepare`` gets: the JSON body, who asks, the store, and the time."""

    goal_id: str
    user_id: str
    body: dict[str, Any]
    db: Any
    now: float


@dataclass(frozen=True)
class GoalType:
    name: str
    goal_class: str
    prepare: Callable[[CreateRequest], GoalDraft]
    description: str = ""
    # JSON Schema of the request body, for the OpenAPI document (``goalhub.validation.body_schema``).
    body_schema: dict[str, Any] | None = None
