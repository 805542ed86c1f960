"""Configuration, read from ``GOALHUB_*`` environment variables.

Values are read when asked for, never cached at import, so a test or a CLI option
that sets a variable sees it take effect. Every variable is documented in README.md.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def home() -> Path:
    """``GOALHUB_HOME``: where the embedded store, embedded Redis and dev keys live."""
    path = Path(env("GOALHUB_HOME", "./.goalhub")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def mongo_uri() -> str | None:
    """``GOALHUB_MONGO_URI``: a MongoDB URI; unset means the embedded on-disk store."""
    return env("GOALHUB_MONGO_URI")


def mongo_db_name() -> str:
    return env("GOALHUB_MONGO_DB", "goalhub")


def redis_url() -> str | None:
    """``GOALHUB_REDIS_URL``: a Redis URL; unset means the embedded Redis under home()."""
    return env("GOALHUB_REDIS_URL")


def queue_prefix() -> str:
    return env("GOALHUB_QUEUE_PREFIX", "goalhub")


def receiver_retries() -> int:
    """How many times a failing receiver is retried before it stays failed."""
    return int(env("GOALHUB_RECEIVER_RETRIES", "3"))


def receiver_backoff() -> list[int]:
    """Seconds between a receiver's retries (the last value repeats)."""
    raw = env("GOALHUB_RECEIVER_BACKOFF", "1,5,30")
    return [int(part) for part in raw.split(",") if part.strip()]


def job_timeout() -> int:
    """Seconds a single job (a receiver, create_goal) may run before it is stopped."""
    return int(env("GOALHUB_JOB_TIMEOUT", "60"))


def maintenance_interval() -> int:
    """``GOALHUB_MAINTENANCE_INTERVAL``: seconds between a worker's registry maintenance, which
    recovers jobs left ``started`` by a dead worker (RQ's own default is 600)."""
    return int(env("GOALHUB_MAINTENANCE_INTERVAL", "60"))


def scheduler_interval() -> float:
    """Seconds between two rq-scheduler polls (rq-scheduler's own default is 60)."""
    return float(env("GOALHUB_SCHEDULER_INTERVAL", "0.05"))


def disabled_plugins() -> set[str]:
    raw = env("GOALHUB_DISABLED_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def jwt_keys() -> str | None:
    """``GOALHUB_JWT_KEYS``: the bearer-token signing keys, a JSON object ``{"<kid>": "<secret>"}``
    or ``kid:secret,kid2:secret2``; the first kid signs. Unset means a dev key generated once
    into ``home()/jwt_keys.json``."""
    return env("GOALHUB_JWT_KEYS")


def jwt_issuer() -> str:
    """``GOALHUB_JWT_ISSUER``: the ``iss`` a bearer token must carry (and minted tokens get)."""
    return env("GOALHUB_JWT_ISSUER", "api.swag.live")


def jwt_audience() -> str:
    """``GOALHUB_JWT_AUDIENCE``: the ``aud`` a bearer token must carry (and minted tokens get)."""
    return env("GOALHUB_JWT_AUDIENCE", "api.swag.live")


def jwt_leeway() -> int:
    """``GOALHUB_JWT_LEEWAY``: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    return int(env("GOALHUB_JWT_LEEWAY", "0"))


def load_plugins() -> set[str] | None:
    """``GOALHUB_LOAD_PLUGINS``: when set, even empty, only these entry points load."""
    raw = os.environ.get("GOALHUB_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def max_body_bytes() -> int:
    """``GOALHUB_MAX_BODY_BYTES``: the largest request body the API reads (default 64 KiB)."""
    return int(env("GOALHUB_MAX_BODY_BYTES", "65536"))


def dashboard_user() -> str | None:
    """``GOALHUB_DASHBOARD_USER``: HTTP Basic user for the RQ dashboard at ``/rq``.
    With it or ``GOALHUB_DASHBOARD_PASSWORD`` unset, only a bearer token with the ADMIN scope gets in."""
    return env("GOALHUB_DASHBOARD_USER")


def dashboard_password() -> str | None:
    """``GOALHUB_DASHBOARD_PASSWORD``: HTTP Basic password for the RQ dashboard at ``/rq``."""
    return env("GOALHUB_DASHBOARD_PASSWORD")


def api_timeout() -> int:
    """``GOALHUB_API_TIMEOUT``: seconds a gunicorn worker may spend on one request."""
    return int(env("GOALHUB_API_TIMEOUT", "30"))


def receiver_budget() -> float:
    """``GOALHUB_RECEIVER_BUDGET``: seconds one run of a receiver may take before it is stopped,
    recorded ``timed out`` and retried alone (default 5)."""
    return float(env("GOALHUB_RECEIVER_BUDGET", "5"))


def disabled_receivers() -> set[str]:
    """``GOALHUB_DISABLED_RECEIVERS``: comma-separated receiver ids (``plugin.receiver``) that are
    not delivered to: no run, no outcome record, as if not installed."""
    raw = env("GOALHUB_DISABLED_RECEIVERS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def receiver_setting(setting: str, receiver_id: str) -> str | None:
    """``GOALHUB_RECEIVER_<SETTING>__<RECEIVER>``: one receiver's ``BUDGET``, ``RETRIES`` or
    ``BACKOFF``, overriding its declaration and the global variable. ``<RECEIVER>`` is the
    receiver id upper-cased with every other character than letters and digits as ``_``:
    ``GOALHUB_RECEIVER_BUDGET__ANALYTICS_TRACK_GOALS=10`` for ``analytics.track_goals``."""
    return env(receiver_variable(setting, receiver_id))


@functools.cache
def receiver_variable(setting: str, receiver_id: str) -> str:
    """The name of the variable ``receiver_setting`` reads."""
    key = "".join(ch if ch.isalnum() else "_" for ch in receiver_id).upper()
    return f"GOALHUB_RECEIVER_{setting.upper()}__{key}"
