"""Traces (issue 23, item 8): with opentelemetry-sdk installed and OTEL_TRACES_EXPORTER set,
one goal is one trace across processes: the API request, ``create_goal`` in a worker, a span
per receiver run (plugin, receiver, outcome, attempt), each outbound call, and the activation
and end that rq-scheduler runs later. Without the configuration (or without the SDK) nothing
of opentelemetry is imported.

End to end: a real API server (waitress, pre-forked), a real worker (forking, and a pool) and
the scheduler, each exporting through the SDK's ``InMemorySpanExporter`` extended to write each
span as a JSON line per process (``span_capture``), selected by ``OTEL_TRACES_EXPORTER`` through
an entry point, as ``otlp`` is. In process: the same module with an in-memory exporter, for the
paths that re-create a goal's jobs from the store (the outbox's relay, the reconciler, an end
requested over the API), and the hostile-input rules of attributes.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import api_support
import pytest
import requests
import span_capture
from bson import ObjectId
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from rq.job import Job
from world import OTEL_SITE, STREAMER

import goalhub
from goalhub import outbox, tracing
from goalhub.auth import mint_token
from goalhub.connection import get_redis
from goalhub.queues import job_id
from goalhub.scheduler import reconcile
from goalhub.testing import enqueue_create_goal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SINK_PASSWORD, SINK_TOKEN, QUERY_TOKEN = "SinkPw-4Tq", "SinkTok-8Vb", "QueryTok-2Wz"
WORKERS = {
    "fork": "from goalhub.worker import run_worker; run_worker()",
    "pool": "from goalhub.pool import run_pool; run_pool(1)",
}
# A plugin of the test's: a goal.ended receiver that makes a (recorded) outbound call.
ENDED_PLUGIN = '''
import goalhub


@goalhub.receiver("goal.ended", "TriggerPrivateGoal")
def note_the_end(goal_id, reason):
    return {"sent": goalhub.send_once("trace-test", f"ended:{goal_id}", {"reason": reason})["transport"]}
'''


class Sink(http.server.BaseHTTPRequestHandler):
    """The analytics sink: answers 200 and keeps each request's trace context header."""

    traceparents: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Sink.traceparents.append(self.headers.get("traceparent", ""))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def sink():
    with api_support.http_server(Sink) as port:
        yield f"http://analytics:{SINK_PASSWORD}@127.0.0.1:{port}/analytics?token={SINK_TOKEN}"


def traced_env(tmp_path: Path, **extra: str) -> tuple[dict[str, str], Path]:
    """Child processes' environment: traces to ``span_capture`` files in ``<tmp>/spans``."""
    spans = tmp_path / "spans"
    spans.mkdir()
    entry_point = span_capture.install(tmp_path / "entry-point")
    (tmp_path / "entry-point" / "trace_test_plugin.py").write_text(ENDED_PLUGIN)
    env = api_support.process_env(
        OTEL_TRACES_EXPORTER=span_capture.NAME, OTEL_SERVICE_NAME="goalhub-test", OTEL_BSP_SCHEDULE_DELAY="100",
        GOALHUB_TEST_SPANS_DIR=str(spans), GOALHUB_LOAD_PLUGINS="karaoke,analytics",
        GOALHUB_PLUGINS="trace_test_plugin", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(entry_point), env["PYTHONPATH"], str(OTEL_SITE)])
    return env, spans


