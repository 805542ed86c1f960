"""The signals goalhub sends, with the seeds' names.

``leaderboards.send("goal.created", **args)`` and ``leaderboards.send("goal.ended", **args)``
announce a goal's start and end; ``livestream.send("goal.added", **args)`` announces a
goal added to a live session. Signals notify: the core (``goalhub.dispatch``) is their
one connected receiver and turns each into the matching hook call, one job per plugin
receiver, so that receivers are isolated, retried and recorded.
"""

from blinker import Namespace

_signals = Namespace()

leaderboards = _signals.signal("features.leaderboards")
livestream = _signals.signal("features.livestream")

# sender name -> (signal, hook name)
EVENTS = {
    "goal.created": (leaderboards, "goal_created"),
    "goal.added": (livestream, "goal_added"),
    "goal.ended": (leaderboards, "goal_ended"),
}
