"""Traces: one OpenTelemetry trace per goal, across the API, the workers and the scheduler.

Optional. With ``goalhub[otel]`` installed (opentelemetry-sdk and its OTLP/HTTP exporter) a
process traces when the standard variables configure traces:

- ``OTEL_TRACES_EXPORTER`` names one or more span exporters (``otlp``, ``console``, any
  installed in the ``opentelemetry_traces_exporter`` entry-point group), not ``none``; or
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (``otlp``);
- and ``OTEL_SDK_DISABLED`` is not ``true``.

``otlp`` is OTLP over HTTP/protobuf unless ``OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL=grpc`` (which
needs opentelemetry-exporter-otlp-proto-grpc). Everything else is the SDK's own variables
(``OTEL_SERVICE_NAME``, default ``goalhub``; ``OTEL_RESOURCE_ATTRIBUTES``; ``OTEL_TRACES_SAMPLER``;
``OTEL_BSP_*``; the exporter's endpoint, headers and timeout). Otherwise, or without the SDK,
tracing is off: nothing of opentelemetry is imported, and every hook here costs the check of
a module global (``span`` returns one shared ``nullcontext``).

One trace per goal: the W3C trace context (``traceparent``, ``tracestate``) of the work in hand
travels in every RQ job's ``meta`` under ``FIELD`` (``goalhub.logs.job_meta``, the path the
request id takes), and each job runs in a span whose parent it names. The goal's own context
(the ``POST /goals`` span's, or its ``create_goal`` job's) is stored with the accepted record
and the goal document (``stamp``), so a job re-created from the store (the outbox's relay, the
reconciler, a retry by hand, an end requested over the API) opens its span under it
(``span(..., parent=stored)``) and joins the goal's trace, with a link to the span that
re-created it when that one is in another trace.

Span attributes are hostile input: every string is redacted (``goalhub.redaction.redact``) and
bounded to ``MAX_ATTRIBUTE`` characters; an error is recorded as its redacted text, never as
the SDK's exception event (its message and stack are not redacted).

Processes: each exports through a ``BatchSpanProcessor``. A forked work-horse ends with
``os._exit`` and a pool worker is a multiprocessing child (no ``atexit`` either), so a worker
flushes after every job (``flush``) and an API process when it stops (``shutdown``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from goalhub.redaction import redact

log = logging.getLogger(__name__)

# The key of the W3C trace context in an RQ job's meta and in stored documents (the accepted
# record's goal, the goal, a plugin job's record): ``{"traceparent": ..., "tracestate": ...}``.
FIELD = "trace"
# Longest string attribute kept (redacted first); a longer one is cut, with "..." at its end.
MAX_ATTRIBUTE = 256
# Incoming headers longer than these are not trace context (W3C: traceparent is 55 characters
# in version 00; tracestate at most 32 members, 512 characters is what it asks to propagate).
MAX_TRACEPARENT = 128
MAX_TRACESTATE = 512
EXPORTER_GROUP = "opentelemetry_traces_exporter"
DEFAULT_SERVICE_NAME = "goalhub"

_NULL = contextlib.nullcontext()
_decided = False  # whether this process has decided (``configure``), inherited by forked children
_tracer: Any = None  # the SDK's tracer while tracing is on, else None
_provider: Any = None
_otel: Any = None  # the opentelemetry names the hooks use, imported once by ``configure``


def wanted() -> bool:
    """Whether the standard variables ask this process for traces (see the module's docstring)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def enabled() -> bool:
    """Whether this process traces (decided once, at the first call, unless ``configure`` was called)."""
    return _tracer is not None if _decided else configure()


def configure(role: str = "goalhub", *, exporters: Iterable[Any] | None = None) -> bool:
    """Decide, once per process, whether it traces, and set tracing up if so; returns whether
    it does. Long-running processes call it at start (before they fork: the SDK is imported
    once, and forked children inherit it); any other process decides at its first span.
    ``role`` (api, worker, scheduler) is the resource's ``goalhub.role``.

    ``exporters``: span exporters to use whatever the variables say (tests, benchmarks); the
    provider is then this module's alone, not opentelemetry's global one."""
    global _decided, _tracer, _provider, _otel
    if _decided and exporters is None:
        return _tracer is not None
    _decided = True
    if exporters is None and not wanted():
        return False
    try:
        # Deferred: opentelemetry-sdk is an optional dependency (goalhub[otel]), imported only
        # once traces are configured.
        from opentelemetry import context as otel_context
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        log.warning("traces are configured (OTEL_*) but opentelemetry-sdk cannot be imported (%s): "
                    "install goalhub[otel]; no traces", exc)
        return False
    try:
        chosen = list(exporters) if exporters is not None else environment_exporters()
        resource = Resource.create({"goalhub.role": role})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
        provider = TracerProvider(resource=resource)
        for exporter in chosen:
            provider.add_span_processor(BatchSpanProcessor(exporter))
    except Exception as exc:  # a bad exporter name or setting: the process runs, without traces
        log.error("traces are off: %s", redact(f"{type(exc).__name__}: {exc}"))
        return False
    if _provider is not None:
        _provider.shutdown()
    if exporters is None:  # plugins' own spans (opentelemetry's API) join goalhub's traces
        trace.set_tracer_provider(provider)
    _otel = _Names(trace, otel_context, TraceContextTextMapPropagator())
    _provider, _tracer = provider, provider.get_tracer("goalhub")
    return True


class _Names:
    """The opentelemetry names the hooks use, looked up once."""

    def __init__(self, trace: Any, context: Any, propagator: Any) -> None:
        self.trace, self.context, self.propagator = trace, context, propagator
        self.link, self.status, self.error = trace.Link, trace.Status, trace.StatusCode.ERROR
        kind = trace.SpanKind
        self.kinds = {"internal": kind.INTERNAL, "server": kind.SERVER, "client": kind.CLIENT,
                      "producer": kind.PRODUCER, "consumer": kind.CONSUMER}


def environment_exporters() -> list[Any]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (``otlp`` when only an endpoint is set),
    from the ``opentelemetry_traces_exporter`` entry points, as the SDK's own configurator finds them."""
    from importlib.metadata import entry_points  # deferred with the SDK: only when traces are configured

    names = [name.strip() for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()]
    exporters = []
    for name in names or ["otlp"]:
        if name == "otlp":
            protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
            by_protocol = {"http/protobuf": "otlp_proto_http", "grpc": "otlp_proto_grpc"}
            if protocol not in by_protocol:
                raise ValueError(f"OTLP protocol {protocol[:40]!r} is not one of {', '.join(by_protocol)}")
            name = by_protocol[protocol]
        found = entry_points(group=EXPORTER_GROUP, name=name)
        if not found:
            raise LookupError(f"no span exporter named {name[:60]!r} is installed (OTEL_TRACES_EXPORTER)")
        exporters.append(next(iter(found)).load()())
    return exporters


def reset() -> None:
    """Turn tracing off and forget the decision (tests): the next check decides again."""
    global _decided, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _decided, _tracer, _provider = False, None, None


def flush() -> None:
    """Export every finished span now (a worker after each job: its process may end without ``atexit``)."""
    if _provider is not None:
        _provider.force_flush()


def shutdown() -> None:
    """Export every finished span and stop exporting (a process that is ending)."""
    if _provider is not None:
        _provider.shutdown()


# --- spans -----------------------------------------------------------------------------------


class Span:
    """An open span, current until it is closed (``with``, or ``start`` then ``close``)."""

    __slots__ = ("span", "_token")

    def __init__(self, span: Any) -> None:
        self.span = span
        self._token: Any = None

    def __enter__(self) -> Span:
        self._token = _otel.context.attach(_otel.trace.set_span_in_context(self.span))
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc)

    def close(self, exc: BaseException | None = None) -> None:
        if exc is not None:
            self.error(exc)
        self.span.end()
        if self._token is not None:
            _otel.context.detach(self._token)
            self._token = None

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes (strings redacted and bounded; None values left out)."""
        if self.span.is_recording():
            self.span.set_attributes(_attributes(attributes))

    def error(self, failure: BaseException | str) -> None:
        """Mark the span failed, with the failure's redacted, bounded text (``Class: message``)."""
        text = failure if isinstance(failure, str) else f"{type(failure).__name__}: {failure}"
        if self.span.is_recording():
            if not isinstance(failure, str):
                self.span.set_attribute("error.type", type(failure).__name__)
            self.span.set_status(_otel.status(_otel.error, _bounded(redact(text[:4 * MAX_ATTRIBUTE]))))


