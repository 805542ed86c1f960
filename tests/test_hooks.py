"""Hooks that can evolve: versioned specs, deprecations that warn instead of breaking, and
receivers that ask only for the arguments they use."""

from __future__ import annotations

import re
import warnings
from typing import Any

import pluggy
import pytest
from bson import ObjectId

import goalhub
from goalhub import hookspecs
from goalhub.hookspecs import GoalhubDeprecationWarning, hookimpl, hookspec


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def spec_functions() -> dict[str, Any]:
    return {name: f for name, f in vars(hookspecs).items() if callable(f) and hasattr(f, "goalhub_spec")}


def test_every_hook_carries_the_version_it_was_added_in() -> None:
    specs = spec_functions()
    assert set(specs) == {"goal_created", "goal_added", "goal_ended", "goal_types", "purge_test_fires"}
    assert goalhub.__hook_api_version__ == hookspecs.HOOK_API_VERSION
    for name, function in specs.items():
        version = function.goalhub_hook_version
        assert _version(version) <= _version(hookspecs.HOOK_API_VERSION), name
        assert re.search(rf"\.\. versionadded:: {re.escape(version)}\b", function.__doc__), name


class LegacySpecs:
    """Hooks as they look while one is on its way out: a renamed argument and a replaced hook."""

    @hookspec("0.1", deprecated_arguments={"cls": "ask for _cls instead"})
    def goal_renamed(self, goal_id: str, _cls: str, cls: str) -> Any:
        """.. versionadded:: 0.1"""

    @hookspec("0.1", deprecated="implement goal_renamed instead")
    def goal_retitled(self, goal_id: str) -> Any:
        """.. versionadded:: 0.1"""


def legacy_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("goalhub")
    pm.add_hookspecs(LegacySpecs)
    return pm


def test_a_deprecated_argument_warns_at_registration_and_the_receiver_still_runs() -> None:
    seen = []

    class OldPlugin:
        @hookimpl
        def goal_renamed(self, goal_id: str, cls: str) -> str:
            seen.append((goal_id, cls))
            return "old"

    class NewPlugin:
        @hookimpl
        def goal_renamed(self, goal_id: str, _cls: str) -> str:
            return "new"

    pm = legacy_manager()
    with pytest.warns(GoalhubDeprecationWarning, match="argument cls of hook goal_renamed is deprecated: ask for _cls"):
        pm.register(OldPlugin())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an implementation not asking for it registers quietly
        pm.register(NewPlugin())

    assert sorted(pm.hook.goal_renamed(goal_id="g1", _cls="CheerGoal", cls="CheerGoal")) == ["new", "old"]
    assert seen == [("g1", "CheerGoal")]
    assert LegacySpecs.goal_renamed.goalhub_deprecated_arguments == {"cls": "ask for _cls instead"}


def test_a_deprecated_hook_warns_at_registration_and_still_runs() -> None:
    class OldPlugin:
        @hookimpl
        def goal_retitled(self, goal_id: str) -> str:
            return goal_id

    pm = legacy_manager()
    with pytest.warns(GoalhubDeprecationWarning, match="hook goal_retitled is deprecated: implement goal_renamed"):
        pm.register(OldPlugin())
    assert pm.hook.goal_retitled(goal_id="g1") == ["g1"]


def test_the_deprecation_warning_points_at_the_plugin() -> None:
    class OldPlugin:
        @hookimpl
        def goal_retitled(self, goal_id: str) -> None:
            return None

    with pytest.warns(GoalhubDeprecationWarning) as record:
        legacy_manager().register(OldPlugin())
    assert record[0].filename == __file__


def test_a_receiver_asks_only_for_the_arguments_it_uses(db, inline_plugin, drain) -> None:
    calls: list[dict[str, Any]] = []

    class Minimal:
        @goalhub.receiver("goal.ended")
        def only_the_reason(self, reason: str) -> dict[str, str]:
            calls.append({"reason": reason})
            return {"reason": reason}

        @goalhub.receiver("goal.ended")
        def nothing_at_all(self) -> str:
            calls.append({})
            return "called"

    inline_plugin(Minimal(), "minimal")
    goal_id = str(ObjectId())
    goalhub.send_event("goal.ended", goal_id=goal_id, _cls="CheerGoal", conditions={}, context={}, reason="expired")
    drain()

    assert sorted(calls, key=len) == [{}, {"reason": "expired"}]
    outcomes = {o["receiver"]: o for o in db.outcomes.find({"goal_id": goal_id})}
    assert outcomes["only_the_reason"]["status"] == "ok"
    assert outcomes["nothing_at_all"]["status"] == "ok"


def test_send_event_refuses_an_unknown_event() -> None:
    with pytest.raises(ValueError, match="unknown event 'goal.craeted'"):
        goalhub.send_event("goal.craeted", goal_id="g")
