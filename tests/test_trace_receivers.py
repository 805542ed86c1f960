"""``GOALHUB_TRACE_RECEIVERS``: pluggy-style tracing of receiver calls. Receivers are called
directly (``goalhub.receivers.Receiver.call``), so pluggy's own tracing never sees them; with the
switch on, every call, its result or error and its time are logged on ``goalhub.trace``."""

from __future__ import annotations

import logging

import goalhub


class Confetti:
    @goalhub.receiver("goal.created", "ConfettiGoal")
    def celebrate(self, goal_id, context):
        return {"colour": context["colour"]}

    @goalhub.receiver("goal.created", "ConfettiGoal", retries=0)
    def explode(self, goal_id):
        raise RuntimeError("boom token=abc123secret")


def traced(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "goalhub.trace"]


def test_with_the_switch_on_every_receiver_call_and_its_outcome_is_logged(inline_plugin, fire, monkeypatch, caplog):
    monkeypatch.setenv("GOALHUB_TRACE_RECEIVERS", "1")
    inline_plugin(Confetti(), "confetti")
    caplog.set_level(logging.INFO, logger="goalhub.trace")

    outcomes = fire("goal.created", "ConfettiGoal", context={"colour": "gold", "note": "x" * 1000})

    assert outcomes["confetti.celebrate"]["status"] == "ok" and outcomes["confetti.explode"]["status"] == "failed"
    lines = traced(caplog)
    goal_id = outcomes["confetti.celebrate"]["goal_id"]
    call = next(line for line in lines if line.startswith("call confetti.celebrate("))
    assert f"goal_id='{goal_id}'" in call and "context={" in call
    assert len(call) < 600 and call.endswith("...)")  # a long argument is cut
    assert any(line.startswith("confetti.celebrate returned {'colour': 'gold'} after ") for line in lines)
    raised = next(line for line in lines if line.startswith("confetti.explode raised "))
    assert "boom" in raised and "abc123secret" not in raised  # redacted
    # The core's own receiver is traced like any other.
    assert any(line.startswith("call goalhub.lifecycle.schedule_lifecycle_tasks(") for line in lines)


def test_with_the_switch_off_nothing_is_traced(inline_plugin, fire, monkeypatch, caplog):
    monkeypatch.delenv("GOALHUB_TRACE_RECEIVERS", raising=False)
    inline_plugin(Confetti(), "confetti")
    caplog.set_level(logging.INFO, logger="goalhub.trace")
    assert fire("goal.created", "ConfettiGoal", context={"colour": "gold"})["confetti.celebrate"]["status"] == "ok"
    assert traced(caplog) == []
