"""The API's OpenAPI 3.1 document, derived from pydantic models and a table of operations.

Why pydantic and a small generator rather than apiflask, spectree or flask-openapi3: those
replace Flask's blueprints or wrap every view (and validate bodies their own way), while
goalhub's bodies are validated by each goal type's ``prepare`` and its errors follow one
error model. Here the answers' shapes are pydantic models (their JSON Schema is pydantic's),
each route is listed once in ``OPERATIONS`` beside the view it documents, each goal type's
body schema comes from its plugin (``GoalType.body_schema``), and a test checks that every
route of the app is documented (``undocumented_routes``). So a new goal type appears in the
document as soon as its plugin is installed, and a new route cannot be forgotten.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from flask import Flask
from pydantic import BaseModel, ConfigDict, Field

from goalhub import hookspecs, replay
from goalhub.api import admin, sessions
from goalhub.hookspecs import EVENT_HOOKS
from goalhub.receivers import TARGET

OBJECT_ID = r"^[0-9a-fA-F]{24}$"

# Routes that are not part of the API contract: operator pages and this document itself.
NOT_DOCUMENTED = ("/rq", "/static", "/docs", "/metrics", "/openapi.json")


# --- the answers -------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable")
    message: str = Field(description="for people")
    field: str | None = Field(None, description="the offending input, when there is one")
    down: list[str] | None = Field(None, description="/readyz, /healthz/deep: the backends that are unreachable, "
                                                     "or what is missing (no_worker, no_scheduler, disk_full)")


class Error(BaseModel):
    """goalhub's one error model: 400 malformed, 401, 403, 404, 409, 413, 415, 422, 429, 503."""

    error: ErrorDetail


class GoalCreated(BaseModel):
    goal_id: str = Field(pattern=OBJECT_ID, description="the new goal's id; the goal is written moments later")


class GoalEnding(BaseModel):
    goal_id: str = Field(pattern=OBJECT_ID)
    status: str = Field(description='"ending": the end is queued')


