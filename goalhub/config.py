"""Configuration, read from ``GOALHUB_*`` environment variables and parsed in one place.

:class:`Settings` (pydantic-settings) declares every core variable with its type, default
and what is allowed; :func:`settings` parses the environment as it is now (re-parsed only
when a ``GOALHUB_*`` variable changed, so a test or a CLI option that sets one sees it take
effect). A bad value raises :class:`ConfigError` with one line naming the variable, the
value and what is allowed; the CLI prints that line and exits 1. The accessor functions
below (``home()``, ``job_timeout()``...) are what the rest of goalhub calls. Every variable
is documented in README.md; ``goalhub config`` prints the effective values, secrets masked.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from goalhub.errors import GoalhubError

PREFIX = "GOALHUB_"


class ConfigError(GoalhubError):
    """A ``GOALHUB_*`` variable holds a value goalhub cannot use."""

    status = 500
    code = "bad_configuration"


def _allowed(text: str, secret: bool | str = False) -> Any:
    # secret: True hides the whole value, "url" only a URL's password.
    return {"allowed": text, "secret": secret}


RATE = r"(?i)^\s*(off|0|\d+\s*/\s*(\d+\s*s|(second|minute|hour|day)s?))\s*$"
RATE_TEXT = "N/second, N/minute, N/hour, N/day, N/<seconds>s, or off"


class Settings(BaseSettings):
    """The core's variables (``GOALHUB_<NAME>``); plugins read their own."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore",
                                      case_sensitive=True, validate_default=True)

    HOME: Path = Field(Path("./.goalhub"), json_schema_extra=_allowed("a directory path"))
    MONGO_URI: str | None = Field(None, pattern=r"^(mongodb(\+srv)?|mongomock)://",
                                  json_schema_extra=_allowed("a mongodb://, mongodb+srv:// or mongomock:// URI", "url"))
    MONGO_DB: str = Field("goalhub", pattern=r"^[A-Za-z0-9_-]{1,63}$",
                          json_schema_extra=_allowed("a database name: 1-63 letters, digits, '_' or '-'"))
    REDIS_URL: str | None = Field(None, pattern=r"^(redis|rediss|unix)://",
                                  json_schema_extra=_allowed("a redis://, rediss:// or unix:// URL", "url"))
    QUEUE_PREFIX: str = Field("goalhub", pattern=r"^[A-Za-z0-9_-]{1,64}$",
                              json_schema_extra=_allowed("1-64 letters, digits, '_' or '-'"))
    RECEIVER_RETRIES: int = Field(3, ge=0, le=100, json_schema_extra=_allowed("a whole number from 0 to 100"))
    RECEIVER_BACKOFF: Annotated[list[Annotated[int, Field(ge=0)]], NoDecode] = Field(
        [1, 5, 30], min_length=1, json_schema_extra=_allowed("comma-separated whole seconds >= 0, e.g. 1,5,30"))
    JOB_TIMEOUT: int = Field(60, ge=1, json_schema_extra=_allowed("a whole number of seconds >= 1"))
    MAINTENANCE_INTERVAL: int = Field(60, ge=1, json_schema_extra=_allowed("a whole number of seconds >= 1"))
    SCHEDULER_INTERVAL: float = Field(0.05, gt=0, le=3600, json_schema_extra=_allowed("seconds > 0 (e.g. 0.05)"))
    DISABLED_PLUGINS: Annotated[list[str], NoDecode] = Field(
        [], json_schema_extra=_allowed("comma-separated entry-point names"))
    PLUGINS: Annotated[list[str], NoDecode] = Field(
        [], json_schema_extra=_allowed("comma-separated importable module names"))
    JWT_KEYS: str | None = Field(None, json_schema_extra=_allowed('{"<kid>": "<secret>"} or kid:secret,...', True))
    JWT_ISSUER: str = Field("api.swag.live", json_schema_extra=_allowed("any string"))
    JWT_AUDIENCE: str = Field("api.swag.live", json_schema_extra=_allowed("any string"))
    JWT_LEEWAY: int = Field(0, ge=0, le=3600, json_schema_extra=_allowed("whole seconds from 0 to 3600"))
    MAX_BODY_BYTES: int = Field(65536, ge=1024, json_schema_extra=_allowed("a whole number of bytes >= 1024"))
    DASHBOARD_USER: str | None = Field(None, json_schema_extra=_allowed("any string"))
    DASHBOARD_PASSWORD: str | None = Field(None, json_schema_extra=_allowed("any string", True))
    API_TIMEOUT: int = Field(30, ge=1, json_schema_extra=_allowed("a whole number of seconds >= 1"))
    LOG_FORMAT: Literal["json", "console"] = Field("json", json_schema_extra=_allowed("json or console"))
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", json_schema_extra=_allowed("DEBUG, INFO, WARNING or ERROR"))
    METRICS_DIR: Path | None = Field(None, json_schema_extra=_allowed(
        "a directory for prometheus-client's multiprocess files (default: <home>/metrics)"))
    RECONCILE_INTERVAL: float = Field(10.0, ge=0, json_schema_extra=_allowed(
        "seconds >= 0 between the reconciler's checks: overdue goals, lost jobs (0: never)"))
    RECONCILE_GRACE: float = Field(5.0, ge=0, json_schema_extra=_allowed(
        "seconds >= 0 a due lifecycle job is given before the reconciler steps in"))

    RECEIVER_BUDGET: float = Field(5.0, gt=0, json_schema_extra=_allowed("seconds > 0 one receiver run may take"))
    DISABLED_RECEIVERS: Annotated[list[str], NoDecode] = Field(
        [], json_schema_extra=_allowed("comma-separated receiver ids (plugin.receiver)"))
    RATE_LIMIT_GOALS: str = Field("120/minute", pattern=RATE, json_schema_extra=_allowed(RATE_TEXT))
    RATE_LIMIT_SESSIONS: str = Field("30/minute", pattern=RATE, json_schema_extra=_allowed(RATE_TEXT))
    DASHBOARD_LOGIN_LIMIT: str = Field("10/300s", pattern=RATE, json_schema_extra=_allowed(RATE_TEXT))
    MAX_OPEN_GOALS: int = Field(100, ge=0, json_schema_extra=_allowed("a whole number >= 0 (0: no cap)"))
    RETENTION_REQUESTS: int = Field(86400, ge=0, json_schema_extra=_allowed("whole seconds >= 0 (0: for ever)"))
    RETENTION_OUTCOMES: int = Field(30 * 86400, ge=0, json_schema_extra=_allowed("whole seconds >= 0 (0: for ever)"))
    RETENTION_EVENTS: int = Field(30 * 86400, ge=0, json_schema_extra=_allowed("whole seconds >= 0 (0: for ever)"))
    RETENTION_OUTBOUND: int = Field(30 * 86400, ge=0, json_schema_extra=_allowed("whole seconds >= 0 (0: for ever)"))
    PURGE_INTERVAL: float = Field(600.0, gt=0, json_schema_extra=_allowed("seconds > 0"))
    RESTART_LIMIT: int = Field(5, ge=1, json_schema_extra=_allowed("a whole number >= 1"))
    RESTART_WINDOW: float = Field(60.0, gt=0, json_schema_extra=_allowed("seconds > 0"))
    BREAKER_THRESHOLD: int = Field(5, ge=0, json_schema_extra=_allowed(
        "a whole number >= 0 of failed events in a row that pause a receiver (0: never)"))
    BREAKER_WINDOW: float = Field(300.0, gt=0, json_schema_extra=_allowed("seconds > 0"))
    STRICT_PLUGINS: bool = Field(False, json_schema_extra=_allowed("1/true/yes/on or 0/false/no/off"))
    SLOW_ISOLATE_FOR: float = Field(600.0, ge=0, json_schema_extra=_allowed(
        "seconds >= 0 a receiver that overran its budget runs as its own job (0: never isolate)"))
    LIVE_INTERVAL: float = Field(5.0, gt=0, le=300, json_schema_extra=_allowed(
        "seconds > 0 (at most 300) between a process's reports to the live view of plugin health"))
    LIVE_STALE_AFTER: float = Field(30.0, gt=0, json_schema_extra=_allowed(
        "seconds > 0 without a report after which the live view shows a process as stale"))

    @field_validator("RECEIVER_BACKOFF", "DISABLED_PLUGINS", "PLUGINS", "DISABLED_RECEIVERS", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


_cache: dict[tuple[Any, ...], Settings] = {}


def _environment() -> tuple[Any, ...]:
    # os.environ's raw bytes mapping: decoding every variable on each call would cost 10x more.
    raw = getattr(os.environ, "_data", None)
    if isinstance(raw, dict):
        return tuple(sorted((k, v) for k, v in raw.items() if k.startswith(b"GOALHUB_")))
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(PREFIX)))


