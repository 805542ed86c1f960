"""gunicorn, embedded: the production WSGI server behind ``goalhub serve``.

Each worker process builds its own app after the fork (no ``preload_app``), so store
and Redis connections are never shared between processes.
"""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from goalhub import config, logs, metrics


class _Server(BaseApplication):
    def __init__(self, options: dict[str, Any]):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from goalhub.api import create_app

        return create_app()


def run(host: str, port: int, workers: int, threads: int = 4) -> None:
    if workers < 1 or threads < 1:
        raise ValueError("workers and threads must be at least 1")
    _Server(
        {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "timeout": config.api_timeout(),
            "graceful_timeout": 10,
            # One structured line per request comes from the app (goalhub.api.observe), with its id.
            "errorlog": "-",
            "logconfig_dict": logs.dict_config("api"),
            "child_exit": metrics.child_exit,
            "proc_name": "goalhub-api",
            # gunicorn's control socket is one fixed path per user: servers side by side would clash.
            "control_socket_disable": True,
            # Limits on the request line and headers; the body limit is MAX_CONTENT_LENGTH.
            "limit_request_line": 8190,
            "limit_request_fields": 100,
        }
    ).run()
