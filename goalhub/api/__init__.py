"""goalhub's HTTP API (Flask), one module per concern:

- ``goals``: ``POST /goals`` (and ``/goal``) with ``?type=``/``?goal_type=``, ``GET /goals/<id>``,
  ``POST /goals/<id>/end``
- ``sessions``: ``POST /sessions``, ``GET /sessions/<id>``, ``POST /sessions/<id>/end``
- ``health``: ``GET /healthz``, ``GET /readyz``, ``GET /healthz/deep``
- ``dashboard``: the RQ dashboard under ``/rq``, behind authentication
- ``access`` (who is calling), ``payload`` (strict JSON in, documents out),
  ``idempotency`` (``x-request-id``/``Idempotency-Key``), ``errors`` (the one error model)

``serve()`` runs it under waitress, pre-forked (``goalhub.api.server``); ``goalhub serve`` calls it.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from goalhub import config, plugins
from goalhub.api import admin, dashboard, docs, errors, goals, health, metrics, observe, ops, sessions
from goalhub.api.payload import JSONProvider

__all__ = ["create_app", "serve"]


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """A new API app. ``settings`` override Flask configuration (tests)."""
    # The default /static route stays: rq-dashboard's pages link to url_for("static").
    # Plugins load (and broken ones are logged) when the process starts, not on a first request.
    plugins.get_plugin_manager()
    app = Flask("goalhub.api")
    app.json_provider_class = JSONProvider
    app.json = JSONProvider(app)
    # Werkzeug refuses longer bodies with a 413 before the view reads them.
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes()
    app.config.update(settings or {})
    config.settings()  # a bad GOALHUB_* value stops here, named, before any request
    observe.register(app)
    for module in (goals, sessions, health, metrics, admin):
        app.register_blueprint(module.blueprint)
    docs.register(app)
    dashboard.register(app)
    ops.register(app)
    errors.register(app)
    return app


def serve(host: str = "127.0.0.1", port: int = 8000, workers: int = 2, threads: int = 4) -> None:
    """Serve the API with waitress (``workers`` processes of ``threads`` threads each); blocks."""
    from goalhub.api.server import run

    run(host=host, port=port, workers=workers, threads=threads)
