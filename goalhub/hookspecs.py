"""The hooks a goalhub plugin can implement.

A receiver is a hook implementation declared with ``@goalhub.receiver(event, *goal_classes)``:
``event`` is ``goal.created``, ``goal.added`` or ``goal.ended``, and the classes name the goal
``_cls`` values it acts on (none means every class). The core routes each event only to the
receivers that act on its class, runs each one inline in the job that sent the event within
its own time budget (as its own job when it failed, ran over its budget or is declared
``isolated``: retried alone, never twice after success) and records an outcome per (event,
receiver). A receiver still checks ``_cls`` itself, as the seeds do, so that calling it
directly is safe.

Hooks are always called with keyword arguments. An implementation may accept fewer
arguments than the spec names, so specs can grow without breaking plugins.

How hooks evolve: every spec carries the hook API version it was added in
(``goalhub_hook_version``, and ``.. versionadded::`` in its docstring); ``HOOK_API_VERSION``
(``goalhub.__hook_api_version__``) is the current one. Arguments are only ever added. A hook
or an argument on its way out stays working for at least one version and is declared
with ``deprecated=`` / ``deprecated_arguments=``: a plugin implementing it then gets a
``GoalhubDeprecationWarning`` (pluggy's ``warn_on_impl`` / ``warn_on_impl_args``) when it is
registered, and still runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pluggy

#: The version of the hook API this goalhub implements (every spec's version is at most this).
HOOK_API_VERSION = "0.2"

_spec_marker = pluggy.HookspecMarker("goalhub")
hookimpl = pluggy.HookimplMarker("goalhub")


class GoalhubDeprecationWarning(DeprecationWarning):
    """A plugin implements a hook, or asks for a hook argument, that goalhub will remove."""


def hookspec(
    version: str,
    *,
    deprecated: str | None = None,
    deprecated_arguments: Mapping[str, str] | None = None,
    **options: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a hook specification added in hook API ``version``.

    ``deprecated`` (why, and what to use instead) makes every implementation of the hook
    warn when it is registered; ``deprecated_arguments`` maps an argument name to the same
    for an implementation asking for that argument. The implementation still runs.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        name = function.__name__
        function.goalhub_hook_version = version  # type: ignore[attr-defined]
        function.goalhub_deprecated = deprecated  # type: ignore[attr-defined]
        function.goalhub_deprecated_arguments = dict(deprecated_arguments or {})  # type: ignore[attr-defined]
        warn_on_impl = GoalhubDeprecationWarning(f"hook {name} is deprecated: {deprecated}") if deprecated else None
        warn_on_impl_args = {
            argument: GoalhubDeprecationWarning(f"argument {argument} of hook {name} is deprecated: {why}")
            for argument, why in (deprecated_arguments or {}).items()
        }
        return _spec_marker(warn_on_impl=warn_on_impl, warn_on_impl_args=warn_on_impl_args or None, **options)(function)

    return decorate


@hookspec("0.1")
def goal_created(
    goal_id: str,
    active: bool,
    _cls: str,
    conditions: dict[str, Any],
    context: dict[str, Any],
    levels: list[dict[str, Any]],
    nbf: float | None,
    exp: float | None,
    streamer_id: str | None,
    test_fire: bool,
) -> Any:
    """A goal was stored. Sent as blinker signal ``features.leaderboards`` with sender
    ``goal.created`` by the ``create_goal`` task, with the seeds' arguments.

    :param goal_id: the new goal's id (24 hex characters).
    :param active: whether the goal is active from creation.
    :param _cls: the goal class, e.g. ``ConfettiGoal``.
    :param conditions: ``session_id`` and whatever the goal type adds.
    :param context: ``type`` plus the type's ids.
    :param levels: ``[{"target": number}, ...]``.
    :param nbf: epoch seconds before which the goal is not active, or None.
    :param exp: epoch seconds at which the goal ends, or None.
    :param streamer_id: the streamer who created the goal (user id, 24 hex), or None.
    :param test_fire: whether this is a test fire (``goalhub fire``, the ``fire`` fixture).

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``streamer_id`` and ``test_fire``.
    """


@hookspec("0.1")
def goal_added(
    goal_id: str,
    _cls: str,
    conditions: dict[str, Any],
    context: dict[str, Any],
    session_id: str,
    streamer_id: str,
    test_fire: bool,
) -> Any:
    """A goal was added to a live session. Sent as blinker signal ``features.livestream``
    with sender ``goal.added``, by a plugin through ``goalhub.send_event`` (the show plugin does).

    :param goal_id: the goal's id.
    :param _cls: the goal class.
    :param conditions: the goal's conditions.
    :param context: the goal's context.
    :param session_id: the live session the goal was added to.
    :param streamer_id: the session's streamer (user id).
    :param test_fire: whether the goal is a test fire's.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``test_fire``.
    """


@hookspec("0.1")
def goal_ended(
    goal_id: str,
    _cls: str,
    conditions: dict[str, Any],
    context: dict[str, Any],
    reason: str,
    test_fire: bool,
) -> Any:
    """A goal ended (``POST /goals/<id>/end``, its ``exp`` passed, or its session ended).
    Sent as blinker signal ``features.leaderboards`` with sender ``goal.ended``.

    :param goal_id: the goal's id.
    :param _cls: the goal class.
    :param conditions: the goal's conditions.
    :param context: the goal's context.
    :param reason: ``ended`` (by request), ``expired`` (at exp) or ``session_ended``.
    :param test_fire: whether the goal is a test fire's.

    .. versionadded:: 0.1
    .. versionchanged:: 0.2 ``test_fire``.
    """


@hookspec("0.2")
def purge_test_fires(goal_ids: list[str], session_ids: list[str]) -> Any:
    """Delete what this plugin wrote for test fires. Not an event: called (with
    ``hookimpl``) by ``goalhub outcomes --purge-test`` before it removes the test goals and
    sessions themselves. Return a count (or a dict of counts) to have it reported.

    :param goal_ids: the test-fire goals' ids (24 hex each).
    :param session_ids: the test-fire sessions' ids.

    .. versionadded:: 0.2
    """


@hookspec("0.1")
def goal_types() -> list[Any]:
    """Goal types this plugin adds to ``POST /goals?type=<name>``.

    :return: a list of :class:`goalhub.GoalType`.

    .. versionadded:: 0.1
    """


# The one table of events: sender name -> (the blinker signal that carries it, the hook its
# receivers implement). ``goalhub.signals`` makes the signals from it; kept here so markers
# and specs stay in one file.
EVENTS: dict[str, tuple[str, str]] = {
    "goal.created": ("features.leaderboards", "goal_created"),
    "goal.added": ("features.livestream", "goal_added"),
    "goal.ended": ("features.leaderboards", "goal_ended"),
}
# Sender name -> hook name (the table above, read one way).
EVENT_HOOKS = {event: hook for event, (_signal, hook) in EVENTS.items()}


def receiver(
    event: str,
    *goal_classes: str,
    exclude: tuple[str, ...] = (),
    isolated: bool = False,
    budget: float | None = None,
    retries: int | None = None,
    backoff: list[int] | tuple[int, ...] | None = None,
    **hookimpl_options: Any,
) -> Any:
    """Declare a receiver of ``event`` (``goal.created``, ``goal.added``, ``goal.ended``)
    acting on ``goal_classes`` (none: every class) except the ``exclude`` ones::

        @goalhub.receiver("goal.created", "ConfettiGoal")
        def record_confetti_goal(goal_id, _cls, conditions):
            if _cls != "ConfettiGoal":
                return
            ...

    The function's name is the receiver's name; it is registered as an implementation
    of the event's hook (pluggy ``specname``), so one plugin can hold many receivers.

    :param isolated: always run as its own RQ job instead of inline in the job that sent
        the event. Use it for slow or external work (an HTTP call that may take seconds, a
        long computation): it then holds up neither the event's other receivers nor the goal.
    :param budget: seconds one run may take before it is stopped and recorded ``timed out``
        (default ``GOALHUB_RECEIVER_BUDGET``).
    :param retries: how many times a failed run is retried (default ``GOALHUB_RECEIVER_RETRIES``).
    :param backoff: seconds before each retry, the last repeating (default
        ``GOALHUB_RECEIVER_BACKOFF``).

    The operator's per-receiver environment variables override ``budget``, ``retries`` and
    ``backoff`` (see ``goalhub hooks``).
    """
    if event not in EVENT_HOOKS:
        raise ValueError(f"unknown event {event!r}; one of {sorted(EVENT_HOOKS)}")

    def decorate(function: Any) -> Any:
        function.goalhub_classes = frozenset(goal_classes) or None
        function.goalhub_excluded = frozenset(exclude)
        function.goalhub_options = {
            name: value
            for name, value in (("isolated", isolated), ("budget", budget), ("retries", retries),
                                ("backoff", tuple(backoff) if backoff is not None else None))
            if value is not None and value is not False  # not `in (None, False)`: retries=0 == False
        }
        return hookimpl(specname=EVENT_HOOKS[event], **hookimpl_options)(function)

    return decorate
