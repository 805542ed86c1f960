"""goalhub_livestream: the ``goal.added`` receivers of seed 003, for every goal class.

``generate_livestream_feed`` (a ``feed`` item for the session), ``trigger_notify_goal_added``
(a notification to the session's viewers), ``notify_stream_authorized`` (a Pusher event on
``presence-enc-stream-viewer@<streamer_id>.sd.<session_id>``) and
``invalidate_cached_pusher_channel_data`` (a Redis delete of that channel's cached data).
"""

from goalhub_livestream.channels import channel_data_key, stream_viewer_channel
from goalhub_livestream.feed import feed
from goalhub_livestream.receivers import (
    generate_livestream_feed,
    invalidate_cached_pusher_channel_data,
    notify_stream_authorized,
    trigger_notify_goal_added,
)

__all__ = [
    "channel_data_key",
    "feed",
    "generate_livestream_feed",
    "invalidate_cached_pusher_channel_data",
    "notify_stream_authorized",
    "stream_viewer_channel",
    "trigger_notify_goal_added",
]
__version__ = "0.1.0"