def with_otel(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the otel extra installed, as ``pip install 'goalhub[otel]'`` would."""
    return {**env, "PYTHONPATH": os.pathsep.join([env["PYTHONPATH"], str(OTEL_SITE)])}


def hex_id(value: str | None) -> str | None:
    return value[2:] if value else None


def in_trace(spans: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [s for s in spans if hex_id(s["context"]["trace_id"]) == trace_id]


def named(spans: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in spans if s["name"] == name]


def one(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = named(spans, name)
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


def span_id(span: dict[str, Any]) -> str:
    return hex_id(span["context"]["span_id"])


def parent_id(span: dict[str, Any]) -> str | None:
    return hex_id(span["parent_id"])


@pytest.mark.parametrize("worker_kind", list(WORKERS))
def test_one_goal_is_one_trace_across_the_api_the_worker_and_the_scheduler(tmp_path, sink, worker_kind):
    env, spans_dir = traced_env(tmp_path, GOALHUB_ANALYTICS_SINK=sink)
    processes = [api_support.ChildProcess("worker", WORKERS[worker_kind], env, tmp_path),
                 api_support.ChildProcess("scheduler", "from goalhub.scheduler import run_scheduler; run_scheduler()",
                                          env, tmp_path)]
    Sink.traceparents.clear()
    try:
        server, base = api_support.start_api(env, tmp_path, workers=2, threads=4)
        processes.append(server)
        auth = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR'])}"}
        session = requests.post(f"{base}/sessions", json={}, headers=auth, timeout=10)
        assert session.status_code == 201, session.text
        now = time.time()
        # A countdown: created now, activated by the scheduler at nbf, ended by it at exp (nbf far
        # enough ahead that create_goal runs before it even on a loaded machine: else the
        # activation, due already, runs inline in create_goal, without a job of its own).
        created = requests.post(f"{base}/goals?type=trigger_private&token={QUERY_TOKEN}", headers=auth, timeout=10,
                                json={"levels": [{"target": 30}], "context": {"session_id": session.json()["_id"]},
                                      "nbf": round(now + 4, 3), "exp": round(now + 5.5, 3)})
        assert created.status_code == 202, created.text
        goal_id = created.json()["goal_id"]

        def ended() -> dict[str, Any] | None:
            goal = requests.get(f"{base}/goals/{goal_id}", headers=auth, timeout=10).json()
            events = {e["event"] for e in goal.get("events", [])}
            final = all(o["status"] in ("ok", "skipped", "failed") for o in goal.get("outcomes", []))
            return goal if goal.get("end_reason") == "expired" and "goal.ended" in events and final else None

        goal = api_support.wait_for(ended, timeout=60, what="the goal to be activated and ended")

        def exported() -> list[dict[str, Any]] | None:
            spans = span_capture.read(spans_dir)
            names = {s["name"] for s in spans}
            return spans if {"POST /goals", "create_goal", "activate_goal", "end_goal"} <= names else None

        spans = api_support.wait_for(exported, timeout=30, what="the spans of every process")
    finally:
        for process in processes:
            process.stop()
        for process in processes:  # shown by pytest only when the test failed
            print(f"--- {process.name} ---\n{process.output()}")

    request = one(spans, "POST /goals")
    trace_id = hex_id(request["context"]["trace_id"])
    assert request["kind"] == "SpanKind.SERVER" and request["parent_id"] is None
    assert request["attributes"]["http.route"] == "/goals"
    assert request["attributes"]["http.response.status_code"] == 202
    assert request["resource"]["attributes"]["service.name"] == "goalhub-test"
    assert request["resource"]["attributes"]["goalhub.role"] == "api"
    trace = in_trace(spans, trace_id)

    # create_goal in the worker, the child of the request; the event's span under it.
    create = one(trace, "create_goal")
    assert create["kind"] == "SpanKind.CONSUMER" and parent_id(create) == span_id(request)
    assert create["attributes"]["goalhub.goal_id"] == goal_id
    assert create["resource"]["attributes"]["goalhub.role"] == "worker"
    assert create["pid"] != request["pid"]
    created_event = one(trace, "goal.created")
    assert parent_id(created_event) == span_id(create)

    # One span per receiver run, matching the goal's outcome records.
    receivers = [s for s in trace if "goalhub.receiver" in s["attributes"]]
    ran = {(o["event"], o["plugin"], o["receiver"]): o for o in goal["outcomes"] if o["status"] != "skipped"}
    assert {(s["attributes"]["goalhub.event"], s["attributes"]["goalhub.plugin"], s["attributes"]["goalhub.receiver"])
            for s in receivers} == set(ran)
    assert len(receivers) == len(ran)
    for receiver in receivers:
        attributes = receiver["attributes"]
        outcome = ran[(attributes["goalhub.event"], attributes["goalhub.plugin"], attributes["goalhub.receiver"])]
        assert attributes["goalhub.outcome"] == outcome["status"] == "ok"
        assert attributes["goalhub.attempt"] == outcome["attempts"] == 1
        assert attributes["goalhub.goal_id"] == goal_id
    assert {("goal.created", "karaoke", "bind_trigger_private_goal_to_session"),
            ("goal.created", "analytics", "track_goals"), ("goal.created", "goalhub.lifecycle", "schedule_lifecycle_tasks"),
            ("goal.ended", "trace_test_plugin", "note_the_end")} <= set(ran)

    # The outbound calls: analytics' to the sink (which got the call's traceparent) and the test plugin's.
    analytics = one(trace, "outbound analytics")
    assert analytics["kind"] == "SpanKind.CLIENT"
    assert analytics["attributes"]["goalhub.outbound.transport"] == "real"
    assert analytics["attributes"]["goalhub.outbound.duplicate"] is False
    assert parent_id(analytics) == span_id(one(trace, "analytics.track_goals"))
    assert [parent.split("-")[1:3] for parent in Sink.traceparents] == [[trace_id, span_id(analytics)]]
    assert one(trace, "outbound trace-test")["attributes"]["goalhub.outbound.transport"] == "recorded"

    # The activation and the end, run later from rq-scheduler, in the same trace, scheduled by
    # the lifecycle receiver.
    lifecycle = one(trace, "goalhub.lifecycle.schedule_lifecycle_tasks")
    for name in ("activate_goal", "end_goal"):
        job = one(trace, name)
        assert job["kind"] == "SpanKind.CONSUMER" and parent_id(job) == span_id(lifecycle)
        assert job["attributes"]["goalhub.goal_id"] == goal_id
        assert job["attributes"]["messaging.destination.name"].endswith("-lifecycle")
    assert parent_id(one(trace, "goal.ended")) == span_id(one(trace, "end_goal"))

    # Every process exported its own spans: the API process and worker process(es), each their own file.
    assert len({s["pid"] for s in trace}) >= 2
    assert all(s["resource"]["attributes"]["service.name"] == "goalhub-test" for s in spans)
    # No secret of the sink's URL or the request's query in any span.
    text = json.dumps(spans)
    assert SINK_PASSWORD not in text and SINK_TOKEN not in text and QUERY_TOKEN not in text


# --- in process: the paths that re-create a goal's jobs from the store ----------------------


@pytest.fixture
def exported():
    """Tracing on in this process, into the SDK's in-memory exporter; ``exported()`` is every
    span finished so far. Off again afterwards."""
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporters=[exporter])

    def spans() -> list[Any]:
        tracing.flush()
        return list(exporter.get_finished_spans())

    yield spans
    tracing.reset()


def only(spans: list[Any], name: str) -> Any:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def sample_goal(nbf: float | None = None, exp: float | None = None) -> dict[str, Any]:
    return {"_id": str(ObjectId()), "_cls": "TraceGoal", "active": nbf is None, "conditions": {},
            "levels": [{"target": 1}], "nbf": nbf, "exp": exp, "context": {}, "metadata": {"user_id": STREAMER}}


def test_the_outbox_relay_re_creates_a_lost_create_job_in_the_goals_trace(exported, db, drain):
    goal = sample_goal()
    with tracing.span("POST /goals", kind="server"):
        outbox.accept(db, goal)
        outbox.enqueue(goal["_id"], goal=goal)
    get_redis().flushdb()  # Redis lost the job; the accepted record is in the store
    assert outbox.requeue_accepted(db, now=time.time() + 60) == [goal["_id"]]
    drain()
    spans = exported()
    request, relay, create = only(spans, "POST /goals"), only(spans, "relay create_goal"), only(spans, "create_goal")
    assert relay.context.trace_id == create.context.trace_id == request.context.trace_id
    assert relay.parent.span_id == request.context.span_id and create.parent.span_id == relay.context.span_id
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored[tracing.FIELD]["traceparent"].split("-")[1:3] == [f"{request.context.trace_id:032x}",
                                                                      f"{request.context.span_id:016x}"]


def test_a_restore_accepts_again_in_the_goals_trace_a_goal_created_after_the_backup(exported, db, drain, tmp_path):
    """The backup was taken before the goal was accepted; its create job finished. After the
    restore the store knows nothing of it: the reconciliation accepts it again from the job's
    meta and enqueues it, in the request's trace, and the stored goal carries that trace."""
    from goalhub import backup

    backup.backup(tmp_path / "before.db")
    goal = sample_goal()
    with tracing.span("POST /goals", kind="server"):
        outbox.accept(db, goal)
        outbox.enqueue(goal["_id"], goal=goal)
    drain()  # created after the backup
    assert backup.restore(tmp_path / "before.db")["reconciled"]["recreated"] == [goal["_id"]]
    assert db.goals.count_documents({"_id": ObjectId(goal["_id"])}) == 0
    drain()  # created again, from the record accepted again
    spans = exported()
    request, again = only(spans, "POST /goals"), only(spans, "restore accept again")
    creates = [s for s in spans if s.name == "create_goal"]
    assert len(creates) == 2
    assert again.context.trace_id == request.context.trace_id and again.parent.span_id == request.context.span_id
    assert again.kind.name == "PRODUCER" and dict(again.attributes)["goalhub.goal_id"] == goal["_id"]
    assert creates[1].context.trace_id == request.context.trace_id and creates[1].parent.span_id == again.context.span_id
    stored = db.goals.find_one({"_id": ObjectId(goal["_id"])})
    assert stored[tracing.FIELD]["traceparent"].split("-")[1:3] == [f"{request.context.trace_id:032x}",
                                                                      f"{again.context.span_id:016x}"]


def test_the_reconciler_activates_a_goal_whose_job_was_lost_in_the_goals_trace(exported, db, drain):
    goal = sample_goal(nbf=time.time() + 60)
    with tracing.span("POST /goals", kind="server"):
        enqueue_create_goal(goal)
    drain()  # created; the lifecycle receiver scheduled the activation at nbf
    Job.fetch(job_id("activate", goal["_id"]), connection=get_redis()).delete()  # and the scheduled job is lost
    # ...and nbf has passed (the goal's times moved back rather than the test waiting a minute).
    past = time.time() - 1
    db.goals.update_one({"_id": ObjectId(goal["_id"])}, {"$set": {"nbf": past, "lifecycle.activate_at": past}})
    assert reconcile(now=time.time() + 60)["activate"] == [goal["_id"]]
    drain()
    spans = exported()
    request, reconciled, activate = only(spans, "POST /goals"), only(spans, "reconcile activate"), only(spans, "activate_goal")
    assert db.goals.find_one({"_id": ObjectId(goal["_id"])})["active"] is True
    assert reconciled.context.trace_id == activate.context.trace_id == request.context.trace_id
    assert activate.parent.span_id == reconciled.context.span_id
    assert reconciled.kind.name == "PRODUCER" and not reconciled.links  # no other trace was current


def test_an_end_requested_over_the_api_joins_the_goals_trace_linked_to_the_request(exported, client, use_plugins,
                                                                                 drain):
    use_plugins("karaoke")
    auth = {"Authorization": f"Bearer {mint_token(STREAMER, ['CREATOR'])}"}
    session = client.post("/sessions", json={}, headers=auth).get_json()["_id"]
    # The client's own trace (W3C traceparent): the goal's trace continues it.
    client_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    created = client.post("/goals?type=karaoke", json={"levels": [{"target": 5}], "context": {"session_id": session}},
                          headers={**auth, "traceparent": f"00-{client_trace}-00f067aa0ba902b7-01"})
    assert created.status_code == 202, created.get_json()
    goal_id = created.get_json()["goal_id"]
    drain()
    assert client.post(f"/goals/{goal_id}/end", headers=auth).status_code == 202
    drain()
    spans = exported()
    create_request, end_request = only(spans, "POST /goals"), only(spans, "POST /goals/<goal_id>/end")
    assert f"{create_request.context.trace_id:032x}" == client_trace
    assert create_request.parent.span_id == 0x00f067aa0ba902b7 and create_request.parent.is_remote
    requested, end = only(spans, "end requested"), only(spans, "end_goal")
    assert f"{end.context.trace_id:032x}" == f"{requested.context.trace_id:032x}" == client_trace
    assert end.parent.span_id == requested.context.span_id
    assert end_request.context.trace_id != create_request.context.trace_id  # a request of its own...
    assert [link.context.span_id for link in requested.links] == [end_request.context.span_id]  # ...linked
    assert only(spans, "karaoke.bind_karaoke_goal_to_session").attributes["goalhub.outcome"] == "ok"


class FailsOnce:
    runs = 0

    @goalhub.receiver("goal.created", "TraceGoal", retries=0)
    def flaky(self, goal_id):
        FailsOnce.runs += 1
        if FailsOnce.runs == 1:
            raise RuntimeError("down")


def test_a_retry_by_hand_runs_in_the_goals_trace_as_its_second_attempt(exported, inline_plugin, db, drain):
    from goalhub.dispatch import retry_outcome

    inline_plugin(FailsOnce(), "flaky")
    goal = sample_goal()
    with tracing.span("POST /goals", kind="server"):
        enqueue_create_goal(goal)
    drain()
    key = f"goal.created:{goal['_id']}|flaky.flaky"
    assert db.outcomes.find_one({"_id": key})["status"] == "failed"
    retry_outcome(key)  # `goalhub retry`, later, outside any trace
    drain()
    spans = exported()
    request = only(spans, "POST /goals")
    first, second = sorted((s for s in spans if s.name == "flaky.flaky"), key=lambda s: s.start_time)
    assert first.attributes["goalhub.attempt"] == 1 and first.attributes["goalhub.outcome"] == "failed"
    assert first.status.description == "RuntimeError: down"
    assert second.attributes["goalhub.attempt"] == 2 and second.attributes["goalhub.outcome"] == "ok"
    assert first.context.trace_id == second.context.trace_id == request.context.trace_id
    job = only(spans, "run_receiver")
    assert second.parent.span_id == job.context.span_id
    assert job.parent.span_id == only(spans, "retry flaky.flaky").context.span_id


# --- hostile input --------------------------------------------------------------------------


class Leaky:
    @goalhub.receiver("goal.created", "LeakyGoal", retries=0)
    def raises(self, goal_id):
        raise RuntimeError("sink https://user:Hunter2-Pw@sink.example/x?token=Tok-9Xq refused")


def test_span_attributes_and_errors_are_redacted_and_bounded(exported, inline_plugin, fire, client):
    inline_plugin(Leaky(), "leaky")
    assert fire("goal.created", "LeakyGoal")["leaky.raises"]["status"] == "failed"
    with tracing.span("x" * 1000, {"url.path": "/a?password=Pw-3Jk&" + "y" * 100_000, "n": 3, "gone": None}):
        pass
    # A traceparent that is not one starts a trace of its own; one too long is not read at all.
    client.get("/goals/nothing?token=Tok-9Xq", headers={"traceparent": "00-" + "f" * 200})
    client.get("/goals/nothing", headers={"traceparent": "00-zz-yy-01"})
    spans = exported()
    receiver = only(spans, "leaky.raises")
    assert receiver.status.status_code.name == "ERROR" and receiver.events == ()  # no exception event
    assert receiver.status.description.startswith("RuntimeError: sink https://***@sink.example/x?token=***")
    assert receiver.attributes["error.type"] == "RuntimeError"
    long = only(spans, "x" * (tracing.MAX_ATTRIBUTE - 3) + "...")
    assert long.attributes["url.path"].startswith("/a?password=***&yyy") and len(long.attributes["url.path"]) == 256
    assert long.attributes["n"] == 3 and "gone" not in long.attributes
    requests_ = [s for s in spans if s.name == "GET /goals/<goal_id>"]
    assert len(requests_) == 2 and all(s.parent is None for s in requests_)
    assert "Tok-9Xq" not in repr([(s.name, s.attributes, s.status.description) for s in spans])


# --- configuration, and nothing without it ----------------------------------------------------


@pytest.mark.parametrize(("variables", "wanted"), [
    ({}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_SERVICE_NAME": "goalhub"}, False),  # naming the service is not asking for traces
])
def test_what_configures_traces(monkeypatch, variables, wanted):
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert tracing.wanted() is wanted


def test_exporters_are_found_by_their_standard_names(monkeypatch, caplog):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,console")
    assert [type(e) for e in tracing.environment_exporters()] == [OTLPSpanExporter, ConsoleSpanExporter]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon"):
        tracing.environment_exporters()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "nope")
    tracing.reset()
    try:  # a name nothing installs: the process runs without traces, and says why
        assert tracing.configure("test") is False and tracing.span("x") is tracing.span("y")
    finally:
        tracing.reset()
    assert "no span exporter named 'nope' is installed" in caplog.text


class OtlpReceiver(http.server.BaseHTTPRequestHandler):
    """A collector's OTLP/HTTP endpoint: keeps each export request's body."""

    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802
        OtlpReceiver.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_the_standard_variables_alone_send_goalhubs_spans_over_otlp(tmp_path):
    with api_support.http_server(OtlpReceiver) as port:
        env = with_otel(api_support.process_env(OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}"))
        done = run_python("from goalhub import tracing\n"
                          "with tracing.span('hello', {'goalhub.goal_id': 'g1'}): pass\n"
                          "tracing.shutdown()", env)
        assert done.returncode == 0, done.stderr
    request = ExportTraceServiceRequest()
    request.ParseFromString(OtlpReceiver.bodies[-1])
    [resource] = request.resource_spans
    assert {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"] == "goalhub"
    [span] = resource.scope_spans[0].spans
    assert span.name == "hello" and span.attributes[0].value.string_value == "g1"


# A goal through the API, its create job, receivers, outbound call, activation and end, in one
# process; prints the opentelemetry modules imported once redis-py was (it imports
# opentelemetry.sdk.metrics itself when the SDK is installed) and at the end.
FLOW = '''
import json, os, sys, time
otel = lambda: sorted(name for name in sys.modules if name.startswith("opentelemetry"))
import redis
before = otel()
from goalhub.api import create_app
from goalhub.auth import mint_token
from goalhub.worker import drain
client = create_app().test_client()
auth = {"Authorization": "Bearer " + mint_token("STREAMER_ID", ["CREATOR"])}
session = client.post("/sessions", json={}, headers=auth).get_json()["_id"]
now = time.time()
created = client.post("/goals?type=trigger_private", headers=auth, json={
    "levels": [{"target": 5}], "context": {"session_id": session}, "nbf": now + 0.2, "exp": now + 0.4})
assert created.status_code == 202, created.get_json()
drain(); time.sleep(0.5); drain()
goal = client.get("/goals/" + created.get_json()["goal_id"], headers=auth).get_json()
assert goal["end_reason"] == "expired" and goal["activated_at"], goal
assert {o["receiver"]: o["status"] for o in goal["outcomes"]}["track_goals"] == "ok"
from goalhub import tracing
print(json.dumps({"before": before, "after": otel(), "tracing": tracing.enabled()}))
'''.replace("STREAMER_ID", STREAMER)

@pytest.mark.parametrize("case", ["not installed", "installed, not configured", "configured, not installed"])
def test_without_the_sdk_or_the_configuration_goalhub_imports_nothing_of_opentelemetry(tmp_path, case):
    env = {name: value for name, value in api_support.process_env(GOALHUB_LOAD_PLUGINS="karaoke,analytics").items()
           if not name.startswith("OTEL_")}
    assert str(OTEL_SITE) not in env["PYTHONPATH"]  # the venv itself has no opentelemetry
    if not case.endswith("not installed"):
        env = with_otel(env)
    if case.startswith("configured"):
        env["OTEL_TRACES_EXPORTER"] = "console"
    done = run_python(FLOW, env)
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.splitlines()[-1])
    assert imported["tracing"] is False
    if case.endswith("not installed"):
        assert imported["after"] == []
    else:  # what redis-py imports for its own metrics, and not one module more
        assert "opentelemetry.sdk.metrics" in imported["before"]
        assert imported["after"] == imported["before"]
        assert "opentelemetry.sdk.trace" not in imported["after"]
    if case.startswith("configured"):  # said once, and the goal went through all the same
        assert done.stderr.count("opentelemetry-sdk cannot be imported") == 1, done.stderr
