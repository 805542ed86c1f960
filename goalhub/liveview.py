"""The live view of plugin health: one picture of every goalhub process, on every machine.

Each long-running process (every API process, worker and scheduler) reports to Redis what it
loaded (``start``: a heartbeat thread, every ``GOALHUB_LIVE_INTERVAL`` seconds): each plugin
with its distribution and version, the ones that failed to load and why, their warnings,
the receivers declared for a goal class no installed goal type creates, and whether the
plugin distributions installed now differ from those it loaded (then it also logs it, once
per change: ``goalhub reload`` loads them). A process that stops cleanly withdraws its
report; one that has not reported for ``GOALHUB_LIVE_STALE_AFTER`` seconds is shown
``stale`` (and dropped from the view after ten times that).

``health`` reads the reports, the circuit breakers and the slow receivers' isolation (which
live in Redis already, ``goalhub.breaker``, ``goalhub.slowness``) into one verdict: ``ready``, or ``degraded`` with what is wrong and
where. ``goalhub plugins``, ``/readyz``, ``/admin/receivers``, ``/rq/goalhub/`` and
``goalhub up``'s output all read it.

Redis: one hash, ``goalhub:live:processes`` (process id -> JSON report).
"""

from __future__ import annotations

import atexit
import difflib
import json
import logging
import os
import socket
import threading
import time
from typing import Any

from goalhub import breaker, config, plugins, receivers, slowness
from goalhub.connection import get_redis
from goalhub.hookspecs import EVENT_HOOKS

log = logging.getLogger(__name__)

KEY = "goalhub:live:processes"
FORGET_AFTER = 10  # a stale report is dropped after this many GOALHUB_LIVE_STALE_AFTER periods
ROLES = ("api", "worker", "scheduler")

# This process's reporting: its role once started, when it last published, what it last warned.
_me: dict[str, Any] = {"role": None, "pid": 0, "started_at": 0.0, "published": 0.0, "warned": (),
                       "beating": 0, "withdrawn": 0}
_lock = threading.Lock()


