"""HTTP: requests per second of the create route against a trivial route of the same server.

    python benchmarks/bench_http.py [--quick] [--json PATH]

A temporary GOALHUB_HOME with its own embedded Redis and embedded store, the karaoke plugin,
and the real API server (``goalhub.api.serve``: waitress, 2 processes x 4 threads) on
127.0.0.1. A bounded load from 127.0.0.1 only: 4 client threads, each with its own keep-alive
``http.client`` connection, send requests back to back for a few seconds per run (never more
than 10 s); runs alternate between the two routes:

- ``GET /healthz``: the HTTP floor (waitress + Flask + the error model, no store, no Redis);
- ``POST /goals?type=karaoke`` with a bearer token: auth, body checks, the session read from
  the store, the accepted goal written to the store (``goalhub.outbox``, state ``creating``),
  ``create_goal`` enqueued on Redis, ``202``. No claim; no worker runs (the jobs only queue
  up), so this is the API's own cost.

req/s median [min - max] over the runs; p50/p95 per request over all of a route's requests. The
ratio is taken per run (create against the /healthz run just before it) and its median reported:
this machine's speed drifts by 2x within a minute, and a ratio of two medians taken at different
moments would carry that drift.

Where a request's CPU goes, per run: the API's processes, the embedded Redis and this client
(psutil: user + system time over the run, divided by its requests), and the app alone: the
same two requests through the Flask app's WSGI call in this process, without a server. The create
route's app alone is also taken with its enqueue (one Redis transaction) replaced by nothing, and
with its store write (the accepted record) replaced by nothing, to show what each costs inside a
request.

Threads per API process (``goalhub serve --threads``): the create route again on a second server
of 2 processes x 2 threads, runs alternating with the first (2 x 4, the default), each with the
same 4 client threads: req/s and the API processes' CPU per request of each, and their ratios
per pair of runs.
"""

from __future__ import annotations

import http.client
import json
import statistics
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import psutil
import support
from support import Headline, Spread

THREADS = 4


