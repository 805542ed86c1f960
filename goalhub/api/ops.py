"""goalhub's own dashboard pages, beside rq-dashboard under ``/rq/goalhub/``.

rq-dashboard reads RQ's registries only, so it never shows what rq-scheduler holds (the
activations at ``nbf`` and ends at ``exp``), nor the scheduler process, nor a goal's
receiver outcomes. These pages do:

- ``/rq/goalhub/`` — the schedulers' liveness (last poll, lock holder), counts, links.
- ``/rq/goalhub/scheduled`` — every scheduled activation and end (goal, class, due time)
  with a Cancel button, and the receivers' retries waiting for their backoff.
- ``/rq/goalhub/goals/<id>`` — a goal and its receiver outcomes, each linked to its RQ job.

Same guard as rq-dashboard (Basic or an ADMIN bearer token; actions same-origin only).
rq-dashboard's navigation gets links to these pages, its Jobs tab opens on goalhub's
queue instead of a ``default`` queue goalhub never uses, and ``/rq`` answers the queues
page itself instead of redirecting (the redirect lost Basic credentials in Chromium).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template_string, request
from rq.job import Job
from werkzeug.wrappers import Response as BaseResponse

from goalhub import breaker, liveview, reconcile
from goalhub.connection import get_redis
from goalhub.queues import all_queues, get_queue, get_scheduler, job_id
from goalhub.store import get_database

PREFIX = "/rq/goalhub"
blueprint = Blueprint("goalhub_ops", __name__, url_prefix=PREFIX)
KINDS = ("activate", "end")

_BASE = """<!doctype html><html><head><meta charset="utf-8"><title>goalhub · {{ title }}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222}
nav{background:#1f3a5f;padding:.6em 1em}nav a{color:#fff;margin-right:1.2em;text-decoration:none}
main{padding:1em 1.5em}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}
th,td{border-bottom:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#f3f5f8}.ok{color:#1a7f37}.failed,.dead{color:#c62828;font-weight:600}
.retrying,.late{color:#b26a00}.muted{color:#777}code{font-size:12px}
button{background:#c62828;color:#fff;border:0;padding:.25em .7em;border-radius:3px;cursor:pointer}
.card{display:inline-block;border:1px solid #ddd;border-radius:4px;padding:.6em 1em;margin:0 1em 1em 0}
.big{font-size:22px;font-weight:600}
</style></head><body>
<nav><a href="{{ prefix }}/"><b>goalhub</b></a><a href="{{ prefix }}/scheduled">Scheduled</a>
<a href="/rq/0/view/queues">Queues</a><a href="/rq/0/view/jobs">Jobs</a><a href="/rq/0/view/workers">Workers</a>
<a href="/docs/">API docs</a></nav><main>{{ body|safe }}</main></body></html>"""

_HOME = """<h2>goalhub operations</h2>
<div class="card"><div class="muted">scheduled activations</div><div class="big">{{ counts.activate }}</div></div>
<div class="card"><div class="muted">scheduled ends</div><div class="big">{{ counts.end }}</div></div>
{% for q in queues %}<div class="card"><div class="muted">queue {{ q.name }}</div>
<div class="big">{{ q.count }}</div><div class="muted">{{ q.failed }} failed</div></div>{% endfor %}
<h3>Scheduler</h3>
{% if not schedulers %}<p class="dead">No scheduler has polled in the last minute: nothing activates at nbf or ends
at exp, and no retry moves. Start one: <code>goalhub scheduler</code>.</p>{% endif %}
<table><tr><th>scheduler</th><th>host</th><th>pid</th><th>last poll</th><th>interval</th></tr>
{% for s in schedulers %}<tr><td>{{ s.name }}</td><td>{{ s.host }}</td><td>{{ s.pid }}</td>
<td class="{{ 'late' if s.age > 5 else 'ok' }}">{{ '%.1f'|format(s.age) }} s ago ({{ s.when }})</td>
<td>{{ s.interval }} s</td></tr>{% endfor %}</table>
<p>rq-scheduler lock: {% if lock.holder %}last taken by <b>{{ lock.holder }}</b> {{ lock.ago }}{% else %}never taken
in the last minute{% endif %}; held right now: {{ 'yes' if lock.held_now else 'no' }}.</p>
<h3>Receivers paused by their circuit breaker</h3>
<table><tr><th>receiver</th><th>tripped</th><th>failed events</th><th>last error</th></tr>
{% for t in tripped %}<tr><td class="failed">{{ t.id }}</td><td>{{ t.when }}</td><td>{{ t.failures }}</td>
<td><code>{{ t.last_error }}</code></td></tr>
{% else %}<tr><td colspan="4" class="muted">none: every receiver runs</td></tr>{% endfor %}</table>
{% if tripped %}<p class="muted"><code>goalhub resume RECEIVER</code> (or <code>POST /admin/receivers/RECEIVER/resume</code>)
closes one and delivers every event it missed.</p>{% endif %}
<h3>Plugin health (live view): <span class="{{ 'ok' if live.status == 'ready' else 'failed' }}">{{ live.status }}</span></h3>
<table><tr><th>process</th><th>state</th><th>plugins loaded</th><th>needs reload</th></tr>
{% for p in live.processes %}<tr><td>{{ p.id }}</td><td class="{{ 'dead' if p.stale else 'ok' }}">{{ 'stale' if p.stale
else 'reporting' }} ({{ p.age }} s ago)</td><td>{% for x in p.plugins if x.loaded %}{{ x.name }} {{ x.version or '' }}{{ ', ' if not loop.last }}{% endfor %}</td>
<td>{{ p.installed_changes|join('; ') or 'no' }}</td></tr>
{% else %}<tr><td colspan="4" class="dead">no process reports: none is running</td></tr>{% endfor %}</table>
{% for p in live.problems %}<p class="failed">{{ p.plugin }}: {{ p.reason }} <span class="muted">{{ p.processes|join(', ') }}</span></p>{% endfor %}
<h3>A goal's receiver outcomes</h3>
<form method="get" action="{{ prefix }}/goals"><input name="id" size="30" placeholder="goal id (24 hex)">
<input type="submit" value="Show"></form>"""

_SCHEDULED = """<h2>Scheduled activations and ends</h2>
<p class="muted">Held by rq-scheduler (rq-dashboard does not show them). Cancel removes the job and tells the
reconciler to leave the goal alone; a job deleted any other way is found by the reconciler, and the goal is
activated or ended late.</p>
<table><tr><th>due (UTC)</th><th></th><th>job</th><th>kind</th><th>goal</th><th>class</th><th></th></tr>
{% for j in jobs %}<tr><td>{{ j.due }}</td><td class="{{ 'late' if j.seconds < 0 else 'muted' }}">{{ j.relative }}</td>
<td><a href="/rq/0/view/job/{{ j.id }}"><code>{{ j.id }}</code></a></td><td>{{ j.kind }}</td>
<td>{% if j.goal_id %}<a href="{{ prefix }}/goals/{{ j.goal_id }}"><code>{{ j.goal_id }}</code></a>{% endif %}</td>
<td>{{ j.cls or '' }}</td><td><form method="post" action="{{ prefix }}/scheduled/{{ j.id }}/cancel">
<button type="submit">Cancel</button></form></td></tr>
{% else %}<tr><td colspan="7" class="muted">nothing scheduled</td></tr>{% endfor %}</table>
<h3>Retries waiting for their backoff</h3>
<table><tr><th>due (UTC)</th><th>job</th><th>queue</th><th>description</th></tr>
{% for r in retries %}<tr><td>{{ r.due }}</td><td><a href="/rq/0/view/job/{{ r.id }}"><code>{{ r.id }}</code></a></td>
<td>{{ r.queue }}</td><td>{{ r.description }}</td></tr>
{% else %}<tr><td colspan="4" class="muted">none</td></tr>{% endfor %}</table>"""

_GOAL = """<h2>{{ goal._cls }} <code>{{ goal_id }}</code></h2>
<p>active: <b>{{ goal.active }}</b> · nbf {{ goal.nbf_text }} · exp {{ goal.exp_text }}
{% if goal.ended_at %} · ended ({{ goal.end_reason }}){% endif %}
{% if goal.request_id %} · request id <code>{{ goal.request_id }}</code>{% endif %}</p>
<table><tr><th>event</th><th>receiver</th><th>status</th><th>attempts</th><th>duration</th><th>error</th>
<th>RQ job</th></tr>
{% for o in outcomes %}<tr><td>{{ o.event }}</td><td>{{ o.plugin }}.{{ o.receiver }}</td>
<td class="{{ o.status }}">{{ o.status }}</td><td>{{ o.attempts or '' }}</td>
<td>{{ '%.1f ms'|format(o.duration_ms) if o.duration_ms is defined and o.duration_ms is not none else '' }}</td>
<td><code>{{ o.error or '' }}</code></td>
<td>{% if o.job_url %}<a href="{{ o.job_url }}"><code>{{ o.job_id }}</code></a>{% else %}<span class="muted">{{ o.job_note }}</span>{% endif %}</td></tr>
{% else %}<tr><td colspan="7" class="muted">no outcome recorded</td></tr>{% endfor %}</table>"""


def _page(title: str, body: str, **values: Any) -> Response:
    inner = render_template_string(body, prefix=PREFIX, **values)
    response = Response(render_template_string(_BASE, title=title, body=inner, prefix=PREFIX))
    response.headers["Cache-Control"] = "no-store"
    return response


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _relative(seconds: float) -> str:
    return f"in {seconds:.0f} s" if seconds >= 0 else f"overdue {-seconds:.0f} s"


@blueprint.before_request
def _guard() -> None:
    from goalhub.api.dashboard import _authenticate, _same_origin

    _authenticate()
    if request.method not in ("GET", "HEAD"):
        _same_origin()


@blueprint.get("/")
def home() -> Response:
    now = time.time()
    counts = dict.fromkeys(KINDS, 0)
    for job in scheduled_jobs():
        counts[job["kind"]] = counts.get(job["kind"], 0) + 1
    schedulers = [{**s, "age": now - s["last_poll"], "when": _when(s["last_poll"])} for s in reconcile.schedulers()]
    lock = reconcile.lock_holder()
    lock["ago"] = f"{now - lock['taken_at']:.1f} s ago" if lock.get("taken_at") else ""
    queues = [{"name": q.name, "count": q.count, "failed": q.failed_job_registry.count} for q in all_queues()]
    tripped = [{"id": rid, "when": _when(state["tripped_at"]), **state} for rid, state in breaker.tripped().items()]
    liveview.ensure("api")
    return _page("operations", _HOME, counts=counts, schedulers=schedulers, lock=lock, queues=queues,
                 tripped=tripped, live=liveview.health())


def scheduled_jobs() -> list[dict[str, Any]]:
    """rq-scheduler's jobs, soonest first: id, kind, goal id, goal class, due time."""
    now = time.time()
    connection = get_redis()
    scheduler = get_scheduler()
    entries: list[tuple[bytes, float]] = connection.zrange(  # type: ignore[assignment]
        scheduler.scheduled_jobs_key, 0, -1, withscores=True)
    jobs: list[dict[str, Any]] = []
    goal_ids: list[str] = []
    for raw_id, due in entries:
        jid = raw_id.decode()
        kind, _, goal_id = jid.partition("-")
        target = goal_id if len(goal_id) == 24 else None
        job: dict[str, Any] = {"id": jid, "kind": kind if kind in KINDS else "other", "goal_id": target,
               "due_epoch": due, "due": _when(due), "seconds": due - now, "relative": _relative(due - now)}
        jobs.append(job)
        if target:
            goal_ids.append(target)
    classes: dict[str, Any] = {}
    if goal_ids:
        wanted = []
        for gid in goal_ids:
            try:
                wanted.append(ObjectId(gid))
            except InvalidId:
                continue
        classes = {str(g["_id"]): g.get("_cls") for g in get_database().goals.find({"_id": {"$in": wanted}}, {"_cls": 1})}
    for job in jobs:
        job["cls"] = classes.get(job["goal_id"] or "")
    return jobs


def waiting_retries() -> list[dict[str, Any]]:
    """Jobs in RQ's own scheduled registries (receivers' retries after their backoff)."""
    found = []
    for queue in all_queues():
        registry = queue.scheduled_job_registry
        for jid in registry.get_job_ids(cleanup=False):
            job = Job.fetch_many([jid], connection=queue.connection)[0]
            due = registry.get_scheduled_time(jid) if job is not None else None
            found.append({"id": jid, "queue": queue.name, "description": job.description if job else "(gone)",
                          "due": _when(due.timestamp()) if due else "—"})
    return found


@blueprint.get("/scheduled")
def scheduled() -> Response:
    return _page("scheduled", _SCHEDULED, jobs=scheduled_jobs(), retries=waiting_retries())


@blueprint.post("/scheduled/<jid>/cancel")
def cancel(jid: str) -> BaseResponse:
    """Cancel a lifecycle job on purpose: the goal is unmarked, so the reconciler leaves it be."""
    scheduler = get_scheduler()
    if jid not in scheduler:
        abort(404)
    kind, _, goal_id = jid.partition("-")
    scheduler.cancel(jid)
    job = Job.fetch_many([jid], connection=get_redis())[0]
    if job is not None:
        job.delete()
    if kind in KINDS and len(goal_id) == 24:
        try:
            get_database().goals.update_one({"_id": ObjectId(goal_id)},
                                            {"$unset": {f"lifecycle.{kind}_at": ""},
                                             "$set": {f"lifecycle.{kind}_cancelled_at": time.time()}})
        except InvalidId:
            pass
    current_app.logger.warning("dashboard: cancelled scheduled job %s", jid)
    return redirect(f"{PREFIX}/scheduled", code=303)


@blueprint.get("/goals")
def goal_lookup() -> BaseResponse:
    return redirect(f"{PREFIX}/goals/{request.args.get('id', '').strip().lower()}", code=303)


@blueprint.get("/goals/<goal_id>")
def goal_page(goal_id: str) -> Response:
    try:
        _id = ObjectId(goal_id)
    except (InvalidId, TypeError):
        abort(404)
    goal = get_database().goals.find_one({"_id": _id})
    if goal is None:
        abort(404)
    goal["nbf_text"], goal["exp_text"] = _when(goal.get("nbf")), _when(goal.get("exp"))
    outcomes = sorted(get_database().outcomes.find({"goal_id": goal_id}),
                      key=lambda o: (o.get("event", ""), o.get("plugin", ""), o.get("receiver", "")))
    # The job that ran each receiver (recorded with its outcome: the event's own job when it ran
    # inline); a receiver not run yet has its own job waiting (``receiver-...``).
    ran_in = [o.get("job_id") or job_id("receiver", o["_id"]) for o in outcomes]
    jobs = Job.fetch_many(ran_in, connection=get_redis())
    for outcome, job in zip(outcomes, jobs, strict=True):
        if outcome.get("status") == "skipped":
            outcome["job_note"] = "no job (skipped)"
        elif job is None:
            outcome["job_note"] = "job expired from Redis"
        else:
            outcome["job_id"] = job.id
            outcome["job_url"] = f"/rq/0/view/job/{job.id}"
    return _page(f"goal {goal_id}", _GOAL, goal=goal, goal_id=goal_id, outcomes=outcomes)


# --- rq-dashboard, made to fit goalhub -----------------------------------------------------

_NAV_ANCHOR = '<ul class="navbar-nav mr-auto">'
_NAV_LINKS = (f'<li class="nav-item"><a href="{PREFIX}/" class="nav-link">goalhub</a></li>'
              f'<li class="nav-item"><a href="{PREFIX}/scheduled" class="nav-link">Scheduled</a></li>')


def _jobs_tab_on_goalhub_queue() -> None:
    # rq-dashboard's Jobs tab opens on a queue named "default" that goalhub never uses.
    if request.endpoint == "rq_dashboard.jobs_overview" and request.view_args is not None \
            and request.view_args.get("queue_name") is None:
        request.view_args["queue_name"] = get_queue().name


def _add_nav_links(response: Response) -> Response:
    if request.blueprint == "rq_dashboard" and response.mimetype == "text/html" and not response.direct_passthrough:
        html = response.get_data(as_text=True)
        if _NAV_ANCHOR in html:
            response.set_data(html.replace(_NAV_ANCHOR, _NAV_ANCHOR + _NAV_LINKS, 1))
    return response


def _rq_root() -> Any:
    return current_app.view_functions["rq_dashboard.queues_overview"](instance_number=0)


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
    app.before_request(_jobs_tab_on_goalhub_queue)
    app.after_request(_add_nav_links)
    # /rq without its slash: werkzeug would redirect to /rq/, and Chromium drops the address's
    # user:password@ on that redirect (a blank page behind a password prompt). rq-dashboard's
    # own queues view answers here instead, behind the same guard.
    # (An endpoint named in rq-dashboard's blueprint: its guard and hooks apply, and its
    # templates' url_for(".queues_overview") resolves.)
    app.add_url_rule("/rq", endpoint="rq_dashboard.goalhub_queues_without_slash", view_func=_rq_root)
