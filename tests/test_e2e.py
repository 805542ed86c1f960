"""The seeds' flows end to end, the way a client and an operator see them: HTTP requests to
a real HTTP server (waitress) started by the test, real forking RQ worker and rq-scheduler
processes, the embedded store and the real installed plugins; out come the documents, the
receiver outcomes and the outbound records.

Seed 000: session -> trigger_exclusive countdown -> its end -> the exclusive goal, created
with seed 000's own request -> bindings, StopSnapshot per RTC source -> end -> StartSnapshot.
Seed 003: session -> show_funding countdown -> its end -> the show goal -> bindings ->
goal.added and its four receivers.
"""

from __future__ import annotations

import time
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import api_support
import pytest
import requests
from bson import ObjectId
from world import SEED_000_HEADERS

from goalhub.auth import mint_token
from goalhub.outbound import records
from goalhub.store import get_database

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PLUGINS = ("exclusive", "show", "karaoke", "snapshot", "analytics", "livestream")
STREAMER = "6800a9073e0c346531958b03"  # the sub of seed 000's token
FINAL = {"ok", "failed", "skipped"}
GOAL_CREATED_RECEIVERS = {
    "bind_karaoke_goal_to_session", "bind_trigger_private_goal_to_session", "bind_show_goal_to_funding_goal",
    "bind_show_goals_to_session", "track_goals", "bind_exclusive_goal_to_trigger_exclusive_goal",
    "bind_exclusive_goals_to_session", "snapshot_rtc_sources", "schedule_lifecycle_tasks",
}
GOAL_ADDED_RECEIVERS = {"generate_livestream_feed", "trigger_notify_goal_added", "notify_stream_authorized",
                        "invalidate_cached_pusher_channel_data"}



def installed_plugins() -> set[str]:
    return {entry_point.name for entry_point in metadata.entry_points(group="goalhub")}


@pytest.fixture
def stack(tmp_path, use_plugins):
    missing = sorted(set(PLUGINS) - installed_plugins())
    if missing:
        pytest.skip(f"plugins not installed: {', '.join(missing)}")
    use_plugins(*PLUGINS)  # this process and, through the environment, every child
    env = api_support.process_env()
    processes = [
        api_support.ChildProcess("worker", "from goalhub.worker import run_worker; run_worker()", env, tmp_path),
        api_support.ChildProcess("scheduler", "from goalhub.scheduler import run_scheduler; run_scheduler()", env, tmp_path),
    ]
    try:
        server, base = api_support.start_api(env, tmp_path, workers=2, threads=4)
        processes.append(server)
        token = mint_token(STREAMER, ["PAID", "HUMAN", "CREATOR", "PLATFORM"])
        yield SimpleNamespace(base=base, token=token, auth={"Authorization": f"Bearer {token}"})
    finally:
        for process in processes:
            process.stop()
        for process in processes:  # shown by pytest only when the test failed
            print(f"--- {process.name} ---\n{process.output()}")


def get(stack, path: str) -> requests.Response:
    return requests.get(f"{stack.base}{path}", headers=stack.auth, timeout=10)


def post(stack, path: str, body: dict[str, Any] | None = None, **headers: str) -> requests.Response:
    return requests.post(f"{stack.base}{path}", json=body, headers={**stack.auth, **headers}, timeout=10)


def settled(stack, goal_id: str, events: dict[str, set[str]], **fields: Any) -> dict[str, Any]:
    """Poll ``GET /goals/<id>`` until every named receiver of every event has a final outcome
    and the goal has ``fields`` (a value of ``...`` means only "present")."""

    def check() -> dict[str, Any] | None:
        response = get(stack, f"/goals/{goal_id}")
        if response.status_code == 404:
            return None  # create_goal has not run yet
        assert response.status_code == 200, response.text
        goal = response.json()
        for name, value in fields.items():
            if name not in goal or (value is not ... and goal[name] != value):
                return None
        for event, names in events.items():
            outcomes = {o["receiver"]: o["status"] for o in goal["outcomes"] if o["event"] == event}
            if not names <= set(outcomes) or not set(outcomes.values()) <= FINAL:
                return None
        return goal

    return api_support.wait_for(check, timeout=60, interval=0.2, what=f"goal {goal_id} to settle")


def statuses(goal: dict[str, Any], event: str) -> dict[str, str]:
    return {o["receiver"]: o["status"] for o in goal["outcomes"] if o["event"] == event}


def start_session(stack, sources: list[dict[str, str]]) -> dict[str, Any]:
    response = post(stack, "/sessions", {"sources": sources})
    assert response.status_code == 201, response.text
    return response.json()


