"""goalhub's HTTP API (Flask), one module per concern:

- ``goals``: ``POST /goals`` (and ``/goal``) with ``?type=``/``?goal_type=``, ``GET /goals/<id>``,
  ``POST /goals/<id>/end``
- ``sessions``: ``POST /sessions``, ``GET /sessions/<id>``, ``POST /sessions/<id>/end``
- ``health``: ``GET /healthz``, ``GET /readyz``, ``GET /healthz/deep``
- ``dashboard``: the RQ dashboard under ``/rq``, behind authentication
- ``access`` (who is calling), ``payload`` (strict JSON in, documents out),
  ``idempotency`` (``x-request-id``/``Idempotency-Key``), ``errors`` (the one error model)

``create_app()`` (``goalhub.api.app``) puts them together; ``serve()`` runs it under waitress,
pre-forked (``goalhub.api.server``); ``goalhub serve`` calls it.
"""

from __future__ import annotations

from goalhub.api.app import create_app
from goalhub.api.server import serve

__all__ = ["create_app", "serve"]
