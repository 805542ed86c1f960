"""``GET /openapi.json`` (the API's OpenAPI 3.1 document) and ``/docs`` (Swagger UI).

Swagger UI's files come from the ``flask-swagger-ui`` package (served from this server,
no CDN). Both are public: the document holds no secret, and every operation it lists
still needs its bearer token.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, Flask
from flask_swagger_ui import get_swaggerui_blueprint

from goalhub.api import openapi
from goalhub.api.goals import installed_goal_types

blueprint = Blueprint("openapi", __name__)


def _version() -> str:
    try:
        return version("goalhub")
    except PackageNotFoundError:
        return "0"


@blueprint.get("/openapi.json")
def openapi_json() -> dict[str, Any]:
    return openapi.document(installed_goal_types(), _version())


def register(app: Flask) -> None:
    app.register_blueprint(blueprint)
    app.register_blueprint(get_swaggerui_blueprint(
        "/docs", "/openapi.json", config={"app_name": "goalhub API", "persistAuthorization": True},
        blueprint_name="swagger_ui"))
