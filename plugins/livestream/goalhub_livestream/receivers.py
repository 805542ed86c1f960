"""The four ``goal.added`` receivers of seed 003, for every goal class the event carries.

``goal.added`` (blinker ``features.livestream``) says a goal was added to a live session.
Each effect is idempotent: the feed item has a deterministic ``_id``, the notification and
the Pusher event go through ``send_once``, and deleting a cache key twice deletes it once.
"""

from __future__ import annotations

import time
from typing import Any

import goalhub
from goalhub_livestream import channels, notify, settings
from goalhub_livestream.feed import COLLECTION, feed_item_id

# Databases whose feed index was ensured by this process.
_indexed: set[int] = set()


@goalhub.receiver("goal.added")
def generate_livestream_feed(
    goal_id: str, _cls: str, context: dict[str, Any], session_id: str, streamer_id: str
) -> dict[str, Any]:
    """A feed item for the session: the goal was added."""
    db = goalhub.get_database()
    if id(db) not in _indexed:
        db[COLLECTION].create_index("session_id")
        _indexed.add(id(db))
    _id = feed_item_id(session_id, goal_id)
    item = {
        "session_id": session_id,
        "goal_id": goal_id,
        "_cls": _cls,
        "streamer_id": streamer_id,
        "context": context,
        "at": time.time(),
    }
    result = db[COLLECTION].update_one({"_id": _id}, {"$setOnInsert": item}, upsert=True)
    return {"feed_item_id": _id, "created": result.upserted_id is not None}


@goalhub.receiver("goal.added")
def trigger_notify_goal_added(
    goal_id: str, _cls: str, context: dict[str, Any], session_id: str, streamer_id: str
) -> dict[str, Any]:
    """A notification to the session's viewers (the notification service fans it out)."""
    notification = {
        "type": "goal.added",
        "audience": {"session_id": session_id, "role": "viewer"},
        "session_id": session_id,
        "streamer_id": streamer_id,
        "goal_id": goal_id,
        "_cls": _cls,
        "context": context,
    }
    key = f"goal.added:{goal_id}:{session_id}"
    record = notify.notify_once(key, notification, goal_id=goal_id)
    return {"key": key, "transport": record["transport"], "duplicate": record["duplicate"]}


@goalhub.receiver("goal.added")
def notify_stream_authorized(
    goal_id: str, _cls: str, context: dict[str, Any], session_id: str, streamer_id: str
) -> dict[str, Any]:
    """An event on the session's viewer presence channel: the stream's authorization changed."""
    channel = channels.stream_viewer_channel(streamer_id, session_id)
    event = settings.stream_authorized_event()
    data = {"goal_id": goal_id, "_cls": _cls, "session_id": session_id, "streamer_id": streamer_id, "context": context}
    record = channels.trigger_once(channel, event, data, key=f"{event}:{goal_id}:{channel}", goal_id=goal_id)
    return {"channel": channel, "event": event, "transport": record["transport"], "duplicate": record["duplicate"]}


@goalhub.receiver("goal.added")
def invalidate_cached_pusher_channel_data(session_id: str, streamer_id: str) -> dict[str, Any]:
    """Drop the cached channel data of the viewer channel, so the next authorization reads it afresh."""
    key = channels.channel_data_key(channels.stream_viewer_channel(streamer_id, session_id))
    return {"key": key, "deleted": goalhub.get_redis().delete(key)}
