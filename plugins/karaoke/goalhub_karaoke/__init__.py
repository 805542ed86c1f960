"""goalhub_karaoke: karaoke goals and the private-show countdown, as a goalhub plugin.

Each binds its goal to the live session as the session's current one (``karaoke_goal``,
``trigger_private_goal``), and brings its API goal type (``karaoke``, ``trigger_private``).
"""

from goalhub_karaoke.goaltypes import goal_types
from goalhub_karaoke.receivers import bind_karaoke_goal_to_session, bind_trigger_private_goal_to_session

__all__ = ["bind_karaoke_goal_to_session", "bind_trigger_private_goal_to_session", "goal_types"]
__version__ = "0.1.0"