def span(name: str, attributes: Mapping[str, Any] | None = None, *, kind: str = "internal",
         parent: Mapping[str, str] | None = None) -> Any:
    """A context manager: a span named ``name``, current inside the block, or ``None`` (tracing
    off: ``with tracing.span(...) as s`` then gives ``s is None``). Its parent is the current
    span, or the stored context ``parent`` when given (the goal's: ``stamp``), linked then to
    the current span if that one is in another trace. An exception leaving the block marks it
    failed (redacted). ``kind``: internal, server, client, producer or consumer."""
    if _tracer is None and (_decided or not configure()):
        return _NULL
    return _open(name, attributes, kind, parent)


def start(name: str, attributes: Mapping[str, Any] | None = None, *, kind: str = "internal",
          parent: Mapping[str, str] | None = None) -> Span | None:
    """``span``, opened now and closed by its ``close`` (hooks that begin and end apart: an HTTP
    request's); None when tracing is off."""
    if _tracer is None and (_decided or not configure()):
        return None
    return _open(name, attributes, kind, parent).__enter__()


def _open(name: str, attributes: Mapping[str, Any] | None, kind: str, parent: Mapping[str, str] | None) -> Span:
    context, links = None, None
    if parent:
        extracted = _otel.propagator.extract(dict(parent))
        stored = _otel.trace.get_current_span(extracted).get_span_context()
        if stored.is_valid:
            current = _otel.trace.get_current_span().get_span_context()
            if current.is_valid and current.trace_id != stored.trace_id:
                links = [_otel.link(current)]
            context = extracted
    return Span(_tracer.start_span(_bounded(name), context=context, kind=_otel.kinds[kind],
                                   attributes=_attributes(attributes or {}), links=links,
                                   record_exception=False, set_status_on_exception=False))


