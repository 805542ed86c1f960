"""A goalhub plugin for scripts/screenshots.py: one receiver that always fails, so the
dashboard has a failed job to show (loaded with GOALHUB_PLUGINS=screenshot_plugin)."""

from __future__ import annotations

import goalhub


@goalhub.receiver("goal.created", "KaraokeGoal")
def push_to_rtc_overlay(goal_id: str) -> None:
    raise ConnectionError("RTC overlay service unreachable (screenshot demo)")
