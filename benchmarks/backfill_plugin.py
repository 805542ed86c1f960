"""The receiver ``bench_backfill.py`` backfills: installed after the goals exist, acts on every
goal and does nothing, so the figures are goalhub's cost of a backfill, not the receiver's."""

import goalhub


@goalhub.receiver("goal.created")
def noted(goal_id):
    return None