def annotate(attributes: Mapping[str, Any]) -> None:
    """Add attributes to the current span, if any (a job's function naming its goal)."""
    if _tracer is not None:
        current = _otel.trace.get_current_span()
        if current.is_recording():
            current.set_attributes(_attributes(attributes))


# --- context: what travels and what is stored -------------------------------------------------


def carrier() -> dict[str, str]:
    """The current span's W3C trace context (``traceparent``, and ``tracestate`` when it has
    one); empty when tracing is off or no span is current. What job meta and outbound HTTP
    calls carry."""
    if _tracer is None:
        return {}
    found: dict[str, str] = {}
    _otel.propagator.inject(found)
    return found


def stamp() -> dict[str, Any]:
    """``{FIELD: carrier()}`` to store with a document (the accepted goal, a plugin's job) so work
    re-created from it later joins this trace; empty when there is nothing to store."""
    found = carrier()
    return {FIELD: found} if found else {}


def incoming(headers: Any) -> dict[str, str]:
    """The W3C trace context a client sent (``traceparent``, ``tracestate`` headers), when each
    is of a sane length; the propagator validates the rest. ``headers``: anything with ``get``."""
    found = {}
    for name, limit in (("traceparent", MAX_TRACEPARENT), ("tracestate", MAX_TRACESTATE)):
        value = headers.get(name)
        if value and len(value) <= limit:
            found[name] = value
    return found


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ATTRIBUTE else f"{text[:MAX_ATTRIBUTE - 3]}..."


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes as recorded: None left out, strings redacted then bounded (cut first to a few
    times the bound, so that redaction never scans a client's 64 KiB)."""
    return {key: _bounded(redact(value[:4 * MAX_ATTRIBUTE])) if isinstance(value, str) else value
            for key, value in attributes.items() if value is not None}
