"""Sessions over the API (goalhub.api.sessions): RTC source ids in their alphabet, and only
the platform names a session's sources (issue 12, rows 2 and 4).
"""

from __future__ import annotations

import pytest
from world import PLATFORM_SERVICE, STREAMER, XSS, bearer, session


@pytest.mark.parametrize("room_id", [XSS, "room 1", "room\"1", "r" * 129, "房間", "a/b", "<b>"])
def test_room_and_task_ids_outside_rtcs_alphabet_are_refused(client, db, room_id):
    for source in ({"room_id": room_id, "task_id": "t1"}, {"room_id": "r1", "task_id": room_id}):
        response = client.post("/sessions", json={"sources": [source]}, headers=bearer(STREAMER, "CREATOR", "PLATFORM"))
        assert response.status_code == 400, response.get_json()
        assert response.get_json()["error"]["code"] == "invalid_source_id"
        assert room_id not in response.get_data(as_text=True)
    assert db.sessions.count_documents({}) == 0


def test_ids_in_rtcs_alphabet_are_accepted(client):
    source = {"room_id": "room-681831d3_A.b@c", "task_id": "snapshot-1"}
    response = client.post("/sessions", json={"sources": [source]}, headers=bearer(STREAMER, "CREATOR", "PLATFORM"))
    assert response.status_code == 201 and response.get_json()["sources"] == [source]


def test_a_streamer_cannot_name_rtc_sources(client, db):
    response = client.post("/sessions", json={"sources": [{"room_id": "someone-elses-room", "task_id": "t"}]},
                           headers=bearer(STREAMER, "CREATOR"))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "sources_need_platform"
    assert db.sessions.count_documents({}) == 0
    assert client.post("/sessions", json={}, headers=bearer(STREAMER, "CREATOR")).status_code == 201


def test_the_platform_sets_a_sessions_sources(client, db):
    sid = session(db)
    sources = {"sources": [{"room_id": "room-9", "task_id": "task-9"}]}
    refused = client.put(f"/sessions/{sid}/sources", json=sources, headers=bearer(STREAMER, "CREATOR"))
    assert refused.status_code == 403 and db.sessions.find_one()["sources"] == []
    done = client.put(f"/sessions/{sid}/sources", json=sources, headers=bearer(PLATFORM_SERVICE, "PLATFORM"))
    assert done.status_code == 200 and done.get_json()["sources"] == sources["sources"]
    ended = session(db, active=False)
    gone = client.put(f"/sessions/{ended}/sources", json=sources, headers=bearer(PLATFORM_SERVICE, "PLATFORM"))
    assert gone.status_code == 409


def test_the_snapshot_client_refuses_a_stored_id_outside_the_alphabet():
    pytest.importorskip("goalhub_snapshot")
    from goalhub_snapshot import rtc

    with pytest.raises(ValueError) as caught:
        rtc.build_request(rtc.STOP, XSS, "t")
    assert "<img" not in str(caught.value)

