"""goalhub: the goal engine of a live-streaming platform.

Writing a plugin: a module (usually its own distribution) with receivers, registered
under the ``goalhub`` entry-point group::

    # setup.cfg
    [options.entry_points]
    goalhub =
        confetti = goalhub_confetti

    # goalhub_confetti/__init__.py
    import goalhub

    @goalhub.receiver("goal.created", "ConfettiGoal")
    def record_confetti_goal(goal_id, _cls, conditions):
        if _cls != "ConfettiGoal":
            return
        goalhub.get_database().confetti_goals.update_one(...)

``goalhub new-plugin NAME`` writes such a distribution, with a goal type and tests.

Receivers are called with keyword arguments and may take any subset of the hook's
arguments (see ``goalhub.hookspecs``). Each runs as its own job: it is retried alone
when it raises, never run again after it succeeded, and its outcome is recorded.
Effects must be idempotent (``$set`` rather than ``$push``, deterministic ids).
A plugin adds API goal types through the ``goal_types`` hook (``goalhub.goaltypes``).
"""

from goalhub.goaltypes import Claim, CreateRequest, GoalDraft, GoalType
from goalhub.hookspecs import hookimpl, receiver
from goalhub.store import get_database

# isort: off
from goalhub.goaltypes import SampleRequest  # for GoalType.sample (contract-core)
from goalhub.errors import BadRequest  # for a goal type's prepare (contract-core)
# isort: on

__all__ = ["Claim", "CreateRequest", "GoalDraft", "GoalType", "get_database", "hookimpl", "receiver"]
__all__ += ["SampleRequest"]
__all__ += ["BadRequest"]
__version__ = "0.1.0"
