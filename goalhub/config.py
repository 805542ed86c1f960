"""Configuration, read from ``GOALHUB_*`` environment variables.

Values are read when asked for, never cached at import, so a test or a CLI option
that sets a variable sees it take effect. Every variable is documented in README.md.
"""

from __future__ import annotations

import os
from pathlib import Path


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def home() -> Path:
    """``GOALHUB_HOME``: where the embedded store, embedded Redis and dev keys live."""
    path = Path(env("GOALHUB_HOME", "./.goalhub")).resolve()
    # 0700: the store, the Redis AOF and the dev keys are for this user only.
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        path.chmod(0o700)
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


# --- hardening (issue 12): abuse limits, retention, the supervisor -----------------------


def rate_limit_goals() -> str:
    """``GOALHUB_RATE_LIMIT_GOALS``: goal creations per user, ``N/second|minute|hour|day`` (or
    ``N/<seconds>s``); ``off`` disables. Tokens with the ADMIN scope are never limited."""
    return env("GOALHUB_RATE_LIMIT_GOALS", "120/minute")


def rate_limit_sessions() -> str:
    """``GOALHUB_RATE_LIMIT_SESSIONS``: session starts per user, same format; ``off`` disables."""
    return env("GOALHUB_RATE_LIMIT_SESSIONS", "30/minute")


def max_open_goals_per_session() -> int:
    """``GOALHUB_MAX_OPEN_GOALS``: goals a session may have that have not ended (0: no cap)."""
    return int(env("GOALHUB_MAX_OPEN_GOALS", "100"))


def dashboard_login_limit() -> str:
    """``GOALHUB_DASHBOARD_LOGIN_LIMIT``: failed dashboard logins per client address before it
    is refused (429) for the rest of the window; same format as the rate limits."""
    return env("GOALHUB_DASHBOARD_LOGIN_LIMIT", "10/300s")


def retention_seconds(collection: str) -> int:
    """``GOALHUB_RETENTION_<COLLECTION>``: seconds goalhub keeps a record of ``collection``
    (``requests``: idempotency records, 1 day; ``outcomes``, ``events``, ``outbound``: 30 days);
    0 keeps them for ever."""
    defaults = {"requests": 86400, "outcomes": 30 * 86400, "events": 30 * 86400, "outbound": 30 * 86400}
    return int(env(f"GOALHUB_RETENTION_{collection.upper()}", str(defaults[collection])))


def purge_interval() -> float:
    """``GOALHUB_PURGE_INTERVAL``: seconds between two purges of expired records by the
    scheduler process on the embedded store (MongoDB expires them itself, by TTL index)."""
    return float(env("GOALHUB_PURGE_INTERVAL", "600"))


def restart_limit() -> int:
    """``GOALHUB_RESTART_LIMIT``: crashes of one child within ``GOALHUB_RESTART_WINDOW`` seconds
    after which ``goalhub up`` stops everything instead of restarting it again."""
    return int(env("GOALHUB_RESTART_LIMIT", "5"))


def restart_window() -> float:
    """``GOALHUB_RESTART_WINDOW``: seconds over which ``goalhub up`` counts a child's crashes."""
    return float(env("GOALHUB_RESTART_WINDOW", "60"))
