"""The Flask app of goalhub's API: its blueprints, hooks and error model put together."""

from __future__ import annotations

from typing import Any

from flask import Flask

from goalhub import config, plugins
from goalhub.api import admin, dashboard, docs, errors, goals, health, metrics, observe, ops, sessions
from goalhub.api.payload import JSONProvider


def create_app(settings: dict[str, Any] | None = None) -> Flask:
    """A new API app. ``settings`` override Flask configuration (tests)."""
    # The default /static route stays: rq-dashboard's pages link to url_for("static").
    # Plugins load (and broken ones are logged) when the process starts, not on a first request.
    plugins.get_plugin_manager()
    app = Flask("goalhub.api")
    app.json_provider_class = JSONProvider
    app.json = JSONProvider(app)
    # Werkzeug refuses longer bodies with a 413 before the view reads them.
    app.config["MAX_CONTENT_LENGTH"] = config.settings().MAX_BODY_BYTES
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
