"""The receiver registry: who receives each event, with which settings, and how one is called.

A receiver is a hook implementation of an event (``goalhub.hookspecs.receiver``); ``receivers``
lists an event's receivers in pluggy's call order, each a ``Receiver`` with its declared
classes and options and its effective settings (the operator's per-receiver variable, else
its declaration, else the global variable). ``Receiver.call`` is the one place a receiver is
called (``goalhub.dispatch`` runs it inline or in its job), so ``GOALHUB_TRACE_RECEIVERS``
traces every call there.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from goalhub import config, redaction
from goalhub.errors import BadRequest
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.plugins import get_plugin_manager, plugin_info

#: What names a plugin or one of its receivers (``plugin`` or ``plugin.receiver``: entry-point and
#: Python names), as an operator gives it (backfill, resume, retarget, drop): checked with fullmatch.
TARGET = re.compile(r"[A-Za-z0-9_-]{1,64}(\.[A-Za-z_][A-Za-z0-9_]{0,63})?")


def check_target(value: Any, field: str = "target") -> str:
    """``value`` if it names a plugin or a receiver (``TARGET``), else 400 ``invalid_target``."""
    if not isinstance(value, str) or not TARGET.fullmatch(value):
        raise BadRequest(f"{field} must name a plugin or plugin.receiver", code="invalid_target", field=field)
    return value


@dataclass(frozen=True)
class Receiver:
    event: str
    name: str
    plugin: str
    classes: frozenset[str] | None
    excluded: frozenset[str]
    function: Callable[..., Any]
    argnames: tuple[str, ...]
    dist: str | None = None
    version: str | None = None
    declared: tuple[tuple[str, Any], ...] = ()

    @property
    def id(self) -> str:
        return f"{self.plugin}.{self.name}"

    def acts_on(self, goal_class: str) -> bool:
        return (self.classes is None or goal_class in self.classes) and goal_class not in self.excluded

    def call(self, arguments: dict[str, Any]) -> Any:
        # Keyword arguments only, and only those the receiver asks for.
        kwargs = {name: arguments[name] for name in self.argnames if name in arguments}
        if config.settings().TRACE_RECEIVERS:
            return _traced(self, kwargs)
        return self.function(**kwargs)

    # Settings: the operator's per-receiver variable, else the declaration, else the global
    # variable. Read when asked, so a changed environment takes effect without a reload.

    @property
    def isolated(self) -> bool:
        return bool(dict(self.declared).get("isolated", False))

    @property
    def budget(self) -> float:
        return float(self._setting("budget"))

    @property
    def retries(self) -> int:
        return int(self._setting("retries"))

    @property
    def backoff(self) -> tuple[int, ...]:
        value = self._setting("backoff")
        if isinstance(value, str):
            value = [int(part) for part in value.split(",") if part.strip()]
        return tuple(value) or (0,)

    def _setting(self, name: str) -> Any:
        raw = config.receiver_setting(name, self.id)
        if raw is not None:
            return raw
        declared = dict(self.declared).get(name)
        return declared if declared is not None else getattr(config.settings(), f"RECEIVER_{name.upper()}")

    def settings(self) -> dict[str, Any]:
        """Its effective settings and where each comes from (for ``goalhub hooks``)."""
        shown: dict[str, Any] = {"isolated": self.isolated}
        for name in ("budget", "retries", "backoff"):
            variable = config.receiver_variable(name, self.id)
            source = ("env " + variable if config.receiver_setting(name, self.id) is not None
                      else "declared" if dict(self.declared).get(name) is not None else "default")
            shown[name] = {"value": list(getattr(self, name)) if name == "backoff" else getattr(self, name),
                           "from": source}
        shown["disabled"] = self.id in set(config.settings().DISABLED_RECEIVERS)
        return shown


# GOALHUB_TRACE_RECEIVERS: receivers are called directly (``Receiver.call``), not through
# pluggy's hook caller, so pluggy's own tracing (``pm.trace``, ``add_hookcall_monitoring``)
# never sees them; this logger does, one line per call and one per return or raise.
trace_log = logging.getLogger("goalhub.trace")
TRACE_VALUE_CHARS = 200  # a traced value is shown redacted and cut to this (event arguments are user input)


def _shown(value: Any) -> str:
    text = redaction.redact(repr(value))
    return text if len(text) <= TRACE_VALUE_CHARS else text[:TRACE_VALUE_CHARS] + "..."


def _traced(receiver: Receiver, kwargs: dict[str, Any]) -> Any:
    """Call ``receiver`` with ``kwargs``, logging the call, then its result or error and its time."""
    shown = ", ".join(f"{name}={_shown(value)}" for name, value in kwargs.items())
    trace_log.info("call %s(%s)", receiver.id, shown, extra={"receiver": receiver.id})
    clock = time.perf_counter()
    try:
        result = receiver.function(**kwargs)
    except BaseException as exc:
        trace_log.info("%s raised %s after %.1f ms", receiver.id, _shown(exc), (time.perf_counter() - clock) * 1000,
                       extra={"receiver": receiver.id})
        raise
    trace_log.info("%s returned %s after %.1f ms", receiver.id, _shown(result), (time.perf_counter() - clock) * 1000,
                   extra={"receiver": receiver.id})
    return result


# (event, the hook's implementations) -> its receivers: built once, not per event.
_receivers_cache: dict[tuple[Any, ...], list[Receiver]] = {}


def receivers(event: str) -> list[Receiver]:
    """The receivers of ``event`` in pluggy's call order (last registered first)."""
    impls = getattr(get_plugin_manager().hook, EVENT_HOOKS[event]).get_hookimpls()
    key = (event, *((impl.plugin_name, impl.function) for impl in impls))
    found = _receivers_cache.get(key)
    if found is None:
        found = [_receiver(event, impl) for impl in reversed(impls)]
        if len(_receivers_cache) > 256:  # plugins registered and unregistered over and over (tests)
            _receivers_cache.clear()
        _receivers_cache[key] = found
    return found


def _receiver(event: str, impl: Any) -> Receiver:
    function = impl.function
    info = plugin_info(impl.plugin_name)
    return Receiver(
        event=event,
        name=function.__name__,
        plugin=impl.plugin_name,
        classes=getattr(function, "goalhub_classes", None),
        excluded=getattr(function, "goalhub_excluded", frozenset()),
        function=function,
        argnames=tuple(inspect.signature(function).parameters),
        dist=info.dist,
        version=info.version,
        declared=tuple(sorted(getattr(function, "goalhub_options", {}).items())),
    )


def find_receiver(event: str, receiver_id: str) -> Receiver | None:
    return next((r for r in receivers(event) if r.id == receiver_id), None)


def targeted(receiver: Receiver, only: Collection[str] | None) -> bool:
    """Whether ``receiver`` is among ``only`` (receiver ids ``plugin.receiver`` or plugin names; None: all)."""
    return only is None or receiver.id in only or receiver.plugin in only


def dry_run(event: str, goal_class: str) -> list[tuple[Receiver, bool]]:
    """Which receivers of ``event`` would act on ``goal_class``; runs nothing."""
    return [(receiver, receiver.acts_on(goal_class)) for receiver in receivers(event)]