class Outcome(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(alias="_id", description="<event>:<goal_id>|<plugin>.<receiver>")
    event: str
    receiver: str
    plugin: str
    status: str = Field(description="skipped, queued, running, ok, retrying, failed, timed out, paused, "
                                    "retargeted, dropped (an operator moved or dropped it: goalhub retarget, drop)")


class DeliveredEvent(BaseModel):
    event: str
    receivers: list[str]
    delivered_at: float


class Goal(BaseModel):
    """A goal with every receiver outcome; while ``create_goal`` has not run yet, its accepted
    record: ``_id``, ``_cls``, ``state: creating`` and ``accepted_at``; ``state: failed`` with a
    ``reason`` when it can no longer be created."""

    model_config = ConfigDict(extra="allow")
    id: str = Field(alias="_id", pattern=OBJECT_ID)
    cls: str | None = Field(alias="_cls")
    active: bool | None = None
    state: str | None = Field(None, description='"creating" until create_goal has stored the goal; '
                              '"failed" when it can no longer be created (see reason)')
    accepted_at: float | None = Field(None, description="when the API accepted it (while not created)")
    reason: str | None = Field(None, description="why it could not be created (state failed)")
    conditions: dict[str, Any] | None = None
    levels: list[dict[str, Any]] | None = None
    nbf: float | None = None
    exp: float | None = None
    context: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    outcomes: list[Outcome]
    events: list[DeliveredEvent]


class Source(BaseModel):
    room_id: str = Field(pattern=f"^{sessions.SOURCE_ID.pattern}$")
    task_id: str = Field(pattern=f"^{sessions.SOURCE_ID.pattern}$")


class SessionBody(BaseModel):
    """``POST /sessions``: the RTC sources of the live session (optional)."""

    sources: list[Source] | None = Field(None, max_length=32)


class SourcesBody(BaseModel):
    """``PUT /sessions/<id>/sources``: the session's RTC sources, set by the platform."""

    sources: list[Source] = Field(max_length=32)


class Session(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(alias="_id", pattern=OBJECT_ID)
    user: str
    active: bool
    sources: list[dict[str, Any]]
    # Plugins add their own session fields (GoalType.session_fields): extra="allow".


class SessionEnded(Session):
    ending_goals: list[str]


class Health(BaseModel):
    status: str


class Ready(BaseModel):
    status: str = Field(description="ready, or degraded when the live view of plugin health shows a problem")
    store: str
    redis: str
    plugins: list[str] | None = Field(None, description="degraded: the plugins concerned, by name")
    stale_processes: int | None = Field(None, description="degraded: processes that stopped reporting")
    reload_needed: int | None = Field(None, description="degraded: processes running other plugins than installed")
    problems: list[dict[str, Any]] | None = Field(
        None, description="degraded, ADMIN token only: each problem's plugin, reason and processes")
    stale: list[str] | None = Field(None, description="degraded, ADMIN token only: the stale processes")
    reload: dict[str, list[str]] | None = Field(
        None, description="degraded, ADMIN token only: per process, how its plugins differ from those installed")


class DeepHealth(BaseModel):
    status: str = Field(description='"ok"')
    workers: dict[str, int] = Field(description="live workers listening on each queue")
    schedulers: int = Field(description="schedulers that polled within GOALHUB_LIVENESS_WINDOW")
    scheduler_last_poll_age: float | None = Field(description="seconds since any scheduler polled")
    disk_free_bytes: int = Field(description="free bytes where GOALHUB_HOME is")


class BreakerState(BaseModel):
    tripped_at: float
    failures: int
    last_error: str


class ReceiverState(BaseModel):
    id: str
    event: str
    plugin: str
    receiver: str
    tripped: BreakerState | None
    slow: dict[str, float] | None = Field(None, description="isolated after overrunning its budget: since, "
                                                            "until, overrun_s, budget_s (goalhub.slowness)")


class Receivers(BaseModel):
    """Every installed receiver and its circuit breaker, and the live view of plugin health"""

    receivers: list[ReceiverState]
    live: dict[str, Any] = Field(description="goalhub.liveview.health(): status, problems, stale, "
                                             "reload_needed and every process's report")


class Resumed(BaseModel):
    """The breakers closed and the outcomes delivered again"""

    target: str
    closed: list[str]
    unisolated: list[str] = Field(description="receivers no longer isolated as slow")
    receivers: list[str]
    redelivered: list[str]


class BackfillBody(BaseModel):
    """``POST /admin/backfill``: past events to deliver to one plugin or receiver."""

    model_config = ConfigDict(extra="forbid")
    target: str = Field(pattern=f"^{TARGET.pattern}$")
    event: Literal["goal.created", "goal.added", "goal.ended"] = "goal.created"
    cls: str | None = Field(None, pattern=f"^{admin.GOAL_CLASS.pattern}$")
    since: float | str | None = Field(None, description="epoch seconds, ISO 8601, or an age such as 12h; "
                                      "finite, 1970 to 9999 (nan, inf: 400)")
    until: float | str | None = Field(None, description="epoch seconds, ISO 8601, or an age such as 12h; "
                                      "finite, 1970 to 9999 (default: when the backfill starts)")
    dry_run: bool = False
    rate: float | None = Field(None, ge=replay.MIN_RATE, le=replay.MAX_RATE,
                               description="at most this many events a second, paced by scheduled chunks (no job sleeps)")
    redeliver_skipped: bool = Field(False, description="also deliver, once, events recorded skipped for the "
                                                       "target that it acts on now (a fixed class typo)")


class RetargetBody(BaseModel):
    """``POST /admin/receivers/{old}/retarget``: the receiver (or plugin) that takes old's pending work."""

    model_config = ConfigDict(extra="forbid")
    new: str = Field(pattern=f"^{TARGET.pattern}$", description="a receiver id (plugin.receiver) when old is "
                                                                "one, a plugin name when old is a plugin")
    dry_run: bool = False


class DropBody(BaseModel):
    """``POST /admin/receivers/{old}/drop``"""

    model_config = ConfigDict(extra="forbid")
    dry_run: bool = False


class Retargeted(BaseModel):
    """What a retarget did (at most 1000 outcomes a call: again while more)"""

    old: str
    new: str
    dry_run: bool
    pending: int = Field(description="old's pending outcomes taken by this call (or found, dry run)")
    retargeted: list[str] = Field(description="new outcome ids written queued, their jobs enqueued")
    jobs: list[str]
    already_delivered: list[str] = Field(description="new's outcomes that existed already (kept as they are)")
    skipped: list[str] = Field(description="new outcome ids written skipped: new does not act on the goal's class")
    finished_before: list[str] = Field(description="old outcomes made ok: the ledger says old finished them")
    outcomes: list[str] | None = Field(None, description="dry run: the outcome ids that would move")
    more: bool


class Dropped(BaseModel):
    """What a drop did (at most 1000 outcomes a call: again while more)"""

    old: str
    dry_run: bool
    pending: int
    dropped: list[str]
    finished_before: list[str]
    outcomes: list[str] | None = None
    more: bool


class BackfillStarted(BaseModel):
    """The backfill is queued; its progress is at the Location"""

    backfill_id: str = Field(pattern=OBJECT_ID)
    state: str


class BackfillProgress(BaseModel):
    """How far a backfill got"""

    model_config = ConfigDict(extra="allow")
    backfill_id: str = Field(pattern=OBJECT_ID)
    state: Literal["queued", "running", "finished", "failed"]


# --- the operations ----------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI form: /goals/{goal_id}
    operation_id: str
    summary: str
    tag: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | str | None = None  # "goal_types": the installed goal types' schemas
    body_required: bool = True
    query: tuple[dict[str, Any], ...] = ()
    headers: tuple[dict[str, Any], ...] = ()
    auth: bool = True
    aliases: tuple[str, ...] = field(default=())  # the seeds' other spelling, same operation


IDEMPOTENCY_HEADERS = (
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "description": "the same key from the same caller gets the first answer",
     "schema": {"type": "string", "maxLength": 255}},
    {"name": "X-Request-Id", "in": "header", "required": False,
     "description": "the platform's request id: the idempotency key when Idempotency-Key is absent, "
                    "and the id that follows the goal through logs, jobs and outcome records",
     "schema": {"type": "string", "maxLength": 255}},
)

OPERATIONS: tuple[Operation, ...] = (
    Operation("post", "/goals", "create_goal", "Create a goal of an installed goal type", "goals",
              {202: GoalCreated}, body="goal_types", headers=IDEMPOTENCY_HEADERS, aliases=("/goal",)),
    Operation("get", "/goals/{goal_id}", "get_goal", "A goal and every receiver outcome", "goals",
              {200: Goal}, aliases=("/goal/{goal_id}",)),
    Operation("post", "/goals/{goal_id}/end", "end_goal", "End a goal (goal.ended)", "goals",
              {202: GoalEnding}, aliases=("/goal/{goal_id}/end",)),
    Operation("post", "/sessions", "start_session", "Start a live session", "sessions",
              {201: Session}, body=SessionBody, body_required=False, headers=IDEMPOTENCY_HEADERS),
    Operation("get", "/sessions/{session_id}", "get_session", "A live session", "sessions", {200: Session}),
    Operation("put", "/sessions/{session_id}/sources", "set_sources",
              "Set a live session's RTC sources (a PLATFORM token only)", "sessions", {200: Session},
              body=SourcesBody),
    Operation("post", "/sessions/{session_id}/end", "end_session", "End a session and its goals", "sessions",
              {200: SessionEnded}),
    Operation("get", "/admin/receivers", "list_receivers", "Receivers and their circuit breakers (ADMIN)", "admin",
              {200: Receivers}),
    Operation("post", "/admin/receivers/{target}/resume", "resume_receiver",
              "Close a receiver's breaker and deliver what it missed (ADMIN)", "admin", {200: Resumed}),
    Operation("post", "/admin/receivers/{old}/retarget", "retarget_receiver",
              "Move the pending work of a renamed or removed receiver (or plugin) to another (ADMIN)", "admin",
              {200: Retargeted}, body=RetargetBody),
    Operation("post", "/admin/receivers/{old}/drop", "drop_receiver",
              "Drop the pending work of a removed receiver (or plugin) (ADMIN)", "admin", {200: Dropped},
              body=DropBody, body_required=False),
    Operation("post", "/admin/backfill", "start_backfill", "Backfill past events to one plugin or receiver (ADMIN)",
              "admin", {202: BackfillStarted}, body=BackfillBody),
    Operation("get", "/admin/backfill/{backfill_id}", "backfill_progress", "A backfill's progress (ADMIN)", "admin",
              {200: BackfillProgress}),
    Operation("get", "/healthz", "healthz", "The process answers", "health", {200: Health}, auth=False),
    Operation("get", "/readyz", "readyz", "The store and Redis answer too", "health", {200: Ready, 503: Error},
              auth=False),
    Operation("get", "/healthz/deep", "healthz_deep",
              "Workers and a scheduler are doing the work, and the disk has room (for monitoring, not for a "
              "load balancer)", "health", {200: DeepHealth, 503: Error}, auth=False),
)


def _flask_path(path: str) -> str:
    return re.sub(r"\{(\w+)\}", r"<\1>", path)


def undocumented_routes(app: Flask) -> list[str]:
    """``METHOD rule`` of every app route that is neither in ``OPERATIONS`` nor an operator page."""
    documented = {(op.method.upper(), _flask_path(p)) for op in OPERATIONS for p in (op.path, *op.aliases)}
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(NOT_DOCUMENTED):
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (method, rule.rule) not in documented:
                missing.append(f"{method} {rule.rule}")
    return missing


# --- the document ------------------------------------------------------------------------


class _Components:
    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.schemas:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", by_alias=True)
            for name, definition in schema.pop("$defs", {}).items():
                self.schemas.setdefault(name, definition)
            self.schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}