# The environment last asked about (a copy of os.environ's raw mapping) and its settings:
# an unchanged environment is recognised by one dict comparison (about 1 µs, C), not by
# picking out and sorting the GOALHUB_ variables (about 15 µs; a request asks a dozen times).
_last: tuple[dict[Any, Any] | None, Settings | None] = (None, None)


def settings() -> Settings:
    """The settings for the environment as it is now (1 line ``ConfigError`` if a value is bad)."""
    global _last
    raw = getattr(os.environ, "_data", None)
    last_raw, last = _last  # one tuple: never a mapping paired with another mapping's settings
    if last is not None and raw == last_raw:
        return last
    key = _environment()
    found = _cache.get(key)
    if found is None:
        try:
            found = Settings()
        except ValidationError as exc:
            raise ConfigError(_describe(exc), code="bad_configuration") from None
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = found
    if isinstance(raw, dict):
        _last = (dict(raw), found)
    return found


def _describe(exc: ValidationError) -> str:
    """One line: the first bad variable, its value, what is allowed, pydantic's reason."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "?"
    variable = PREFIX + name
    value = os.environ.get(variable, error.get("input"))
    field = Settings.model_fields.get(name)
    extra = field.json_schema_extra if field is not None and isinstance(field.json_schema_extra, dict) else {}
    secret = extra.get("secret")
    shown = mask(str(value), secret) if isinstance(secret, bool | str) and secret else str(value)
    return f"{variable}={shown!r} is not allowed: {extra.get('allowed', 'see README')} ({error['msg']})"


def env(name: str, default: str | None = None) -> str | None:
    """A raw variable ("" counts as unset); for settings not declared in :class:`Settings`."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def mask(value: str, how: bool | str = True) -> str:
    """A secret for display: only the password of a URL (``how="url"``), else the whole value."""
    if how == "url":
        return re.sub(r"^((?:[A-Za-z][A-Za-z0-9+.-]*://)?[^:/@]*:)[^@/]*@", r"\1***@", value)
    return "***" if value else value