def countdown(stack, goal_type: str, session_id: str, target: int, seconds: float = 1.5) -> str:
    """A countdown goal (trigger_exclusive, show_funding) that ends ``seconds`` from now; waits for its end."""
    now = time.time()
    response = post(stack, f"/goals?type={goal_type}",
                    {"levels": [{"target": target}], "context": {"session_id": session_id},
                     "nbf": round(now, 3), "exp": round(now + seconds, 3)})
    assert response.status_code == 202, response.text
    goal_id = response.json()["goal_id"]
    # Ended at exp by the scheduler and the worker, not by the test.
    settled(stack, goal_id, {"goal.created": GOAL_CREATED_RECEIVERS}, end_reason="expired", active=False)
    return goal_id


def test_seed_000_exclusive_flow(stack):
    sources = [{"room_id": "room-681831d3", "task_id": "task-1"}, {"room_id": "room-681831d3", "task_id": "task-2"}]
    session = start_session(stack, sources)
    session_id = session["_id"]
    trigger_id = countdown(stack, "trigger_exclusive", session_id, target=60)

    # Seed 000's request, byte for byte but for the ids: query with lang, float nbf, its headers.
    body = ('{"levels":[{"target":300}],"context":{"session_id":"%s","trigger_exclusive_goal_id":"%s"},'  # noqa: UP031
            '"nbf":1746416602.371}' % (session_id, trigger_id)).encode()
    response = requests.post(f"{stack.base}/goals?lang=zh-hant&type=exclusive", data=body, timeout=10,
                             headers={**SEED_000_HEADERS, "content-type": "application/json", "authorization": f"Bearer {stack.token}"})
    assert response.status_code == 202, response.text
    goal_id = response.json()["goal_id"]
    assert response.headers["Location"] == f"/goals/{goal_id}"
    # The browser retrying the same request gets the same goal, and nothing new is created.
    retry = requests.post(f"{stack.base}/goals?lang=zh-hant&type=exclusive", data=body, timeout=10,
                          headers={**SEED_000_HEADERS, "content-type": "application/json", "authorization": f"Bearer {stack.token}"})
    assert (retry.status_code, retry.json()) == (202, {"goal_id": goal_id})

    goal = settled(stack, goal_id, {"goal.created": GOAL_CREATED_RECEIVERS})
    # create_goal's document, as seed 000 lists it.
    assert goal["_cls"] == "ExclusiveGoal"
    assert goal["active"] is True
    assert goal["conditions"] == {"session_id": session_id, "exclusive_to": trigger_id}
    assert goal["levels"] == [{"target": 300}]
    assert goal["nbf"] == 1746416602.371 and goal["exp"] is None
    assert goal["context"] == {"type": "exclusive", "exclusive_to": trigger_id, "session_id": session_id,
                               "trigger_exclusive_goal_id": trigger_id}
    assert goal["metadata"] == {"user_id": STREAMER}
    # Seed 000's receivers: the "return" ones skip, the rest act and succeed.
    assert statuses(goal, "goal.created") == {
        "bind_karaoke_goal_to_session": "skipped",
        "bind_trigger_private_goal_to_session": "skipped",
        "bind_show_goal_to_funding_goal": "skipped",
        "bind_show_goals_to_session": "skipped",
        "track_goals": "ok",
        "bind_exclusive_goal_to_trigger_exclusive_goal": "ok",
        "bind_exclusive_goals_to_session": "ok",
        "snapshot_rtc_sources": "ok",
        "schedule_lifecycle_tasks": "ok",
    }
    # Bindings: the trigger names its exclusive goal; the session pairs them under exclusive_to.
    trigger = get(stack, f"/goals/{trigger_id}").json()
    assert trigger["context"]["exclusive_goal_id"] == goal_id
    assert get(stack, f"/sessions/{session_id}").json()["exclusive_goal_pairs"] == {
        trigger_id: {"trigger_exclusive_goal": trigger_id, "exclusive_goal": goal_id}
    }
    assert get_database().goals.count_documents({"_cls": "ExclusiveGoal"}) == 1
    # "Disable snapshot on exclusive start": one StopSnapshot(RoomId, TaskId) per source.
    rtc = [r["payload"] for r in records("rtc", goal_id)]
    assert [(p["action"], p["body"]["RoomId"], p["body"]["TaskId"]) for p in rtc] == [
        ("StopSnapshot", s["room_id"], s["task_id"]) for s in sources
    ]
    # track_goals queues the analytics event as a job of its own.
    api_support.wait_for(lambda: records("analytics", goal_id), what="the analytics event")
    assert len(records("analytics", goal_id)) == 1

    # "... enable at end": ending the goal sends goal.ended, and StartSnapshot follows.
    ended = post(stack, f"/goals/{goal_id}/end")
    assert ended.status_code == 202, ended.text
    goal = settled(stack, goal_id, {"goal.ended": {"resume_snapshot_rtc_sources"}}, end_reason="ended")
    assert goal["active"] is False and statuses(goal, "goal.ended")["resume_snapshot_rtc_sources"] == "ok"
    rtc = [r["payload"] for r in records("rtc", goal_id)]
    assert [p["action"] for p in rtc] == ["StopSnapshot", "StopSnapshot", "StartSnapshot", "StartSnapshot"]
    assert post(stack, f"/goals/{goal_id}/end").status_code == 409


