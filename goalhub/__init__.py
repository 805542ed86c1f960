"""goalhub: the goal engine of a live-streaming platform, and its public plugin API.

A plugin imports nothing from goalhub but this package (``import goalhub`` or
``from goalhub import ...``); every name in ``__all__`` is documented in ``docs/plugins.md``
and kept stable. The submodules (``goalhub.store``, ``goalhub.queues``, ...) are the core's
own and may change under a plugin that uses them. A plugin's tests may also use the
fixtures of ``goalhub.testing``.

Writing a plugin: a module (usually its own distribution) with receivers, registered
under the ``goalhub`` entry-point group::

    # setup.cfg
    [options.entry_points]
    goalhub =
        confetti = goalhub_confetti

    # goalhub_confetti/__init__.py
    import goalhub

    @goalhub.receiver("goal.created", "ConfettiGoal")
    def record_confetti_goal(goal_id, _cls, conditions):
        if _cls != "ConfettiGoal":
            return
        goalhub.get_database().confetti_goals.update_one(...)

``goalhub new-plugin NAME`` writes such a distribution, with a goal type and tests.

``receiver(event, *goal_classes)`` names the event first (``goal.created``, ``goal.added``
or ``goal.ended``), then the goal classes it acts on (none: every class). Receivers are
called with keyword arguments and may take any subset of the hook's arguments (see
``goalhub.hookspecs``). The acting receivers of an event run inline, one after another, in
the job that sent it, each within its own time budget; one that raises or runs over its
budget gets a job of its own and is retried alone, one declared ``isolated=True`` always runs
as its own job. A receiver is never run again after it succeeded, and every outcome is recorded. Effects must be
idempotent (``$set`` rather than ``$push``, deterministic ids, ``send_once``).
A plugin adds API goal types through the ``goal_types`` hook (:class:`GoalType`).

Heavier parts (Redis, RQ, the outbound records) are imported when first used, so
``import goalhub`` stays cheap for a plugin module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bson import ObjectId
from bson.errors import InvalidId

from goalhub.config import env as _env
from goalhub.errors import BadRequest, Conflict, Forbidden, GoalhubError, NotFound, Unprocessable
from goalhub.goaltypes import TEST_FIRE, Claim, CreateRequest, GoalDraft, GoalType, SampleRequest
from goalhub.hookspecs import HOOK_API_VERSION, GoalhubDeprecationWarning, hookimpl, receiver
from goalhub.store import get_database

if TYPE_CHECKING:
    from rq.job import Job

    from goalhub.binding import BindingConflict, bind_goal_once
    from goalhub.connection import get_redis
    from goalhub.outbound import HttpSink, send_once
    from goalhub.outbound import records as outbound_records
    from goalhub.validation import (
        OBJECT_ID_SCHEMA,
        GoalBody,
        binding_claim,
        body_schema,
        goal_body,
        linked_goal,
        object_id,
        own_active_session,
        required,
    )

__all__ = [
    # declaring receivers and goal types
    "hookimpl",
    "receiver",
    "GoalhubDeprecationWarning",
    "GoalType",
    "GoalDraft",
    "CreateRequest",
    "Claim",
    "SampleRequest",
    "TEST_FIRE",
    # checks a goal type's ``prepare`` makes
    "GoalBody",
    "goal_body",
    "object_id",
    "required",
    "own_active_session",
    "linked_goal",
    "binding_claim",
    "body_schema",
    "OBJECT_ID_SCHEMA",
    # errors a goal type raises (the API answers with their status)
    "GoalhubError",
    "BadRequest",
    "Forbidden",
    "NotFound",
    "Conflict",
    "Unprocessable",
    # what a receiver works with
    "get_database",
    "get_redis",
    "bind_goal_once",
    "BindingConflict",
    "send_once",
    "outbound_records",
    "HttpSink",
    "send_event",
    "enqueue_once",
    "job_id",
    "setting",
]
__version__ = "0.1.0"
#: The version of the hooks a plugin implements (``goalhub.hookspecs``); each hook carries
#: the version it was added in as ``goalhub_hook_version``.
__hook_api_version__ = HOOK_API_VERSION

# Public name -> (module, attribute), imported on first use.
_LAZY = {
    "body_schema": ("goalhub.validation", "body_schema"),
    "OBJECT_ID_SCHEMA": ("goalhub.validation", "OBJECT_ID_SCHEMA"),
    "get_redis": ("goalhub.connection", "get_redis"),
    "bind_goal_once": ("goalhub.binding", "bind_goal_once"),
    "BindingConflict": ("goalhub.binding", "BindingConflict"),
    "send_once": ("goalhub.outbound", "send_once"),
    "outbound_records": ("goalhub.outbound", "records"),
    "HttpSink": ("goalhub.outbound", "HttpSink"),
    "GoalBody": ("goalhub.validation", "GoalBody"),
    "goal_body": ("goalhub.validation", "goal_body"),
    "object_id": ("goalhub.validation", "object_id"),
    "required": ("goalhub.validation", "required"),
    "own_active_session": ("goalhub.validation", "own_active_session"),
    "linked_goal": ("goalhub.validation", "linked_goal"),
    "binding_claim": ("goalhub.validation", "binding_claim"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'goalhub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def setting(name: str, default: str | None = None) -> str | None:
    """The environment variable ``name``, or ``default`` when it is unset or empty.

    Read each time it is asked for (never cached at import), like goalhub's own settings,
    so a test or a CLI option that sets the variable sees it take effect. A plugin names
    its variables ``GOALHUB_<PLUGIN>_...`` and documents them.
    """
    return _env(name, default)


def send_event(event: str, **arguments: Any) -> None:
    """Announce ``event`` (``goal.created``, ``goal.added`` or ``goal.ended``) with the
    hook's keyword ``arguments``: every receiver of it gets its own outcome and job.

    The same as sending the blinker signal (``goalhub.signals``) yourself, except that the
    core is surely connected to it first, whatever was imported before, and ``test_fire``,
    when not given, is looked up from the goal (a receiver can rely on having it).
    """
    # Deferred: the signals bring the core's delivery (RQ, the store), which a plugin module's
    # ``import goalhub`` should not pay for.
    from goalhub.signals import EVENTS

    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}; one of {sorted(EVENTS)}")
    if "test_fire" not in arguments and isinstance(arguments.get("goal_id"), str) and \
            len(arguments["goal_id"]) == 24:
        try:
            goal = get_database().goals.find_one({"_id": ObjectId(arguments["goal_id"])}, {TEST_FIRE: 1})
        except InvalidId:
            goal = None
        arguments["test_fire"] = bool(goal and goal.get(TEST_FIRE))
    signal, _hook = EVENTS[event]
    signal.send(event, **arguments)


def enqueue_once(func: Any, *args: Any, job_id: str, **options: Any) -> Job | None:
    """Run ``func(*args)`` as an RQ job on goalhub's default queue, with goalhub's retry
    policy, unless a job named ``job_id`` is still pending (then None: nothing enqueued).

    ``func`` is a top-level function of the plugin (workers import it by name); ``job_id``
    comes from :func:`job_id`, so the same work always gets the same id. ``options`` go to
    ``rq.Queue.enqueue`` (``description``, ``job_timeout``, ...). The job is kept in the store
    until it ran (``goalhub.durable``): if Redis loses it, the reconciler enqueues it again, so
    ``args`` must be what the store holds (JSON-like values) and the job idempotent.
    """
    # deferred: RQ and the store are heavy, and ``import goalhub`` stays cheap for a plugin
    from goalhub import durable
    from goalhub.store import get_database

    return durable.enqueue(get_database(), func, *args, job_id=job_id, **options)


def job_id(kind: str, key: str) -> str:
    """A valid RQ job id for ``kind`` of work on ``key`` (the same for the same work)."""
    from goalhub import queues  # deferred: RQ is heavy, and ``import goalhub`` stays cheap for a plugin

    return queues.job_id(kind, key)

