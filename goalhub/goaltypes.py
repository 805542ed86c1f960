"""Goal types: what a plugin contributes to ``POST /goals?type=<name>``.

A plugin returns :class:`GoalType` objects from its ``goal_types`` hook. The API finds
the type by the ``type`` (or ``goal_type``) query parameter, calls its ``prepare`` with
the request, and ``prepare`` validates the body (raising ``goalhub.errors``) and returns
the :class:`GoalDraft` that the ``create_goal`` task will store. ``prepare`` only reads:
the core makes the claims and enqueues the task, so a rejected request writes nothing.

A goal type also declares what the core needs to know about its class, so that the core
never names a plugin's class or field:

- its lifecycle: ``activate_at_nbf`` (the core schedules ``activate_goal`` at ``nbf``) and
  ``end_at_exp`` (the core schedules ``end_goal`` at ``exp``); a class with neither is not
  scheduled at all;
- ``session_fields``: the fields (and their initial values) a new session carries for it;
- ``sample``: a realistic goal of the class for ``goalhub fire`` and the ``fire`` test
  fixture, with the documents it needs, so that real receivers can act on it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
class SampleRequest:
    """What ``GoalType.sample`` gets for a test fire: the new goal's id, a live session made
    for the fire (with every plugin's session fields), its streamer, the store and the time.

    A sample that writes documents the goal refers to (a goal it binds to, a session pair)
    marks each with ``TEST_FIRE`` so that ``goalhub outcomes --purge-test`` removes them."""

    goal_id: str
    session_id: str
    user_id: str
    db: Any
    now: float


# The field every document a test fire writes carries (goals, sessions, outcomes).
TEST_FIRE = "test_fire"


@dataclass(frozen=True)
class GoalType:
    """A goal type: its API name, the ``_cls`` it creates, how a request becomes a draft, and
    what the core needs to know about the class (see the module docstring)::

        GoalType(name="confetti", goal_class="ConfettiGoal", prepare=prepare_confetti,
                 activate_at_nbf=False, end_at_exp=False,
                 session_fields={"confetti_goal": None}, sample=sample_confetti)
    """

    name: str
    goal_class: str
    prepare: Callable[[CreateRequest], GoalDraft]
    description: str = ""
    activate_at_nbf: bool = True
    end_at_exp: bool = True
    sample: Callable[[SampleRequest], GoalDraft] | None = None
    # Field name -> initial value, copied into every new session document.
    session_fields: Mapping[str, Any] = field(default_factory=dict)
    # JSON Schema of the request body, for the OpenAPI document (``goalhub.validation.body_schema``).
    body_schema: dict[str, Any] | None = None

    @property
    def scheduled(self) -> bool:
        return self.activate_at_nbf or self.end_at_exp