def test_seed_003_show_flow(stack):
    session = start_session(stack, [{"room_id": "room-67ceabec", "task_id": "task-1"}])
    session_id = session["_id"]
    funding_id = countdown(stack, "show_funding", session_id, target=500)

    now = time.time()
    response = post(stack, "/goals?goal_type=show",
                    {"levels": [{"target": 100}, {"target": 300}],
                     "context": {"funding_goal_id": funding_id, "session_id": session_id},
                     "nbf": round(now, 3), "exp": round(now + 3600, 3)})
    assert response.status_code == 202, response.text
    show_id = response.json()["goal_id"]

    goal = settled(stack, show_id, {"goal.created": GOAL_CREATED_RECEIVERS, "goal.added": GOAL_ADDED_RECEIVERS})
    assert goal["_cls"] == "ShowGoal" and goal["active"] is True
    assert goal["conditions"] == {"session_id": session_id}
    assert goal["context"] == {"type": "show", "funding_goal_id": funding_id, "session_id": session_id}
    assert goal["metadata"] == {"user_id": STREAMER}
    assert goal["levels"] == [{"target": 100}, {"target": 300}]
    # Seed 003's goal.created receivers.
    assert statuses(goal, "goal.created") == {
        "schedule_lifecycle_tasks": "skipped",
        "bind_karaoke_goal_to_session": "skipped",
        "bind_exclusive_goal_to_trigger_exclusive_goal": "skipped",
        "bind_exclusive_goals_to_session": "skipped",
        "bind_trigger_private_goal_to_session": "skipped",
        "snapshot_rtc_sources": "skipped",
        "track_goals": "ok",
        "bind_show_goal_to_funding_goal": "ok",
        "bind_show_goals_to_session": "ok",
    }
    # ... and goal.added's four, all done.
    assert statuses(goal, "goal.added") == dict.fromkeys(GOAL_ADDED_RECEIVERS, "ok")

    # Bindings: the funding goal names its show goal; the session pairs them.
    assert get(stack, f"/goals/{funding_id}").json()["context"]["show_goal_id"] == show_id
    assert get(stack, f"/sessions/{session_id}").json()["show_goal_pairs"] == [
        {"funding_goal": funding_id, "show_goal": show_id}
    ]
    # goal.added's effects: a feed item, a viewer notification, the presence-channel event.
    db = get_database()
    assert db.feed.find_one({"_id": f"{session_id}:{show_id}"})["goal_id"] == show_id
    assert [r["payload"]["goal_id"] for r in records("notification", show_id)] == [show_id]
    [pusher] = records("pusher", show_id)
    assert pusher["payload"]["channel"] == f"presence-enc-stream-viewer@{STREAMER}.sd.{session_id}"
    assert pusher["status"] == "sent"
    # No RTC call for a show.
    assert records("rtc", show_id) == []

    # A second show goal on the same funding goal is refused, and nothing new is queued.
    again = post(stack, "/goals?goal_type=show",
                 {"levels": [{"target": 100}], "context": {"funding_goal_id": funding_id, "session_id": session_id}})
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_bound"
    assert db.goals.count_documents({"_cls": "ShowGoal"}) == 1


def test_ending_the_session_ends_its_goals_through_the_workers(stack):
    session_id = start_session(stack, [{"room_id": "r", "task_id": "t"}])["_id"]
    now = time.time()
    response = post(stack, "/goals?type=trigger_exclusive",
                    {"levels": [{"target": 60}], "context": {"session_id": session_id},
                     "nbf": round(now + 3600, 3), "exp": round(now + 7200, 3)})
    goal_id = response.json()["goal_id"]
    settled(stack, goal_id, {"goal.created": GOAL_CREATED_RECEIVERS})
    ended = post(stack, f"/sessions/{session_id}/end")
    assert ended.status_code == 200 and ended.json()["ending_goals"] == [goal_id]
    goal = settled(stack, goal_id, {}, end_reason="session_ended")
    assert goal["active"] is False
    # The pending activation at nbf was cancelled with it.
    scheduled = get_database().goals.find_one({"_id": ObjectId(goal_id)})
    assert "activated_at" not in scheduled