# Path parameters that name a plugin or receiver; every other one is an ObjectId.
TARGET_PARAMETERS = ("target", "old")


def _path_parameters(path: str) -> list[dict[str, Any]]:
    return [{"name": name, "in": "path", "required": True, "description": "a plugin or plugin.receiver",
             "schema": {"type": "string", "pattern": f"^{TARGET.pattern}$"}} if name in TARGET_PARAMETERS else
            {"name": name, "in": "path", "required": True, "description": "a 24-hex ObjectId",
             "schema": {"type": "string", "pattern": OBJECT_ID}} for name in re.findall(r"\{(\w+)\}", path)]


def _goal_type_body(goal_types: dict[str, Any], components: _Components) -> dict[str, Any]:
    variants = []
    for name, goal_type in sorted(goal_types.items()):
        schema = getattr(goal_type, "body_schema", None) or {
            "type": "object", "description": "this goal type's plugin declares no body schema"}
        key = f"GoalBody_{re.sub(r'[^A-Za-z0-9_]', '_', name)}"
        components.schemas[key] = {
            "title": f"{name} ({goal_type.goal_class})",
            "description": (goal_type.description or "") + f" Sent with ?type={name}.",
            **schema,
        }
        variants.append({"$ref": f"#/components/schemas/{key}"})
    return {"anyOf": variants} if variants else {"type": "object"}


