"""goalhub_exclusive: the exclusive show (seed 000), as a goalhub plugin.

A ``TriggerExclusiveGoal`` counts down; when its countdown has ended the streamer creates
the ``ExclusiveGoal`` ("倒數結束後開始私密直播": the private show starts when the countdown
ends). This plugin brings both API goal types (``trigger_exclusive``, ``exclusive``) and
the two ``goal.created`` receivers that bind them to each other and to the live session.
"""

from goalhub_exclusive.goaltypes import goal_types
from goalhub_exclusive.receivers import (
    bind_exclusive_goal_to_trigger_exclusive_goal,
    bind_exclusive_goals_to_session,
)

__all__ = ["bind_exclusive_goal_to_trigger_exclusive_goal", "bind_exclusive_goals_to_session", "goal_types"]
__version__ = "0.1.0"