def effective() -> dict[str, Any]:
    """Every variable and its effective value, secrets masked (``goalhub config``)."""
    current = settings()
    shown: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if isinstance(value, Path):
            value = str(value)
        secret = extra.get("secret")
        if isinstance(secret, bool | str) and secret and value is not None:
            value = mask(value, secret)
        shown[PREFIX + name] = value
    raw = os.environ.get("GOALHUB_LOAD_PLUGINS")
    shown["GOALHUB_LOAD_PLUGINS"] = None if raw is None else sorted(load_plugins() or ())
    return shown


def home() -> Path:
    """``GOALHUB_HOME``: where the embedded store, embedded Redis and dev keys live."""
    configured = settings().HOME
    key = (configured, "" if configured.is_absolute() else os.getcwd())
    path = _resolved.get(key)
    if path is None:
        path = _resolved[key] = configured.resolve()
    try:
        info = os.stat(path)
    except FileNotFoundError:
        # 0700: the store, the Redis AOF and the dev keys are for this user only.
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(path)
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        path.chmod(0o700)
    return path


# GOALHUB_HOME as configured (and the directory a relative one is in) -> resolved: symlinks
# are followed once per process, not on every call.
_resolved: dict[tuple[Path, str], Path] = {}


def mongo_uri() -> str | None:
    """``GOALHUB_MONGO_URI``: a MongoDB URI; unset means the embedded on-disk store."""
    return settings().MONGO_URI


def mongo_db_name() -> str:
    return settings().MONGO_DB


def redis_url() -> str | None:
    """``GOALHUB_REDIS_URL``: a Redis URL; unset means the embedded Redis under home()."""
    return settings().REDIS_URL


