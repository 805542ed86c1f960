"""A goalhub plugin for scripts/screenshots.py: one receiver that always fails, so the
dashboard has a failed job to show (loaded with GOALHUB_PLUGINS=screenshot_plugin)."""

from __future__ import annotations

import goalhub


# isolated: its own RQ job, which fails (an inline receiver fails inside its goal's job).
@goalhub.receiver("goal.created", "KaraokeGoal", isolated=True)
def push_to_rtc_overlay(goal_id: str) -> None:
    raise ConnectionError("RTC overlay service unreachable (screenshot demo)")