def load(base: str, method: str, path: str, body: Any, headers: dict[str, str], seconds: float,
         expect: int) -> tuple[float, list[float], int]:
    """(req/s, latencies in ms, errors) of THREADS threads sending requests for ``seconds``."""
    url = urlsplit(base)
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    errors = [0] * THREADS
    start_line = threading.Barrier(THREADS + 1)
    stop_at = [0.0]

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        start_line.wait()
        mine = latencies[index]
        while time.perf_counter() < stop_at[0]:
            payload = json.dumps(body(), separators=(",", ":")) if body else None
            began = time.perf_counter()
            connection.request(method, path, body=payload, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append((time.perf_counter() - began) * 1000)
            if response.status != expect:
                errors[index] += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + seconds
    began = time.perf_counter()
    start_line.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    every = [ms for mine in latencies for ms in mine]
    return len(every) / elapsed, every, sum(errors)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU seconds used so far by these processes (those gone count 0)."""
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def api_tree(server: Any) -> list[psutil.Process]:
    """A pre-forked API server's parent and children."""
    parent = psutil.Process(server.popen.pid)
    return [parent, *parent.children(recursive=True)]


def threads_pairs(servers: dict[int, tuple[Any, str]], route: tuple, runs: int,
                  seconds: float) -> dict[int, dict[str, list[float]]]:
    """The create route on each server (threads per process -> (server, base)), runs alternating:
    req/s and the API processes' CPU µs per request, per run."""
    trees = {threads: api_tree(server) for threads, (server, _) in servers.items()}
    found: dict[int, dict[str, list[float]]] = {threads: {"rates": [], "cpu": []} for threads in servers}
    for _, base in servers.values():  # warm-up
        load(base, *route[:4], 0.5, route[4])
    for _ in range(runs):
        for threads, (_, base) in servers.items():
            before = cpu_seconds(trees[threads])
            began = time.perf_counter()
            rate, _, errors = load(base, *route[:4], seconds, route[4])
            if errors:
                raise SystemExit(f"requests answered with an unexpected status on {threads} threads: {errors}")
            found[threads]["rates"].append(rate)
            found[threads]["cpu"].append((cpu_seconds(trees[threads]) - before) / (rate * (time.perf_counter() - began))
                                         * 1e6)
    return found


def app_alone(routes: dict[str, tuple], calls: int = 1000) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """CPU µs per request of each route through the Flask app's WSGI callable in this process (no
    server, no client, no test client: an environ built once per route), median of 3; and, for
    the create route, what its two writes cost of it. That route is measured again with
    ``create_goal``'s enqueue (its one Redis transaction) replaced by nothing, and with the
    accepted goal's store write (``goalhub.outbox.accept``, issue 21) replaced by nothing: each
    difference is what that write costs the API process inside a request. The versions
    alternate, so they see the same machine."""
    import io

    from werkzeug.test import EnvironBuilder

    from goalhub import outbox
    from goalhub.api import create_app

    app = create_app()
    out: dict[str, float] = {}
    shares: dict[str, dict[str, float]] = {}
    statuses: list[str] = []
    real = {"enqueue": outbox.enqueue, "accept": outbox.accept}

    def start_response(status: str, response_headers: list, exc_info: Any = None) -> None:
        statuses.append(status)

    for name, (method, path, body, headers, expect) in routes.items():
        route, _, query = path.partition("?")
        template = EnvironBuilder(path=route, query_string=query, method=method, headers=headers,
                                  data=b"{}" if body else None).get_environ()
        statuses.clear()
        versions: dict[str, dict[str, Any]] = {"as it is": {}}
        if path.startswith("/goals"):
            versions["without enqueue"] = {"enqueue": lambda goal_id, **_: None}
            versions["without store write"] = {"accept": lambda db, goal, **_: str(goal["_id"])}
        samples: dict[str, list[float]] = {version: [] for version in versions}
        for _ in range(4):  # the first is a warm-up
            for version, replaced in versions.items():
                for attribute, function in replaced.items():
                    setattr(outbox, attribute, function)
                try:
                    began = time.process_time()
                    for _ in range(calls):
                        environ = dict(template)
                        if body:
                            payload = json.dumps(body(), separators=(",", ":")).encode()
                            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(payload), str(len(payload))
                        answer = app(environ, start_response)
                        b"".join(answer)
                        answer.close()
                    samples[version].append((time.process_time() - began) / calls * 1e6)
                finally:
                    for attribute, function in real.items():
                        setattr(outbox, attribute, function)
        assert {int(status[:3]) for status in statuses} == {expect}, (name, set(statuses))
        medians = {version: statistics.median(values[1:]) for version, values in samples.items()}
        out[name] = medians["as it is"]
        if len(medians) > 1:
            shares[name] = {"enqueue": medians["as it is"] - medians["without enqueue"],
                            "store": medians["as it is"] - medians["without store write"]}
    return out, shares


def main() -> None:
    options = support.arguments(__doc__)
    runs, seconds = (3, 2.0) if options.quick else (7, 3.0)
    assert seconds <= 10
    results: dict[str, dict[str, Any]] = {}
    with support.temporary_home(load_plugins=("karaoke",)) as home:
        from goalhub.auth import mint_token
        from goalhub.connection import embedded_redis_pid
        from goalhub.queues import get_queue
        from goalhub.store import get_database

        session_id = support.new_session(get_database())
        token = mint_token(support.STREAMER, ["CREATOR"])  # before the server: one dev key file
        api, base = support.start_api(home, workers=2, threads=4)
        with support.children(api):
            routes = {
                "GET /healthz": ("GET", "/healthz", None, {}, 200),
                "POST /goals?type=karaoke": (
                    "POST", "/goals?type=karaoke",
                    lambda: {"levels": [{"target": 100}], "context": {"session_id": session_id},
                             "nbf": round(time.time(), 3)},
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, 202),
            }
            for route in routes.values():  # warm-up: every API process's first requests
                load(base, *route[:4], 0.5, route[4])
            api_process = psutil.Process(api.popen.pid)
            api_processes = [api_process, *api_process.children(recursive=True)]  # the pre-forked children
            redis_process = [psutil.Process(pid)] if (pid := embedded_redis_pid(home)) else []
            results = {name: {"rates": [], "latencies": [], "errors": 0, "cpu": {"API": [], "Redis": [], "client": []}}
                       for name in routes}
            for run in range(runs):
                for name, route in routes.items():
                    before = cpu_seconds(api_processes), cpu_seconds(redis_process), time.process_time()
                    began = time.perf_counter()
                    rate, latencies, errors = load(base, *route[:4], seconds, route[4])
                    requests = rate * (time.perf_counter() - began)
                    after = cpu_seconds(api_processes), cpu_seconds(redis_process), time.process_time()
                    for part, b, a in zip(("API", "Redis", "client"), before, after, strict=True):
                        results[name]["cpu"][part].append((a - b) / requests * 1e6)
                    results[name]["rates"].append(rate)
                    results[name]["latencies"] += latencies
                    results[name]["errors"] += errors
                support.log(f"http: run {run + 1}/{runs}: " + ", ".join(
                    f"{n} {r['rates'][-1]:,.0f} req/s" for n, r in results.items()))
            queued = get_queue().count
            fewer, fewer_base = support.start_api(home, workers=2, threads=2)
            with support.children(fewer):
                by_threads = threads_pairs({4: (api, base), 2: (fewer, fewer_base)}, routes["POST /goals?type=karaoke"],
                                           runs, seconds)
        alone, shares = app_alone(routes)

    floor = Spread.of(results["GET /healthz"]["rates"])
    paired = {name: Spread.of(rate / healthz for rate, healthz in zip(r["rates"], results["GET /healthz"]["rates"],
                                                                       strict=True))
              for name, r in results.items()}
    print(f"## HTTP: {THREADS} client threads on 127.0.0.1, keep-alive, {runs} runs of {seconds:.0f} s per route; "
          "server: waitress 2 processes x 4 threads\n")
    rows, headlines = [], []
    for name, r in results.items():
        rate = Spread.of(r["rates"])
        lat = r["latencies"]
        rows.append([name, rate.fmt(0), paired[name].fmt(2), f"{support.percentile(lat, 50):.1f}",
                     f"{support.percentile(lat, 95):.1f}", r["errors"]])
        if name != "GET /healthz":
            verdict = "meets" if paired[name].median >= 0.5 else "misses"
            headlines.append(Headline("http", f"{name}, req/s ({THREADS} client threads)", f"{rate.median:,.0f} req/s",
                                      f"GET /healthz {floor.median:,.0f} req/s",
                                      f"{paired[name].median:.2f} per run [{paired[name].low:.2f} - "
                                      f"{paired[name].high:.2f}] (goal >= 0.5: {verdict}; was 0.28)"))
    print(support.table(["route", "req/s median [min - max]", "vs /healthz, per run: median [min - max]", "p50 ms",
                         "p95 ms", "errors"], rows))
    print(f"{queued} create_goal jobs were enqueued by the POSTs (no worker ran). The client threads share the "
          "machine's cores (and one GIL) with the server, so the floor is a floor of this client too.\n")
    cpu_rows = []
    for name, r in results.items():
        parts = {part: statistics.median(values) for part, values in r["cpu"].items()}
        cpu_rows.append([name, *(f"{parts[p]:,.0f}" for p in ("API", "Redis", "client")),
                         f"{sum(parts.values()):,.0f}", f"{alone[name]:,.0f}",
                         *((f"{shares[name]['store']:,.0f}", f"{shares[name]['enqueue']:,.0f}") if name in shares
                           else ("-", "-"))])
        if name in shares:
            headlines.append(Headline(
                "http", f"{name}: CPU µs per request, all processes (the app alone; of it, the accepted goal's "
                "store write; the enqueue)",
                f"{sum(parts.values()):,.0f} µs ({alone[name]:,.0f}; {shares[name]['store']:,.0f}; "
                f"{shares[name]['enqueue']:,.0f} µs)", "", ""))
    print(support.table(["route", "API processes", "embedded Redis", "client", "all", "the app alone (WSGI call)",
                         "of which the accepted goal's store write", "of which create_goal's enqueue"],
                        cpu_rows, title="CPU µs per request, median over the runs"))
    print("The app alone is the route's own work; the rest of the API processes' time is the server's "
          "(waitress: reading, parsing, thread hand-off, writing). Both routes pay the server and the "
          "client, so the ratio of rates is about the ratio of the 'all' column. The enqueue (RQ's job "
          "and goalhub's watch entry, one Redis transaction) is the app alone against the same route with "
          "the enqueue replaced by nothing, measured alternately in this process.\n")
    rate_ratio = Spread.of(two / four for two, four in zip(by_threads[2]["rates"], by_threads[4]["rates"], strict=True))
    cpu_ratio = Spread.of(two / four for two, four in zip(by_threads[2]["cpu"], by_threads[4]["cpu"], strict=True))
    print(support.table(
        ["API server", "POST /goals?type=karaoke req/s", "API processes' CPU µs per request"],
        [[f"2 processes x {threads} threads{' (the default)' if threads == 4 else ''}",
          Spread.of(r["rates"]).fmt(0), Spread.of(r["cpu"]).fmt(0)] for threads, r in by_threads.items()],
        title=f"Threads per API process (goalhub serve --threads), runs alternating, {THREADS} client threads"))
    print(f"2 threads against 4, per pair of runs: req/s {rate_ratio.fmt(2)}x, CPU per request {cpu_ratio.fmt(2)}x. "
          "Fewer threads contend less for each process's GIL on a machine of few cores, and leave less room "
          "for requests waiting on the store's lock or on Redis.\n")
    headlines.append(Headline(
        "http", "POST /goals?type=karaoke on 2 API threads a process (--threads 2): req/s; API CPU µs per request",
        f"{Spread.of(by_threads[2]['rates']).median:,.0f} req/s; {Spread.of(by_threads[2]['cpu']).median:,.0f} µs",
        f"4 threads: {Spread.of(by_threads[4]['rates']).median:,.0f} req/s; "
        f"{Spread.of(by_threads[4]['cpu']).median:,.0f} µs",
        f"{rate_ratio.median:.2f}x req/s, {cpu_ratio.median:.2f}x CPU (per pair of runs)"))
    support.write_headlines(options.json, headlines)
    failed = {name: r["errors"] for name, r in results.items() if r["errors"]}
    if failed:  # a rate of refused requests measures nothing
        raise SystemExit(f"requests answered with an unexpected status: {failed}")


if __name__ == "__main__":
    main()
