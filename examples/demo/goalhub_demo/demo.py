"""``make demo`` (``python -m goalhub_demo``): the seeds' two flows, end to end, on the real processes.

In a fresh ``GOALHUB_HOME`` (``.goalhub/demo-<time>``) on embedded defaults, it starts the
API server, an RQ worker and the rq-scheduler (the supervisor of ``goalhub up``), mints a
token for a new streamer and drives everything through HTTP:

1. the streamer goes live with two RTC sources (``POST /sessions``);
2. a trigger-exclusive countdown is created, activated at its ``nbf`` and ended at its ``exp``;
3. the exclusive goal is created exactly as in seed 000 (its query, headers and body);
4. a show-funding countdown is created and ends;
5. the show goal is created as in seed 003 (``?goal_type=show``).

It prints a timeline (requests, signals, receiver outcomes, RTC calls, the feed item and
notification, activations), checks the final documents against the seeds, stops everything
and exits 0; whatever did not happen is listed and the exit status is 1.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import requests
from bson import ObjectId
from rq.job import Job

from goalhub import outbound
from goalhub.auth import mint_token
from goalhub.connection import embedded_redis, get_redis
from goalhub.queues import job_id
from goalhub.store import get_database
from goalhub.supervisor import Supervisor, goalhub_processes

# Seed 000's request headers, as the browser sent them (the host and token are ours).
SEED_000_HEADERS = {
    "accept": "*/*",
    "accept-language": "zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7",
    "cache-control": "no-cache",
    "content-type": "application/json",
    "origin": "https://swag.live",
    "pragma": "no-cache",
    "priority": "u=1, i",
    "referer": "https://swag.live/",
    "sec-ch-ua": '"Google Chrome";v="135", "Not-A.Brand";v="8", "Chromium";v="135"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"macOS"',
    "sec-fetch-dest": "empty",
    "sec-fetch-mode": "cors",
    "sec-fetch-site": "same-site",
    "user-agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/135.0.0.0 Safari/537.36",
    "x-client-id": "ac9cd42b-2982-430f-bdd0-18b0ce505d0a",
    "x-request-id": "b3c220d5-02de-4a9b-91ae-0bd9643af014",
    "x-session-id": "9045460d-4eda-4089-b621-2acc22ed1d50",
}
# What each goal class's receivers must do (SPEC "Signals and receivers", seeds 000 and 003).
ACTING = {
    ("goal.created", "TriggerExclusiveGoal"): {
        "track_goals", "bind_exclusive_goals_to_session", "schedule_lifecycle_tasks"},
    ("goal.created", "ExclusiveGoal"): {
        "track_goals", "bind_exclusive_goal_to_trigger_exclusive_goal", "bind_exclusive_goals_to_session",
        "snapshot_rtc_sources", "schedule_lifecycle_tasks"},
    ("goal.created", "ShowFundingGoal"): {"track_goals", "bind_show_goals_to_session", "schedule_lifecycle_tasks"},
    ("goal.created", "ShowGoal"): {"track_goals", "bind_show_goal_to_funding_goal", "bind_show_goals_to_session"},
}  # fmt: skip
SKIPPING = {
    ("goal.created", "ExclusiveGoal"): {
        "bind_karaoke_goal_to_session", "bind_trigger_private_goal_to_session",
        "bind_show_goal_to_funding_goal", "bind_show_goals_to_session"},
    ("goal.created", "ShowGoal"): {
        "schedule_lifecycle_tasks", "bind_karaoke_goal_to_session", "bind_exclusive_goal_to_trigger_exclusive_goal",
        "bind_exclusive_goals_to_session", "bind_trigger_private_goal_to_session", "snapshot_rtc_sources"},
}  # fmt: skip
GOAL_ADDED = {
    "generate_livestream_feed",
    "trigger_notify_goal_added",
    "notify_stream_authorized",
    "invalidate_cached_pusher_channel_data",
}
SIGNAL_NAMES = {"goal.created": "features.leaderboards", "goal.added": "features.livestream",
                "goal.ended": "features.leaderboards"}  # fmt: skip
UNFINISHED = {"queued", "running", "retrying", "timed out"}
COLOURS = {"http": "cyan", "signal": "magenta", "ok": "green", "skipped": "bright_black", "failed": "red",
           "rtc": "yellow", "analytics": "yellow", "feed": "yellow", "notify": "yellow", "pusher": "yellow", "lifecycle": "blue",
           "check": "green", "missing": "red"}  # fmt: skip


class Missing(Exception):
    """A step of the flow that did not happen."""


class Timeline:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, kind: str, text: str) -> None:
        elapsed = time.monotonic() - self.started
        label = click.style(f"{kind:<9}", fg=COLOURS.get(kind), bold=kind in ("http", "missing"))
        click.echo(f"{elapsed:6.2f}s  {label} {text}")

    def section(self, title: str) -> None:
        click.echo("\n" + click.style(f"== {title}", bold=True))


class Demo:
    def __init__(self, base: str, token: str, streamer_id: str, say: Timeline, alive: Callable[[], None]) -> None:
        self.base = base
        self.token = token
        self.streamer_id = streamer_id
        self.say = say
        self.alive = alive  # raises Missing when a process of the installation died
        self.http = requests.Session()
        self.http.headers["authorization"] = f"Bearer {token}"
        self.shown: set[str] = set()
        self.missing: list[str] = []
        self.ids: dict[str, str] = {}

    # -- HTTP and waiting ------------------------------------------------------------

    def call(self, method: str, path: str, *, expect: int, quiet: bool = False, **kwargs: Any) -> dict[str, Any]:
        clock = time.perf_counter()
        response = self.http.request(method, self.base + path, timeout=10, **kwargs)
        took = (time.perf_counter() - clock) * 1000
        body = response.json() if response.content else {}
        if not quiet or response.status_code != expect:
            summary = body.get("goal_id") or body.get("_id") or json.dumps(body)[:120]
            self.say("http", f"{method} {path} -> {response.status_code} ({took:.0f} ms) {summary}")
        if response.status_code != expect:
            raise Missing(f"{method} {path} answered {response.status_code}, not {expect}: {body}")
        return body

    def wait(self, what: str, probe: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            value = probe()
            if value:
                return value
            if time.monotonic() > deadline:
                raise Missing(f"{what} did not happen within {timeout:g}s")
            time.sleep(0.05)

    def goal(self, goal_id: str) -> dict[str, Any]:
        return self.call("GET", f"/goals/{goal_id}", expect=200, quiet=True)

    def session(self, session_id: str) -> dict[str, Any]:
        return self.call("GET", f"/sessions/{session_id}", expect=200, quiet=True)

    def follow(self, goal_id: str, events: list[str], timeout: float = 15.0) -> dict[str, Any]:
        """Wait until the goal exists and every receiver of ``events`` has finished; print each outcome."""

        def settled() -> dict[str, Any] | None:
            response = self.http.get(f"{self.base}/goals/{goal_id}", timeout=10)
            if response.status_code == 404:
                return None  # create_goal has not run yet
            goal = response.json()
            outcomes = [o for o in goal.get("outcomes", []) if o["event"] in events]
            self._show(outcomes)
            # An event lists its receivers once all their outcome records are written.
            delivered = {e["event"]: len(e["receivers"]) for e in goal.get("events", [])}
            written = all(
                event in delivered and sum(o["event"] == event for o in outcomes) >= delivered[event]
                for event in events
            )
            if written and not any(o["status"] in UNFINISHED for o in outcomes):
                return goal
            return None

        return self.wait(f"{', '.join(events)} receivers of goal {goal_id}", settled, timeout)

    def _show(self, outcomes: list[dict[str, Any]]) -> None:
        for o in outcomes:
            goal_id = o["_id"].split("|")[0].split(":")[1]
            if f"{o['event']}:{goal_id}" not in self.shown:
                self.shown.add(f"{o['event']}:{goal_id}")
                self.say("signal", f"{SIGNAL_NAMES[o['event']]} sender={o['event']} goal {goal_id}")
        for o in outcomes:
            if o["status"] in UNFINISHED or o["_id"] in self.shown:
                continue
            self.shown.add(o["_id"])
            took = f" {o['duration_ms']:.1f} ms" if o.get("duration_ms") is not None else ""
            error = f"  {o['error']}" if o.get("error") else ""
            self.say(o["status"], f"  {o['event']} -> {o['plugin']}.{o['receiver']}{took}{error}")

    # -- checks ----------------------------------------------------------------------

    def expect(self, what: str, actual: Any, wanted: Any) -> None:
        if actual != wanted:
            self.missing.append(f"{what}: expected {wanted!r}, found {actual!r}")

    def expect_receivers(self, goal: dict[str, Any], event: str, cls: str) -> None:
        outcomes = {o["receiver"]: o["status"] for o in goal["outcomes"] if o["event"] == event}
        for name in sorted(ACTING.get((event, cls), set()) | (GOAL_ADDED if event == "goal.added" else set())):
            self.expect(f"{cls} {event} receiver {name}", outcomes.get(name), "ok")
        for name in sorted(SKIPPING.get((event, cls), set())):
            self.expect(f"{cls} {event} receiver {name}", outcomes.get(name), "skipped")
        for name, status in outcomes.items():
            if status == "failed":
                self.missing.append(f"{cls} {event} receiver {name} failed")

    # -- the flows -------------------------------------------------------------------

    def go_live(self) -> str:
        self.say.section("A streamer goes live with two RTC sources")
        self.sources = [{"room_id": f"room-{self.streamer_id[-6:]}", "task_id": f"snapshot-{n}"} for n in (1, 2)]
        session = self.call("POST", "/sessions", json={"sources": self.sources}, expect=201)
        self.ids["session"] = session["_id"]
        return session["_id"]

    def trigger_exclusive_countdown(self, session_id: str) -> str:
        self.say.section("A trigger-exclusive countdown: created, active at nbf, ended at exp")
        now = time.time()
        body = {"levels": [{"target": 60}], "context": {"session_id": session_id}, "nbf": now + 1.0, "exp": now + 2.5}
        goal_id = self.call("POST", "/goals?type=trigger_exclusive", json=body, expect=202)["goal_id"]
        self.ids["trigger"] = goal_id
        goal = self.follow(goal_id, ["goal.created"])
        if time.time() < goal["nbf"]:  # fetched before now, so before nbf: a countdown not yet active
            self.expect("trigger goal inactive before its nbf", goal["active"], False)
        goal = self.wait("the trigger goal's activation at nbf", lambda: (g := self.goal(goal_id))["active"] and g)
        self.say("lifecycle", f"activate_goal: TriggerExclusiveGoal active {_late(goal['activated_at'], goal['nbf'])}")
        goal = self.wait("the trigger goal's end at exp", lambda: "ended_at" in (g := self.goal(goal_id)) and g)
        self.say("lifecycle", f"end_goal: countdown ended {_late(goal['ended_at'], goal['exp'])} ({goal['end_reason']})")
        self.follow(goal_id, ["goal.ended"])
        return goal_id

    def exclusive_goal(self, session_id: str, trigger_id: str) -> str:
        self.say.section("Seed 000: POST /goals?lang=zh-hant&type=exclusive, as the browser sent it")
        nbf = round(time.time() + 1.0, 3)  # a float with milliseconds, like 1746416602.371
        raw = json.dumps(
            {"levels": [{"target": 300}], "context": {"session_id": session_id, "trigger_exclusive_goal_id": trigger_id},
             "nbf": nbf},
            separators=(",", ":"),
        )  # fmt: skip
        headers = {**SEED_000_HEADERS, "authorization": f"Bearer {self.token}", "x-request-id": str(uuid.uuid4())}
        goal_id = self.call("POST", "/goals?lang=zh-hant&type=exclusive", data=raw, headers=headers, expect=202)["goal_id"]
        self.ids["exclusive"] = goal_id
        self.exclusive_nbf = nbf
        self.follow(goal_id, ["goal.created"])
        calls = self.wait("the RTC StopSnapshot calls", lambda: outbound.records("rtc", goal_id))
        for record in calls:
            body = record["payload"]["body"]
            self.say("rtc", f"  {record['payload']['action']}(RoomId={body['RoomId']}, TaskId={body['TaskId']}) "
                            f"[{record['transport']}, {record['status']}]")  # fmt: skip
        self.rtc_calls = calls
        # At eta = nbf the scheduler runs activate_goal; the goal is active already: nothing to update.
        def activation() -> Job | None:
            job = Job.fetch_many([job_id("activate", goal_id)], connection=get_redis())[0]
            # RQ writes the finished status and ended_at in separate steps: both, or not yet.
            return job if job is not None and job.is_finished and job.ended_at is not None else None

        job = self.wait("activate_goal at the exclusive goal's nbf", activation)
        self.activation_result = job.return_value()
        verdict = "updated the goal" if self.activation_result else "already active, nothing to update (returned)"
        self.say("lifecycle", f"activate_goal at nbf {_late(job.ended_at.timestamp(), nbf)}: ExclusiveGoal {verdict}")
        return goal_id

    def show_funding_countdown(self, session_id: str) -> str:
        self.say.section("A show-funding countdown: created and ended")
        now = time.time()
        body = {"levels": [{"target": 500}], "context": {"session_id": session_id}, "nbf": now, "exp": now + 2.0}
        goal_id = self.call("POST", "/goals?type=show_funding", json=body, expect=202)["goal_id"]
        self.ids["funding"] = goal_id
        self.follow(goal_id, ["goal.created", "goal.added"])
        goal = self.wait("the funding goal's end at exp", lambda: "ended_at" in (g := self.goal(goal_id)) and g)
        self.say("lifecycle", f"end_goal: funding ended {_late(goal['ended_at'], goal['exp'])} ({goal['end_reason']})")
        self.follow(goal_id, ["goal.ended"])
        return goal_id

    def show_goal(self, session_id: str, funding_id: str) -> str:
        self.say.section("Seed 003: POST /goals?goal_type=show after the funding countdown")
        now = time.time()
        body = {"levels": [{"target": 1000}], "context": {"funding_goal_id": funding_id, "session_id": session_id},
                "nbf": now, "exp": now + 600}  # fmt: skip
        goal_id = self.call("POST", "/goals?goal_type=show", json=body, expect=202)["goal_id"]
        self.ids["show"] = goal_id
        self.follow(goal_id, ["goal.created", "goal.added"])
        item = get_database().feed.find_one({"_id": f"{session_id}:{goal_id}"})
        if item:
            self.say("feed", f"  feed item {item['_id']} ({item['_cls']})")
        for kind, label in (("notification", "notify"), ("pusher", "pusher")):
            for record in outbound.records(kind, goal_id):
                payload = record["payload"]
                what = f"{payload['channel']} {payload['event']}" if kind == "pusher" else json.dumps(payload["audience"])
                self.say(label, f"  {kind} {what} [{record['transport']}, {record['status']}]")
        self.feed_item = item
        return goal_id

    # -- the final documents ---------------------------------------------------------

    def check(self) -> None:
        self.say.section("The final documents, against the seeds")
        ids = self.ids
        session = self.session(ids["session"])
        trigger, exclusive = self.goal(ids["trigger"]), self.goal(ids["exclusive"])
        funding, show = self.goal(ids["funding"]), self.goal(ids["show"])
        streamer, sid = self.streamer_id, ids["session"]

        self.expect("trigger goal _cls", trigger["_cls"], "TriggerExclusiveGoal")
        self.expect("trigger goal ended at exp", (trigger["active"], trigger.get("end_reason")), (False, "expired"))
        self.expect("trigger goal activated at or after nbf", trigger.get("activated_at", 0) >= trigger["nbf"], True)
        self.expect("trigger goal context.exclusive_goal_id", trigger["context"].get("exclusive_goal_id"), ids["exclusive"])
        exclusive_to = trigger["conditions"]["exclusive_to"]

        # Seed 000, "Task create_goal".
        self.expect("exclusive goal _cls", exclusive["_cls"], "ExclusiveGoal")
        self.expect("exclusive goal active", exclusive["active"], True)
        self.expect("exclusive goal conditions", exclusive["conditions"], {"session_id": sid, "exclusive_to": exclusive_to})
        self.expect("exclusive goal levels", exclusive["levels"], [{"target": 300}])
        self.expect("exclusive goal nbf", exclusive["nbf"], self.exclusive_nbf)
        self.expect("exclusive goal exp", exclusive["exp"], None)
        self.expect("exclusive goal context", exclusive["context"], {
            "type": "exclusive", "exclusive_to": exclusive_to, "session_id": sid,
            "trigger_exclusive_goal_id": ids["trigger"]})  # fmt: skip
        self.expect("exclusive goal metadata", exclusive["metadata"], {"user_id": streamer})
        self.expect("activate_goal at nbf left the active exclusive goal alone", self.activation_result, False)
        self.expect("exclusive goal not re-activated", "activated_at" in exclusive, False)
        self.expect("session exclusive_goal_pairs", session["exclusive_goal_pairs"].get(exclusive_to),
                    {"trigger_exclusive_goal": ids["trigger"], "exclusive_goal": ids["exclusive"]})  # fmt: skip
        stops = sorted((r["payload"]["action"], r["payload"]["body"]["RoomId"], r["payload"]["body"]["TaskId"])
                       for r in self.rtc_calls)  # fmt: skip
        self.expect("RTC StopSnapshot per source", stops,
                    sorted(("StopSnapshot", s["room_id"], s["task_id"]) for s in self.sources))  # fmt: skip

        # Seed 003.
        self.expect("funding goal ended at exp", (funding["active"], funding.get("end_reason")), (False, "expired"))
        self.expect("funding goal context.show_goal_id", funding["context"].get("show_goal_id"), ids["show"])
        self.expect("show goal _cls", show["_cls"], "ShowGoal")
        self.expect("show goal active", show["active"], True)
        self.expect("show goal conditions", show["conditions"], {"session_id": sid})
        self.expect("show goal context", show["context"],
                    {"type": "show", "funding_goal_id": ids["funding"], "session_id": sid})  # fmt: skip
        self.expect("show goal metadata", show["metadata"], {"user_id": streamer})
        self.expect("session show_goal_pairs", session["show_goal_pairs"],
                    [{"funding_goal": ids["funding"], "show_goal": ids["show"]}])  # fmt: skip
        self.expect("feed item for the show goal", bool(self.feed_item), True)
        channel = f"presence-enc-stream-viewer@{streamer}.sd.{sid}"
        channels = [r["payload"]["channel"] for r in outbound.records("pusher", ids["show"])]
        self.expect("stream-authorized event on the viewer presence channel", channels, [channel])
        self.expect("one viewer notification for the show goal", len(outbound.records("notification", ids["show"])), 1)

        for goal, cls in ((trigger, "TriggerExclusiveGoal"), (exclusive, "ExclusiveGoal"),
                          (funding, "ShowFundingGoal"), (show, "ShowGoal")):  # fmt: skip
            self.expect_receivers(goal, "goal.created", cls)
        for goal, cls in ((funding, "ShowFundingGoal"), (show, "ShowGoal")):
            self.expect_receivers(goal, "goal.added", cls)
        goals = set(ids.values()) - {sid}
        try:  # track_goals sends it inline; a failed send is retried in a job of its own, maybe still on its way
            self.wait("an analytics event per goal", lambda: {r["goal_id"] for r in outbound.records("analytics")} >= goals)
            self.say("analytics", f"goal.created tracked for all {len(goals)} goals")
        except Missing as exc:
            self.missing.append(str(exc))
        if not self.missing:
            self.say("check", "every document and receiver outcome matches seeds 000 and 003")


def _late(at: float, due: float) -> str:
    delta = (at - due) * 1000
    return f"{delta:.0f} ms after its time" if delta >= 0 else f"{-delta:.0f} ms BEFORE its time"


def _environment(home: Path) -> None:
    """Embedded defaults in a home of its own, every installed plugin loaded."""
    os.environ["GOALHUB_HOME"] = str(home)
    for name in ("GOALHUB_MONGO_URI", "GOALHUB_REDIS_URL", "GOALHUB_LOAD_PLUGINS", "GOALHUB_DISABLED_PLUGINS",
                 "GOALHUB_PLUGINS", "GOALHUB_JWT_KEYS"):  # fmt: skip
        os.environ.pop(name, None)


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    home = Path(".goalhub") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    home.mkdir(parents=True)
    home = home.resolve()
    _environment(home)
    say = Timeline()
    click.echo(click.style("goalhub demo", bold=True) + f": home {home}")
    streamer_id = str(ObjectId())
    # PLATFORM: in the demo the platform opens the session, with its RTC sources, for the streamer.
    token = mint_token(streamer_id, ["CREATOR", "PLATFORM"], ttl=600)  # also creates the dev key the API will use
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log_path = home / "processes.log"
    failure: str | None = None
    with open(log_path, "w") as log, embedded_redis(lambda line: say("lifecycle", line)):
        supervisor = Supervisor(goalhub_processes("127.0.0.1", port, workers=1, api_workers=2), output=log, color=False)

        def alive() -> None:
            child = supervisor.exited()
            if child is not None:
                raise Missing(f"the {child.name} process exited (code {child.process.returncode}); see {log_path}")

        with supervisor:
            say("lifecycle", f"started API, worker and scheduler (logs in {log_path})")
            demo = Demo(f"http://127.0.0.1:{port}", token, streamer_id, say, alive)
            try:
                demo.wait("the API answering /healthz", lambda: _healthy(demo.base), timeout=30)
                say("http", f"API up at {demo.base}; streamer {streamer_id}, token minted with scope CREATOR")
                session_id = demo.go_live()
                trigger_id = demo.trigger_exclusive_countdown(session_id)
                demo.exclusive_goal(session_id, trigger_id)
                funding_id = demo.show_funding_countdown(session_id)
                demo.show_goal(session_id, funding_id)
                demo.check()
            except (Missing, requests.RequestException) as exc:
                failure = str(exc)
            demo.http.close()  # idle keep-alive connections would hold up the API's graceful stop
            say.section("Stopping")
        say("lifecycle", "API, worker and scheduler stopped")
    took = time.monotonic() - started
    problems = ([failure] if failure else []) + demo.missing
    if problems:
        click.echo(click.style(f"\ndemo FAILED after {took:.1f}s; missing:", fg="red", bold=True), err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        click.echo(f"process logs: {log_path}", err=True)
        return 1
    click.echo(click.style(f"\ndemo passed in {took:.1f}s", fg="green", bold=True) + f"; data kept in {home}")
    click.echo(f"  inspect it: GOALHUB_HOME={home} goalhub outcomes | goalhub outbound | goalhub goals show ID")
    return 0


def _healthy(base: str) -> bool:
    try:
        return requests.get(f"{base}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


if __name__ == "__main__":
    sys.exit(main())
