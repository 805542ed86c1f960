"""A span exporter for the trace tests, selected like any other (``OTEL_TRACES_EXPORTER``).

``JsonLinesExporter`` is the SDK's ``InMemorySpanExporter`` that also appends every span it
is given, as one JSON line (``ReadableSpan.to_json`` and the exporting pid), to
``$GOALHUB_TEST_SPANS_DIR/<pid>.jsonl`` at once: a process that ends with ``os._exit`` (a
forked work-horse, an API process) keeps what it exported. ``install`` writes the entry point
that names it (``goalhub_test_spans`` in the ``opentelemetry_traces_exporter`` group) into a
directory to put on a child process's ``PYTHONPATH``, so that goalhub finds it the way it finds
``otlp`` or ``console``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

NAME = "goalhub_test_spans"
DIRECTORY = "GOALHUB_TEST_SPANS_DIR"


class JsonLinesExporter(InMemorySpanExporter):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(os.environ[DIRECTORY])

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        lines = "".join(json.dumps({**json.loads(span.to_json(indent=None)), "pid": os.getpid()}) + "\n"
                        for span in spans)
        with open(self.directory / f"{os.getpid()}.jsonl", "a") as out:
            out.write(lines)
        return result


def install(directory: Path) -> Path:
    """Write the entry point's distribution into ``directory`` (put it on ``PYTHONPATH``)."""
    info = directory / f"{NAME}-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {NAME}\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        f"[opentelemetry_traces_exporter]\n{NAME} = span_capture:JsonLinesExporter\n")
    return directory


def read(directory: Path) -> list[dict[str, Any]]:
    """Every span exported so far, by every process (complete lines only: one may be being written)."""
    spans = []
    for path in sorted(directory.glob("*.jsonl")):
        spans += [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]
    return spans