def queue_prefix() -> str:
    return settings().QUEUE_PREFIX


def receiver_retries() -> int:
    """How many times a failing receiver is retried before it stays failed."""
    return settings().RECEIVER_RETRIES


def receiver_backoff() -> list[int]:
    """Seconds between a receiver's retries (the last value repeats)."""
    return list(settings().RECEIVER_BACKOFF)


def job_timeout() -> int:
    """Seconds a single job (a receiver, create_goal) may run before it is stopped."""
    return settings().JOB_TIMEOUT


def maintenance_interval() -> int:
    """``GOALHUB_MAINTENANCE_INTERVAL``: seconds between a worker's registry maintenance, which
    recovers jobs left ``started`` by a dead worker (RQ's own default is 600)."""
    return settings().MAINTENANCE_INTERVAL


def scheduler_interval() -> float:
    """Seconds between two rq-scheduler polls (rq-scheduler's own default is 60)."""
    return settings().SCHEDULER_INTERVAL


def disabled_plugins() -> set[str]:
    return set(settings().DISABLED_PLUGINS)


def jwt_keys() -> str | None:
    """``GOALHUB_JWT_KEYS``: the bearer-token signing keys, a JSON object ``{"<kid>": "<secret>"}``
    or ``kid:secret,kid2:secret2``; the first kid signs. Unset means a dev key generated once
    into ``home()/jwt_keys.json``."""
    return settings().JWT_KEYS


def jwt_issuer() -> str:
    """``GOALHUB_JWT_ISSUER``: the ``iss`` a bearer token must carry (and minted tokens get)."""
    return settings().JWT_ISSUER


def jwt_audience() -> str:
    """``GOALHUB_JWT_AUDIENCE``: the ``aud`` a bearer token must carry (and minted tokens get)."""
    return settings().JWT_AUDIENCE


def jwt_leeway() -> int:
    """``GOALHUB_JWT_LEEWAY``: seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat``."""
    return settings().JWT_LEEWAY


