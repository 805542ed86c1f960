"""``GET /openapi.json`` (the API's OpenAPI 3.1 document) and ``/docs`` (Swagger UI).

Swagger UI's files come from the ``flask-swagger-ui`` package (served from this server,
no CDN). Both are public: the document holds no secret, and every operation it lists
still needs its bearer token. The document is built once per process (again only when the
installed goal types change), and ``/docs`` is sent with a Content-Security-Policy, no
framing and nosniff (``goalhub.api.csp``): Swagger UI keeps the bearer token in the
browser's localStorage (``persistAuthorization``), so no other script may run beside it.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, Flask, Response, request
from flask_swagger_ui import get_swaggerui_blueprint

from goalhub.api import csp
from goalhub.api.goals import installed_goal_types

blueprint = Blueprint("openapi", __name__)
DOCS = "/docs"
# (the installed goal types, the document as JSON bytes): built on the first request.
_built: tuple[tuple[int, ...], bytes] | None = None


def _version() -> str:
    try:
        return version("goalhub")
    except PackageNotFoundError:
        return "0"


@blueprint.get("/openapi.json")
def openapi_json() -> Response:
    global _built
    types = installed_goal_types()
    key = tuple(id(goal_type) for goal_type in types.values())
    built = _built
    if built is None or built[0] != key:
        from goalhub.api import openapi  # deferred: pydantic is heavy, and only this view needs it

        document: dict[str, Any] = openapi.document(types, _version())
        built = _built = (key, json.dumps(document).encode())
    return Response(built[1], mimetype="application/json")


def _harden(response: Response) -> Response:
    if request.path == DOCS or request.path.startswith(DOCS + "/"):
        csp.harden(response)
    return response


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
    app.register_blueprint(get_swaggerui_blueprint(
        DOCS, "/openapi.json", config={"app_name": "goalhub API", "persistAuthorization": True},
        blueprint_name="swagger_ui"))
    app.after_request(_harden)
