"""The signals goalhub sends, with the seeds' names.

``leaderboards.send("goal.created", **args)`` and ``leaderboards.send("goal.ended", **args)``
announce a goal's start and end; ``livestream.send("goal.added", **args)`` announces a
goal added to a live session. Signals notify: the core (``goalhub.dispatch``) is their
one connected receiver and turns each into the matching hook call, one job per plugin
receiver, so that receivers are isolated, retried and recorded.

Sending connects the core first, so a signal sent before anything imported
``goalhub.dispatch`` (a plugin author's test) is delivered all the same.
"""

from typing import Any

from blinker import NamedSignal


class _CoreSignal(NamedSignal):
    def send(self, *args: Any, **kwargs: Any) -> list[tuple[Any, Any]]:
        import goalhub.dispatch  # noqa: F401  (connects the core to these signals, once)

        return super().send(*args, **kwargs)


leaderboards = _CoreSignal("features.leaderboards")
livestream = _CoreSignal("features.livestream")

# sender name -> (signal, hook name)
EVENTS = {
    "goal.created": (leaderboards, "goal_created"),
    "goal.added": (livestream, "goal_added"),
    "goal.ended": (leaderboards, "goal_ended"),
}