def load_plugins() -> set[str] | None:
    """``GOALHUB_LOAD_PLUGINS``: when set, even empty, only these entry points load."""
    raw = os.environ.get("GOALHUB_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def max_body_bytes() -> int:
    """``GOALHUB_MAX_BODY_BYTES``: the largest request body the API reads (default 64 KiB)."""
    return settings().MAX_BODY_BYTES


def dashboard_user() -> str | None:
    """``GOALHUB_DASHBOARD_USER``: HTTP Basic user for the RQ dashboard at ``/rq``.
    With it or ``GOALHUB_DASHBOARD_PASSWORD`` unset, only a bearer token with the ADMIN scope gets in."""
    return settings().DASHBOARD_USER


def dashboard_password() -> str | None:
    """``GOALHUB_DASHBOARD_PASSWORD``: HTTP Basic password for the RQ dashboard at ``/rq``."""
    return settings().DASHBOARD_PASSWORD


def api_timeout() -> int:
    """``GOALHUB_API_TIMEOUT``: seconds one request may take."""
    return settings().API_TIMEOUT


def log_format() -> str:
    """``GOALHUB_LOG_FORMAT``: ``json`` (one object a line) or ``console`` (``goalhub up``'s default)."""
    return settings().LOG_FORMAT


def log_level() -> str:
    """``GOALHUB_LOG_LEVEL``: the level of goalhub's, RQ's and waitress's logs."""
    return settings().LOG_LEVEL


def metrics_dir() -> Path:
    """``GOALHUB_METRICS_DIR``: prometheus-client's multiprocess directory, shared by every
    goalhub process on the machine (default ``<home>/metrics``)."""
    path = settings().METRICS_DIR or home() / "metrics"
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def reconcile_interval() -> float:
    """``GOALHUB_RECONCILE_INTERVAL``: seconds between the reconciler's checks for overdue goals and
    for jobs a dying worker took off a queue (0: never)."""
    return settings().RECONCILE_INTERVAL


def reconcile_grace() -> float:
    """``GOALHUB_RECONCILE_GRACE``: how long past its time a lifecycle job may still be pending
    normally before the reconciler treats the goal as lost."""
    return settings().RECONCILE_GRACE


def breaker_threshold() -> int:
    """``GOALHUB_BREAKER_THRESHOLD``: a receiver that fails this many different events in a
    row (within the window) is paused until resumed (default 5; 0 turns the breaker off)."""
    return settings().BREAKER_THRESHOLD


def breaker_window() -> float:
    """``GOALHUB_BREAKER_WINDOW``: seconds within which those failures must fall (default 300)."""
    return settings().BREAKER_WINDOW


def strict_plugins() -> bool:
    """``GOALHUB_STRICT_PLUGINS``: when true (``1``), a broken plugin stops the process
    instead of being left out and reported (a plugin author's CI)."""
    return settings().STRICT_PLUGINS


def receiver_budget() -> float:
    """``GOALHUB_RECEIVER_BUDGET``: seconds one run of a receiver may take before it is stopped,
    recorded ``timed out`` and retried alone (default 5)."""
    return settings().RECEIVER_BUDGET


def disabled_receivers() -> set[str]:
    """``GOALHUB_DISABLED_RECEIVERS``: comma-separated receiver ids (``plugin.receiver``) that are
    not delivered to: no run, no outcome record, as if not installed."""
    return set(settings().DISABLED_RECEIVERS)


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


# --- hardening (issue 12): abuse limits, retention, the supervisor -----------------------


def rate_limit_goals() -> str:
    """``GOALHUB_RATE_LIMIT_GOALS``: goal creations per user, ``N/second|minute|hour|day`` (or
    ``N/<seconds>s``); ``off`` disables. Tokens with the ADMIN scope are never limited."""
    return settings().RATE_LIMIT_GOALS


def rate_limit_sessions() -> str:
    """``GOALHUB_RATE_LIMIT_SESSIONS``: session starts per user, same format; ``off`` disables."""
    return settings().RATE_LIMIT_SESSIONS


def max_open_goals_per_session() -> int:
    """``GOALHUB_MAX_OPEN_GOALS``: goals a session may have that have not ended (0: no cap)."""
    return settings().MAX_OPEN_GOALS


def dashboard_login_limit() -> str:
    """``GOALHUB_DASHBOARD_LOGIN_LIMIT``: failed dashboard logins per client address before it
    is refused (429) for the rest of the window; same format as the rate limits."""
    return settings().DASHBOARD_LOGIN_LIMIT


def retention_seconds(collection: str) -> int:
    """``GOALHUB_RETENTION_<COLLECTION>``: seconds goalhub keeps a record of ``collection``
    (``requests``: idempotency records, 1 day; ``outcomes``, ``events``, ``outbound``: 30 days);
    0 keeps them for ever."""
    return int(getattr(settings(), f"RETENTION_{collection.upper()}"))


def purge_interval() -> float:
    """``GOALHUB_PURGE_INTERVAL``: seconds between two purges of expired records by the
    scheduler process on the embedded store (MongoDB expires them itself, by TTL index)."""
    return settings().PURGE_INTERVAL


def restart_limit() -> int:
    """``GOALHUB_RESTART_LIMIT``: crashes of one child within ``GOALHUB_RESTART_WINDOW`` seconds
    after which ``goalhub up`` stops everything instead of restarting it again."""
    return settings().RESTART_LIMIT


def restart_window() -> float:
    """``GOALHUB_RESTART_WINDOW``: seconds over which ``goalhub up`` counts a child's crashes."""
    return settings().RESTART_WINDOW


def live_interval() -> float:
    """``GOALHUB_LIVE_INTERVAL``: seconds between each process's reports to the live view of
    plugin health (``goalhub.liveview``)."""
    return settings().LIVE_INTERVAL


def live_stale_after() -> float:
    """``GOALHUB_LIVE_STALE_AFTER``: a process that has not reported for this long is shown stale."""
    return settings().LIVE_STALE_AFTER


def slow_isolate_for() -> float:
    """``GOALHUB_SLOW_ISOLATE_FOR``: seconds a receiver that overran its budget runs as its own
    job instead of inline beside its siblings (``goalhub.slowness``; 0: never)."""
    return settings().SLOW_ISOLATE_FOR
