"""Redaction (issue 22): what ``goalhub.redaction.redact`` costs on a request log line's
fields, on a failed receiver's error text, and on 60 KB of hostile text made to make its
patterns backtrack (it must stay linear: every log record of every process goes through it).

    python benchmarks/bench_redaction.py [--quick] [--json PATH]

The baseline is the same text through ``str.replace`` of one fixed secret: the least any
redaction of it could cost.
"""

from __future__ import annotations

import time

import support
from support import Headline

from goalhub.redaction import redact

TYPICAL = {
    "request line": "POST /goals 202",
    "error text": "HTTPError: 503 Server Error: Unavailable for url: "
                  "https://ops:hunter2@sink.example.com/notify?token=abc123&region=sg",
    "repr'd headers": "{'Authorization': 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig', 'X-Api-Key': 'k'}",
}
HOSTILE = {"x:x:": "x:" * 30000, "a=a=": "a=a" * 20000, "https://": "https://" * 7500, "a: ": "a: " * 20000,
           "'a': 'b', ": "'a': 'b', " * 6000, '\\"': '\\"' * 30000, "{'a': ": "{'a': " * 10000}


def timed(text: str, repeat: int) -> tuple[float, float]:
    best = best_base = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        for _ in range(repeat):
            redact(text)
        best = min(best, (time.perf_counter() - began) / repeat)
        began = time.perf_counter()
        for _ in range(repeat):
            text.replace("hunter2", "***")
        best_base = min(best_base, (time.perf_counter() - began) / repeat)
    return best, best_base


def main() -> None:
    options = support.arguments(__doc__)
    rows, headlines = [], []
    for name, text in TYPICAL.items():
        seconds, base = timed(text, 200 if options.quick else 2000)
        rows.append([name, len(text), f"{seconds * 1e6:.1f} µs", f"{base * 1e6:.2f} µs"])
        headlines.append(Headline("redaction", f"redact(), {name} ({len(text)} chars)", f"{seconds * 1e6:.1f} µs",
                                  f"str.replace {base * 1e6:.2f} µs", f"{seconds / base:.0f}x"))
    worst = 0.0
    for name, text in HOSTILE.items():
        seconds, base = timed(text, 1)
        worst = max(worst, seconds)
        rows.append([f"hostile {name!r} x N", len(text), f"{seconds * 1e3:.0f} ms", f"{base * 1e6:.0f} µs"])
    headlines.append(Headline("redaction", "redact(), worst of 7 hostile 60 KB texts", f"{worst * 1e3:.0f} ms",
                              "", ""))
    print(support.table(["text", "chars", "redact()", "str.replace"], rows, title="Redaction"))
    support.write_headlines(options.json, headlines)


if __name__ == "__main__":
    main()