def _goal_type_query(goal_types: dict[str, Any]) -> list[dict[str, Any]]:
    names = sorted(goal_types)
    described = "; ".join(f"{n}: {goal_types[n].goal_class}" for n in names) or "none installed"
    type_schema: dict[str, Any] = {"type": "string", "enum": names} if names else {"type": "string"}
    return [
        {"name": "type", "in": "query", "required": False, "schema": type_schema,
         "description": f"the goal type (its plugin's body schema applies): {described}"},
        {"name": "goal_type", "in": "query", "required": False, "schema": type_schema, "deprecated": True,
         "description": "seed 003's spelling of `type`"},
    ]


JSON_TYPES = {"str": "string", "bool": "boolean", "dict": "object", "list": "array", "float": "number",
              "int": "integer", "None": "null"}


def event_schemas() -> dict[str, Any]:
    """``Event_<hook>``: the keyword arguments each event's receivers get, with their JSON
    types and meanings, read from the hook specs (their annotations and ``:param:`` lines)."""
    schemas = {}
    for event, hook in EVENT_HOOKS.items():
        spec = getattr(hookspecs, hook)
        meanings = {name: " ".join(text.split()) for name, text in
                    re.findall(r":param (\w+): (.+?)(?=\n\s*:param|\n\s*\n|\Z)", spec.__doc__ or "", re.S)}
        properties = {}
        for name, parameter in inspect.signature(spec).parameters.items():
            kinds = [JSON_TYPES[part.strip().split("[")[0]] for part in str(parameter.annotation).split("|")]
            properties[name] = {"type": kinds[0] if len(kinds) == 1 else kinds, "description": meanings.get(name, "")}
        schemas[f"Event_{hook}"] = {
            "title": f"{event} ({hook})", "type": "object", "properties": properties, "required": list(properties),
            "description": f"The keyword arguments a receiver of {event} gets (it asks for those it needs). "
                           "Ids are 24-hex strings; the store's _id values are ObjectIds (docs/plugins.md)."}
    return schemas


