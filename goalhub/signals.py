"""The signals goalhub sends, with the seeds' names.

``leaderboards.send("goal.created", **args)`` and ``leaderboards.send("goal.ended", **args)``
announce a goal's start and end; ``livestream.send("goal.added", **args)`` announces a
goal added to a live session. Signals notify: the core's delivery (``goalhub.dispatch.deliver``)
is their one connected receiver, connected here when this module is imported, and turns
each into the matching hook call: the event's receivers run inline in the job that sent it,
or as jobs of their own (isolated, retried, sent outside a job), each with a recorded outcome.

The events, their signals and hooks are one table, ``goalhub.hookspecs.EVENTS``; ``EVENTS``
here is that table with the signal objects.
"""

import functools
from typing import Any

from blinker import NamedSignal

from goalhub import dispatch, hookspecs

leaderboards = NamedSignal("features.leaderboards")
livestream = NamedSignal("features.livestream")

# sender name -> (signal, hook name)
EVENTS = {
    event: ({signal.name: signal for signal in (leaderboards, livestream)}[signal_name], hook)
    for event, (signal_name, hook) in hookspecs.EVENTS.items()
}


def _on_signal(event: str, sender: str, **arguments: Any) -> None:
    dispatch.deliver(event, arguments)


# The core's connection to its own signals (weak=False: a partial would vanish otherwise).
for _event, (_signal, _hook) in EVENTS.items():
    _signal.connect(functools.partial(_on_signal, _event), sender=_event, weak=False)
