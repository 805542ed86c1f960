"""The livestream feed: one item per goal added to a session, in the ``feed`` collection."""

from __future__ import annotations

from typing import Any

from goalhub import get_database

COLLECTION = "feed"


def feed_item_id(session_id: str, goal_id: str) -> str:
    """A feed item's ``_id``: one item per (session, goal), however often the goal is added."""
    return f"{session_id}:{goal_id}"


def feed(session_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """A session's feed items, newest first."""
    return list(get_database()[COLLECTION].find({"session_id": session_id}).sort("at", -1).limit(limit))
