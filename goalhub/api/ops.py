"""goalhub's own dashboard pages, beside rq-dashboard under ``/rq/goalhub/``.

rq-dashboard reads RQ's registries only, so it never shows what rq-scheduler holds (the
activations at ``nbf`` and ends at ``exp``), nor the scheduler process, nor a goal's
receiver outcomes. These pages do:

- ``/rq/goalhub/`` — the schedulers' liveness (last poll, lock holder), counts, links.
- ``/rq/goalhub/scheduled`` — every scheduled activation and end (goal, class, due time)
  with a Cancel button, and the receivers' retries waiting for their backoff.
- ``/rq/goalhub/goals/<id>`` — a goal and its receiver outcomes, each linked to its RQ job.

Same guard as rq-dashboard (``goalhub.api.access``: Basic or an ADMIN bearer token; actions
same-origin only). What the pages show is read in ``goalhub.api.ops_read``; the links from
rq-dashboard's own pages to these are ``goalhub.api.dashboard``'s.
"""

from __future__ import annotations

import time
from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from flask import Blueprint, Flask, Response, abort, current_app, redirect, render_template_string, request
from rq.job import Job
from werkzeug.wrappers import Response as BaseResponse

from goalhub import breaker, liveness, liveview, tasks
from goalhub.api import ops_read
from goalhub.api.access import require_dashboard_access, require_same_origin
from goalhub.connection import get_redis
from goalhub.errors import BadRequest
from goalhub.queues import all_queues, get_scheduler, job_parts
from goalhub.tasks import LIFECYCLE_KINDS

PREFIX = "/rq/goalhub"
blueprint = Blueprint("goalhub_ops", __name__, url_prefix=PREFIX)

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


@blueprint.before_request
def _guard() -> None:
    require_dashboard_access()
    if request.method not in ("GET", "HEAD"):
        require_same_origin()


@blueprint.get("/")
def home() -> Response:
    now = time.time()
    counts = dict.fromkeys(LIFECYCLE_KINDS, 0)
    for job in ops_read.scheduled_jobs():
        counts[job["kind"]] = counts.get(job["kind"], 0) + 1
    schedulers = [{**s, "age": now - s["last_poll"], "when": ops_read.when(s["last_poll"])} for s in liveness.beats()]
    lock = liveness.lock_holder()
    lock["ago"] = f"{now - lock['taken_at']:.1f} s ago" if lock.get("taken_at") else ""
    queues = [{"name": q.name, "count": q.count, "failed": q.failed_job_registry.count} for q in all_queues()]
    tripped = [{"id": rid, "when": ops_read.when(state["tripped_at"]), **state} for rid, state in breaker.tripped().items()]
    liveview.ensure("api")
    return _page("operations", _HOME, counts=counts, schedulers=schedulers, lock=lock, queues=queues,
                 tripped=tripped, live=liveview.health())


@blueprint.get("/scheduled")
def scheduled() -> Response:
    return _page("scheduled", _SCHEDULED, jobs=ops_read.scheduled_jobs(), retries=ops_read.waiting_retries())


@blueprint.post("/scheduled/<jid>/cancel")
def cancel(jid: str) -> BaseResponse:
    """Cancel a lifecycle job on purpose: the goal is unmarked, so the reconciler leaves it be."""
    jobs = get_scheduler()
    if jid not in jobs:
        abort(404)
    kind, goal_id = job_parts(jid)
    jobs.cancel(jid)
    job = Job.fetch_many([jid], connection=get_redis())[0]
    if job is not None:
        job.delete()
    if kind in LIFECYCLE_KINDS and len(goal_id) == 24:
        try:
            tasks.unmark(kind, goal_id)
        except InvalidId:
            pass
    current_app.logger.warning("dashboard: cancelled scheduled job %s", jid)
    return redirect(f"{PREFIX}/scheduled", code=303)


@blueprint.get("/goals")
def goal_lookup() -> BaseResponse:
    """The lookup form's answer: a redirect to the goal's page, for a goal id only (24 hex; no
    other text reaches the Location header: no open redirect, no header injection)."""
    goal_id = request.args.get("id", "").strip().lower()
    if not ObjectId.is_valid(goal_id) or len(goal_id) != 24:
        raise BadRequest("a goal id is 24 hex digits", code="invalid_id", field="id")
    return redirect(f"{PREFIX}/goals/{goal_id}", code=303)


@blueprint.get("/goals/<goal_id>")
def goal_page(goal_id: str) -> Response:
    found = ops_read.goal_outcomes(goal_id)
    if found is None:
        abort(404)
    goal, outcomes = found
    return _page(f"goal {goal_id}", _GOAL, goal=goal, goal_id=goal_id, outcomes=outcomes)


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