def did_you_mean(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def class_warnings() -> list[dict[str, Any]]:
    """Receivers declared for a goal class that no installed goal type creates (a typo such
    as ``ConfettiGaol``: every goal of the real class would be ``skipped`` for it)."""
    known = set(plugins.goal_classes())
    found = []
    for event in EVENT_HOOKS:
        for r in receivers.receivers(event):
            named = set(r.classes or ()) | set(r.excluded)
            for name in sorted(named - known):
                found.append({"plugin": r.plugin, "receiver": r.name, "event": event, "class": name,
                              "warning": f"{r.id} names goal class {name!r}, which no installed goal type creates"
                              + did_you_mean(name, known)})
    return found


def process_id(role: str, pid: int | None = None) -> str:
    return f"{role}@{socket.gethostname()[:64]}:{pid or os.getpid()}"


def report(role: str) -> dict[str, Any]:
    """What this process loaded, as it publishes it."""
    if _me["pid"] != os.getpid():  # a fresh process (or a fork): its own start time
        _me.update(pid=os.getpid(), started_at=time.time(), published=0.0, warned=())
    listed = []
    for info in plugins.plugin_infos():
        if info.name in plugins.DEFAULT_PLUGINS:
            continue
        listed.append({"name": info.name, "dist": info.dist, "version": info.version,
                       "loaded": not info.blocked and not info.error, "blocked": info.blocked,
                       "error": info.error, "warnings": list(info.warnings)})
    return {
        "id": process_id(role), "role": role, "host": socket.gethostname()[:64], "pid": os.getpid(),
        "ppid": os.getppid(), "started_at": _me["started_at"], "beat_at": time.time(),
        "plugins": listed,
        "class_warnings": [{"plugin": w["plugin"], "warning": w["warning"]} for w in class_warnings()],
        "installed_changes": plugins.installed_changes(),
    }


def publish(role: str) -> dict[str, Any]:
    """Report this process now; log (once per change) when the installed plugins differ."""
    found = report(role)
    with _lock:  # never after ``withdraw``: a report written then would show a stopped process stale
        if _me["withdrawn"] == os.getpid():
            return found
        _me.update(role=role, published=time.monotonic(), plugins=_plugin_set())
        changes = tuple(found["installed_changes"])
        if changes and changes != _me["warned"]:
            log.warning("the installed plugin distributions differ from those this %s process loaded "
                        "(%s); `goalhub reload` loads them", role, "; ".join(changes))
        _me["warned"] = changes
        get_redis().hset(KEY, found["id"], json.dumps(found))
    return found


def ensure(role: str) -> None:
    """Publish unless this process did within the interval, with the plugins it has now, and
    its report is still there (a process without a heartbeat thread, such as an app under a
    test client, still shows in the view it reads)."""
    if (_me["pid"] != os.getpid() or time.monotonic() - _me["published"] >= config.settings().LIVE_INTERVAL
            or _me.get("plugins") != _plugin_set() or not get_redis().hexists(KEY, process_id(role))):
        publish(role)


def _plugin_set() -> tuple[tuple[str, int], ...]:
    return tuple(sorted((name, id(plugin)) for name, plugin in plugins.loaded_plugin_manager().list_name_plugin()))


def withdraw() -> None:
    """Remove this process's report (it stops cleanly: gone, not stale)."""
    role = _me["role"]
    if role is not None and _me["pid"] == os.getpid():
        with _lock:
            _me["withdrawn"] = os.getpid()
            try:
                get_redis().hdel(KEY, process_id(role))
            except Exception as exc:  # noqa: BLE001  (stopping anyway; the report will go stale)
                log.warning("could not withdraw this process's live report: %s", exc)


def start(role: str) -> None:
    """Report at once and then every ``GOALHUB_LIVE_INTERVAL`` seconds, from a daemon thread
    (the process does not wait for it); the report is withdrawn at exit."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    _me["role"] = role
    if _me["beating"] == os.getpid():
        return  # one heartbeat thread a process
    _me["beating"] = os.getpid()
    atexit.register(withdraw)

    def beat() -> None:
        while True:  # the first report at once, from here: the process serves meanwhile
            try:
                publish(_me["role"])
            except Exception as exc:  # noqa: BLE001  (Redis away: the next beat tries again)
                log.warning("live view report failed: %s: %s", type(exc).__name__, exc)
            time.sleep(config.settings().LIVE_INTERVAL)

    threading.Thread(target=beat, name="goalhub-liveview", daemon=True).start()


def processes() -> list[dict[str, Any]]:
    """Every process's last report, with its ``age`` in seconds and whether it is ``stale``;
    reports stale for ``FORGET_AFTER`` periods are dropped."""
    client = get_redis()
    now, stale_after = time.time(), config.settings().LIVE_STALE_AFTER
    found, forgotten = [], []
    for key, raw in client.hgetall(KEY).items():
        try:
            entry = json.loads(raw)
            age = now - float(entry["beat_at"])
        except (ValueError, KeyError, TypeError):
            forgotten.append(key)
            continue
        if age > stale_after * FORGET_AFTER:
            forgotten.append(key)
            continue
        entry.update(age=round(max(age, 0.0), 1), stale=age > stale_after)
        found.append(entry)
    if forgotten:
        client.hdel(KEY, *forgotten)
    return sorted(found, key=lambda e: (ROLES.index(e["role"]) if e.get("role") in ROLES else 9, e["id"]))


def health() -> dict[str, Any]:
    """One verdict over every process's report and the circuit breakers: ``status`` ``ready``
    or ``degraded``; ``problems`` (plugin, reason, the processes that see it), ``stale`` and
    ``reload_needed`` (process ids), and the ``processes`` themselves."""
    reports = processes()
    found: dict[tuple[str, str], list[str]] = {}

    def problem(plugin: str, reason: str, where: str | None) -> None:
        seen = found.setdefault((plugin, reason), [])
        if where:
            seen.append(where)

    versions: dict[str, dict[str, list[str]]] = {}
    for entry in reports:
        if entry["stale"]:
            continue
        for p in entry.get("plugins", []):
            if p.get("error") and not p.get("blocked"):
                problem(p["name"], f"failed to load: {p['error']}", entry["id"])
            for warning in p.get("warnings", []):
                problem(p["name"], warning, entry["id"])
            if p.get("loaded"):
                versions.setdefault(p["name"], {}).setdefault(str(p.get("version")), []).append(entry["id"])
        for warning in entry.get("class_warnings", []):
            problem(warning["plugin"], warning["warning"], entry["id"])
    for name, by_version in versions.items():
        if len(by_version) > 1:
            problem(name, "different versions run: " + "; ".join(
                f"{version} in {', '.join(ids)}" for version, ids in sorted(by_version.items())), None)
    for receiver_id, state in sorted(breaker.tripped().items()):
        problem(receiver_id.split(".", 1)[0], f"receiver {receiver_id} is paused by its circuit breaker after "
                f"{state.get('failures')} failed events: {state.get('last_error')}", None)
    problems = [{"plugin": plugin, "reason": reason, "processes": sorted(set(where))}
                for (plugin, reason), where in sorted(found.items())]
    stale = [e["id"] for e in reports if e["stale"]]
    reload_needed = {e["id"]: e["installed_changes"] for e in reports
                     if not e["stale"] and e.get("installed_changes")}
    degraded = bool(problems or stale or reload_needed)
    # Slow receivers run as their own jobs: worth knowing, not a degradation.
    return {"status": "degraded" if degraded else "ready", "problems": problems, "stale": stale,
            "reload_needed": reload_needed, "slow": slowness.isolated(), "processes": reports}


def summary(view: dict[str, Any]) -> list[str]:
    """The view as lines for a terminal (``goalhub up``, ``goalhub plugins``)."""
    processes_ = view["processes"]
    counts = {role: sum(1 for e in processes_ if e["role"] == role and not e["stale"]) for role in ROLES}
    lines = [f"live view: {view['status']}; " + ", ".join(f"{n} {role}" for role, n in counts.items())
             + " process(es) reporting" + (f", {len(view['stale'])} stale" if view["stale"] else "")]
    lines += [f"  {p['plugin']}: {p['reason']}" + (f"  [{', '.join(p['processes'])}]" if p["processes"] else "")
              for p in view["problems"]]
    lines += [f"  stale (no report for over {config.settings().LIVE_STALE_AFTER:g} s): {pid}" for pid in view["stale"]]
    lines += [f"  {rid} runs as its own job (overran its budget: {s['overrun_s']} s > {s['budget_s']} s)"
              for rid, s in sorted(view.get("slow", {}).items())]
    lines += [f"  {pid} runs other plugins than are installed ({'; '.join(changes)}): `goalhub reload` loads them"
              for pid, changes in view["reload_needed"].items()]
    return lines
