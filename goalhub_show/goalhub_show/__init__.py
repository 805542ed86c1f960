"""goalhub_show: the show of seed 003, as a goalhub plugin.

A ``ShowFundingGoal`` counts down while viewers fund the show; the streamer then creates
the ``ShowGoal`` bound to it. This plugin brings both API goal types (``show_funding``,
``show``) and the two ``goal.created`` receivers that bind the show goal to its funding
goal and both to the live session, announcing each on ``goal.added``.
"""

from goalhub_show.goaltypes import goal_types
from goalhub_show.receivers import bind_show_goal_to_funding_goal, bind_show_goals_to_session

__all__ = ["bind_show_goal_to_funding_goal", "bind_show_goals_to_session", "goal_types"]
__version__ = "0.1.0"
