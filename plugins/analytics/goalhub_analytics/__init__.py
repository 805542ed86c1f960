"""goalhub_analytics: every created goal becomes one analytics event (seed 003's ``track_goals``).

Events are recorded in the ``outbound`` collection (kind ``analytics``; read them with
``goalhub_analytics.events()``) and POSTed to ``GOALHUB_ANALYTICS_SINK`` when it is set.
"""

from goalhub_analytics.receivers import track_goals
from goalhub_analytics.tasks import events

__all__ = ["events", "track_goals"]
__version__ = "0.1.0"