def document(goal_types: dict[str, Any], version: str = "0") -> dict[str, Any]:
    """The OpenAPI 3.1 document for the installed goal types (``name -> GoalType``), with
    the event payloads receivers get as ``Event_<hook>`` schemas."""
    components = _Components()
    components.schemas.update(event_schemas())
    error = components.ref(Error)
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = {}
        for status, model in op.responses.items():
            content = {"application/json": {"schema": components.ref(model)}} if model else None
            responses[str(status)] = {"description": (model.__doc__ or model.__name__).strip().splitlines()[0]
                                      if model else "no content", **({"content": content} if content else {})}
        responses["default"] = {"description": "an error, in goalhub's one error model",
                                "content": {"application/json": {"schema": error}}}
        operation: dict[str, Any] = {
            "operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
            "parameters": [*_path_parameters(op.path), *op.query, *op.headers,
                           *(_goal_type_query(goal_types) if op.body == "goal_types" else [])],
            "responses": responses,
        }
        if op.body is not None:
            schema = _goal_type_body(goal_types, components) if op.body == "goal_types" else components.ref(
                op.body)  # type: ignore[arg-type]
            operation["requestBody"] = {"required": op.body_required,
                                        "content": {"application/json": {"schema": schema}}}
        operation["security"] = [{"bearer": []}] if op.auth else []
        paths.setdefault(op.path, {})[op.method] = operation
        for alias in op.aliases:
            paths.setdefault(alias, {})[op.method] = {
                **operation, "operationId": f"{op.operation_id}_alias", "deprecated": True,
                "summary": f"{op.summary} (the seeds' spelling of {op.path})"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "goalhub",
            "version": version,
            "description": "The goal engine of a live-streaming platform. Creating a goal answers 202 at once; "
                           "the goal is written by a background job. Goal types, and their body schemas, come "
                           "from the installed plugins.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                           "description": "HS256 with a kid from GOALHUB_JWT_KEYS; "
                                                          "creating needs the CREATOR scope"}},
        },
    }
