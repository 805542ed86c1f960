"""Prometheus metrics (issue 13). Interface only for now: every call records nothing."""

from __future__ import annotations


def goal_created(goal_type: str) -> None:
    """A goal was created (``create_goal`` stored it)."""


def receiver_outcome(plugin: str, receiver: str, status: str, seconds: float | None = None) -> None:
    """A receiver run ended with ``status`` (ok, failed, retrying, timed out, paused, skipped)."""


def activation(lateness_seconds: float) -> None:
    """A goal was activated ``lateness_seconds`` after its ``nbf``."""
