"""Configuration, read from ``GOALHUB_*`` environment variables and parsed in one place.

:class:`Settings` declares every core variable with its type, default and what is allowed
(parsed here, by type, with no library: pydantic-settings cost every process, CLI commands
included, about 0.2 s of CPU to import); :func:`settings` parses the environment as it is now (re-parsed only
when a ``GOALHUB_*`` variable changed, so a test or a CLI option that sets one sees it take
effect). A bad value raises :class:`ConfigError` with one line naming the variable, the
value and what is allowed; the CLI prints that line and exits 1. The rest of goalhub reads
``config.settings().<NAME>``; the few functions below add what a field cannot (``home()``
resolves and creates the directory...). Each variable is described once, in its field: the
README's table and ``goalhub config --help`` are made from them (``reference()``), and
``goalhub config`` prints the effective values, secrets masked.
"""

from __future__ import annotations

import functools
import math
import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

from goalhub.errors import GoalhubError
from goalhub.redaction import redact

PREFIX = "GOALHUB_"


class ConfigError(GoalhubError):
    """A ``GOALHUB_*`` variable holds a value goalhub cannot use."""

    status = 500
    code = "bad_configuration"


class Field:
    """One variable's declaration: its default, its one description (``description``: the
    README's table and ``goalhub config --help``), what values are allowed (``allowed``: a bad
    value's error line), whether it is a secret (True hides the whole value, "url" only a URL's
    password), how its default reads (``shown``; the default itself otherwise) and its bounds
    (``ge``, ``gt``, ``le``, ``pattern``, ``min_length``). Its type is its annotation in
    :class:`Settings`."""

    def __init__(self, default: Any, description: str, allowed: str, secret: bool | str, shown: str | None,
                 bounds: dict[str, Any]) -> None:
        self.default, self.description, self.allowed = default, description, allowed
        self.secret, self.shown, self.bounds = secret, shown, bounds
        self.annotation: Any = None  # its type, set by ``_declare``

    def parse(self, text: str) -> Any:
        """The value of the variable's ``text``; ValueError saying why it is not allowed."""
        kind = self.annotation
        if typing.get_origin(kind) in (typing.Union, _UnionType):  # X | None: a value given is an X
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        if typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            value: Any = [self._check(_parse_one(item, part.strip()))
                          for part in text.split(",") if part.strip()]
            if len(value) < self.bounds.get("min_length", 0):
                raise ValueError(f"at least {self.bounds['min_length']} value(s)")
            return value
        return self._check(_parse_one(kind, text), whole=True)

    def _check(self, value: Any, whole: bool = False) -> Any:
        bounds = self.bounds
        if "ge" in bounds and not value >= bounds["ge"]:
            raise ValueError(f"must be >= {bounds['ge']}")
        if "gt" in bounds and not value > bounds["gt"]:
            raise ValueError(f"must be > {bounds['gt']}")
        if "le" in bounds and not value <= bounds["le"]:
            raise ValueError(f"must be <= {bounds['le']}")
        if whole and "pattern" in bounds and not re.search(bounds["pattern"], value):
            raise ValueError(f"must match {bounds['pattern']}")
        if whole and isinstance(value, str) and len(value) < bounds.get("min_length", 0):
            raise ValueError(f"must be at least {bounds['min_length']} characters")
        return value


_UnionType = type(int | None)
_TRUE, _FALSE = {"1", "true", "yes", "on", "t", "y"}, {"0", "false", "no", "off", "f", "n"}


def _parse_one(kind: Any, text: str) -> Any:
    if typing.get_origin(kind) is Literal:
        if text not in typing.get_args(kind):
            raise ValueError(f"must be one of {', '.join(typing.get_args(kind))}")
        return text
    if kind is bool:
        if text.strip().lower() in _TRUE | _FALSE:
            return text.strip().lower() in _TRUE
        raise ValueError("must be a boolean")
    if kind is int:
        if not re.fullmatch(r"\s*[+-]?\d{1,18}\s*", text):
            raise ValueError("must be a whole number")
        return int(text)
    if kind is float:
        try:
            number = float(text)
        except ValueError:
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        return number
    if kind is Path:
        if not text or "\0" in text:
            raise ValueError("must be a path")
        return Path(text)
    return text  # str


def _setting(default: Any, description: str, allowed: str, *, secret: bool | str = False,
             shown: str | None = None, **bounds: Any) -> Any:
    """A variable's one declaration (:class:`Field`)."""
    return Field(default, description, allowed, secret, shown, bounds)


RATE = r"(?i)^\s*(off|0|\d+\s*/\s*(\d+\s*s|(second|minute|hour|day)s?))\s*$"
RATE_TEXT = "N/second, N/minute, N/hour, N/day, N/<seconds>s, or off"
SECONDS_KEPT = "whole seconds >= 0 (0: for ever)"


class Settings:
    """The core's variables (``GOALHUB_<NAME>``), each described once, here; plugins read their own.

    The README's configuration table and ``goalhub config --help`` are made from these fields
    (``reference()``; tests/test_settings_reference.py fails on a difference)."""


    HOME: Path = _setting(Path("./.goalhub"), "embedded store, embedded Redis, dev keys (created 0700)",
                          "a directory path", shown="./.goalhub")
    MONGO_URI: str | None = _setting(
        None, "`mongodb://...` or `mongodb+srv://...` for MongoDB (`mongomock://` for unit tests)",
        "a mongodb://, mongodb+srv:// or mongomock:// URI", secret="url", shown="unset: embedded store",
        pattern=r"^(mongodb(\+srv)?|mongomock)://")
    MONGO_DB: str = _setting("goalhub", "database name when the URI names none",
                             "a database name: 1-63 letters, digits, '_' or '-'", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    REDIS_URL: str | None = _setting(None, "`redis://host:6379/0`, `unix:///path?db=0`",
                                     "a redis://, rediss:// or unix:// URL", secret="url",
                                     shown="unset: embedded Redis", pattern=r"^(redis|rediss|unix)://")
    QUEUE_PREFIX: str = _setting(
        "goalhub", "queue names `<prefix>-lifecycle`, `<prefix>`, `<prefix>-backfill` (in the order workers take them)",
        "1-64 letters, digits, '_' or '-'", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    RECEIVER_RETRIES: int = _setting(3, "retries of a failing receiver or `create_goal` (0: none)",
                                     "a whole number from 0 to 100", ge=0, le=100)
    RECEIVER_BACKOFF: list[int] = _setting(
        [1, 5, 30], "seconds between retries (the last repeats)", "comma-separated whole seconds >= 0, e.g. 1,5,30",
        shown="1,5,30", min_length=1, ge=0)
    RECEIVER_BUDGET: float = _setting(
        5.0, "seconds one run of a receiver may take before it is stopped, recorded `timed out` and retried alone",
        "seconds > 0 one receiver run may take", gt=0)
    DISABLED_RECEIVERS: list[str] = _setting(
        [], "receiver ids (`plugin.receiver`) not delivered to: not run, no outcome record",
        "comma-separated receiver ids (plugin.receiver)", shown="")
    JOB_TIMEOUT: int = _setting(60, "seconds a job may run before it is stopped", "a whole number of seconds >= 1",
                                ge=1)
    MAINTENANCE_INTERVAL: int = _setting(
        60, "seconds between a worker's registry maintenance (recovers dead workers' jobs; RQ's default is 600)",
        "a whole number of seconds >= 1", ge=1)
    WORKER_MAX_JOBS: int = _setting(
        10000, "jobs a pool worker (`goalhub worker --pool`) runs before it is replaced, between jobs (0: never)",
        "a whole number >= 0 of jobs after which a pool worker is replaced (0: never)", ge=0)
    WORKER_MAX_RSS_GROWTH: int = _setting(
        256, "MiB a pool worker's resident memory may grow past what it had after its first job before it is "
        "replaced, between jobs (0: never)",
        "whole MiB >= 0 a pool worker's memory may grow before it is replaced (0: never)", ge=0)
    WORKER_TTL: int = _setting(
        60, "a worker's heartbeat TTL (RQ's `worker_ttl`, 420 by default there); a worker whose last beat is "
        "older than this (or `GOALHUB_JOB_TIMEOUT`, if longer) + 60 s is dead: its jobs are recovered, its name may be "
        "taken over",
        "whole seconds from 30 to 3600", ge=30, le=3600)
    LIVENESS_WINDOW: float = _setting(
        30.0, "seconds without a live worker or a scheduler poll before `/healthz/deep` answers 503",
        "seconds > 0 without a live worker or a scheduler poll before /healthz/deep fails", gt=0, le=3600)
    SLOW_ISOLATE_FOR: float = _setting(
        600.0, "seconds a receiver that overran its budget runs as its own job instead of inline beside its "
        "siblings (0: never isolate)",
        "seconds >= 0 a receiver that overran its budget runs as its own job (0: never isolate)", ge=0)
    LIVE_INTERVAL: float = _setting(
        5.0, "seconds between each process's reports to the live view of plugin health (`goalhub plugins`, `/readyz`)",
        "seconds > 0 (at most 300) between a process's reports to the live view of plugin health", gt=0, le=300)
    LIVE_STALE_AFTER: float = _setting(
        30.0, "seconds without a report after which the live view shows a process as stale",
        "seconds > 0 without a report after which the live view shows a process as stale", gt=0)
    BREAKER_THRESHOLD: int = _setting(
        5, "a receiver failing this many different events in a row is paused until resumed (0: never)",
        "a whole number >= 0 of failed events in a row that pause a receiver (0: never)", ge=0)
    BREAKER_WINDOW: float = _setting(300.0, "seconds within which those failures must fall", "seconds > 0", gt=0)
    SCHEDULER_INTERVAL: float = _setting(0.05, "seconds between the scheduler's checks for a due job; it polls whole when one is, "
                                         "and at least once a second (rq-scheduler's default poll is 60)",
                                         "seconds > 0 (e.g. 0.05)", gt=0, le=3600)
    DISABLED_PLUGINS: list[str] = _setting(
        [], "entry-point names to block", "comma-separated entry-point names", shown="")
    LOAD_PLUGINS: list[str] | None = _setting(
        None, "when set (even empty), only these entry points load", "comma-separated entry-point names",
        shown="unset: all")
    PLUGINS: list[str] = _setting(
        [], "extra plugin modules to load by import name", "comma-separated importable module names", shown="")
    STRICT_PLUGINS: bool = _setting(
        False, "`1`: a broken plugin stops every process at start instead of being left out and reported (CI)",
        "1/true/yes/on or 0/false/no/off", shown="unset")
    TRACE_RECEIVERS: bool = _setting(
        False, "`1`: log every receiver call (its arguments, redacted and cut to 200 characters each, then its "
        "result or error, and the time it took) at INFO, as pluggy's tracing would if receivers went through the "
        "hook caller",
        "1/true/yes/on or 0/false/no/off", shown="unset")
    JWT_KEYS: str | None = _setting(
        None, '`{"<kid>": "<secret>"}` or `kid:secret,...`; the first signs minted tokens',
        '{"<kid>": "<secret>"} or kid:secret,...', secret=True,
        shown="unset: a dev key generated into `GOALHUB_HOME/jwt_keys.json`")
    JWT_PUBLIC_KEYS: str | None = _setting(
        None, "`kid=/path/to/public.pem,...`: public keys (RS256, ES256/ES384, EdDSA) that verify tokens the "
        "platform signs", "kid=/path/to/public.pem,... (RS256, ES256/ES384 or EdDSA keys; goalhub.keys)",
        shown="unset")
    JWT_JWKS_FILE: Path | None = _setting(None, "a JWKS file of public keys (re-read when it changes)",
                                          "the path of a JWKS file of public keys", shown="unset")
    ENV: Literal["development", "production"] = _setting(
        "development", "`production`: no development key; the API (`goalhub serve`) refuses to start without keys",
        "development or production (production: no development key, the API refuses to start without keys)")
    METRICS_TOKEN: str | None = _setting(
        None, "a bearer token (32+ characters) that alone opens `/metrics` (then the dashboard password and "
        "ADMIN tokens no longer do)",
        "a bearer token of 32+ characters for /metrics alone (then the dashboard password no longer opens it)",
        secret=True, shown="unset", min_length=32)
    JWT_ISSUER: str = _setting("api.swag.live", "the `iss` a bearer token must carry (and minted tokens get)",
                               "any string")
    JWT_AUDIENCE: str = _setting("api.swag.live", "the `aud` a bearer token must carry (and minted tokens get)",
                                 "any string")
    JWT_LEEWAY: int = _setting(0, "seconds of clock skew allowed on `exp`, `nbf` and `iat`",
                               "whole seconds from 0 to 3600", ge=0, le=3600)
    MAX_BODY_BYTES: int = _setting(65536, "larger request bodies get 413", "a whole number of bytes >= 1024",
                                   ge=1024)
    API_TIMEOUT: int = _setting(
        30, "seconds one request may take; an idempotency record pending for twice that is taken over",
        "a whole number of seconds >= 1", ge=1)
    RATE_LIMIT_GOALS: str = _setting(
        "120/minute", "goal creations per user (`N/second|minute|hour|day` or `N/<seconds>s`; `off`); ADMIN is exempt",
        RATE_TEXT, pattern=RATE)
    RATE_LIMIT_SESSIONS: str = _setting("30/minute", "session starts per user, same format", RATE_TEXT, pattern=RATE)
    MAX_OPEN_GOALS: int = _setting(100, "goals a session may hold that have not ended (422 beyond; 0: no cap)",
                                   "a whole number >= 0 (0: no cap)", ge=0)
    DASHBOARD_LOGIN_LIMIT: str = _setting(
        "10/300s", "failed dashboard logins per user name and client address before that pair gets 429 for the "
        "rest of the window; another client's failures never refuse a correct password", RATE_TEXT, pattern=RATE)
    TRUSTED_PROXY_HEADER: str | None = _setting(
        None, "the header your reverse proxy sets to the client's address (`X-Forwarded-For`: its last address); "
        "set it only when every request comes through that proxy",
        "a header name your reverse proxy sets to the client's address (X-Forwarded-For, X-Real-IP); unset: off",
        shown="unset: the connection's peer", pattern=r"^[A-Za-z0-9-]{1,64}$")
    RETENTION_REQUESTS: int = _setting(86400, "seconds idempotency records are kept (0: for ever)", SECONDS_KEPT,
                                       ge=0)
    RETENTION_OUTCOMES: int = _setting(30 * 86400, "seconds receiver outcomes are kept (0: for ever)", SECONDS_KEPT,
                                       shown="2592000 (30 days)", ge=0)
    RETENTION_EVENTS: int = _setting(30 * 86400, "seconds event records are kept (0: for ever)", SECONDS_KEPT,
                                     shown="2592000 (30 days)", ge=0)
    RETENTION_OUTBOUND: int = _setting(30 * 86400, "seconds outbound records are kept (0: for ever)", SECONDS_KEPT,
                                       shown="2592000 (30 days)", ge=0)
    PURGE_INTERVAL: float = _setting(600.0, "seconds between the scheduler's purges of the embedded store "
                                     "(MongoDB expires records itself, by TTL index)", "seconds > 0", gt=0)
    RESTART_LIMIT: int = _setting(5, "`goalhub up` stops everything when one child crashes this often within "
                                  "`GOALHUB_RESTART_WINDOW` seconds", "a whole number >= 1", ge=1)
    RESTART_WINDOW: float = _setting(60.0, "seconds over which `goalhub up` counts a child's crashes",
                                     "seconds > 0", gt=0)
    DRAIN_DELAY: float = _setting(
        2.0, "seconds an API process told to stop keeps accepting while `/readyz` answers 503",
        "seconds from 0 to 300 an API process told to stop keeps accepting while /readyz answers 503", ge=0, le=300)
    SHUTDOWN_GRACE: float = _setting(
        25.0, "seconds an API process that stopped accepting gives its in-flight requests",
        "seconds from 0 to 3600 an API process that stopped accepting gives in-flight requests", ge=0, le=3600)
    DASHBOARD_USER: str | None = _setting(
        None, "HTTP Basic user for `/rq` and `/metrics`; unset (or no password), only a bearer token with "
        "the `ADMIN` scope gets in", "any string", shown="unset")
    DASHBOARD_PASSWORD: str | None = _setting(None, "HTTP Basic password for `/rq` and `/metrics`", "any string",
                                              secret=True, shown="unset")
    LOG_FORMAT: Literal["json", "console"] = _setting(
        "json", "`json`: one JSON object a line; `console`: human-readable lines", "json or console",
        shown="json (`goalhub up`: console)")
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _setting(
        "INFO", "the level of goalhub's, RQ's and waitress's logs", "DEBUG, INFO, WARNING or ERROR")
    METRICS_DIR: Path | None = _setting(
        None, "prometheus-client's multiprocess directory, shared by every process on the machine "
        "(`PROMETHEUS_MULTIPROC_DIR`, when set, wins)",
        "a directory for prometheus-client's multiprocess files (default: <home>/metrics)",
        shown="`GOALHUB_HOME/metrics`")
    RECONCILE_INTERVAL: float = _setting(
        10.0, "seconds between the reconciler's checks for overdue goals and for jobs a dying worker took off "
        "a queue (0: never)", "seconds >= 0 between the reconciler's checks: overdue goals, lost jobs (0: never)",
        ge=0)
    RECONCILE_GRACE: float = _setting(
        5.0, "how long past its time a lifecycle job may still be pending before the reconciler steps in",
        "seconds >= 0 a due lifecycle job is given before the reconciler steps in", ge=0)

    fields: typing.ClassVar[dict[str, Field]]

    def __init__(self, values: dict[str, str]) -> None:
        """The settings of ``values`` (variable names without the prefix -> their text); a
        field not in it takes its default. ValueError names the first bad one."""
        for name, field in self.fields.items():
            text = values.get(name)
            if text is None:
                value = list(field.default) if isinstance(field.default, list) else field.default
            else:
                try:
                    value = field.parse(text)
                except ValueError as exc:
                    raise SettingError(name, text, str(exc)) from None
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"Settings({', '.join(f'{name}=...' for name in self.fields)})"


class SettingError(ValueError):
    def __init__(self, name: str, text: str, reason: str) -> None:
        super().__init__(reason)
        self.name, self.text, self.reason = name, text, reason


def _declare() -> None:
    """Each field learns its type (its annotation) and is listed in ``Settings.fields`` by name."""
    hints = typing.get_type_hints(Settings)
    Settings.fields = {}
    for name, value in list(vars(Settings).items()):
        if isinstance(value, Field):
            value.annotation = hints[name]
            Settings.fields[name] = value
            delattr(Settings, name)  # an instance's own attribute, never the declaration


_declare()


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
            found = Settings(_values())
        except SettingError as exc:
            raise ConfigError(_describe(exc), code="bad_configuration") from None
        if len(_cache) > 64:
            _cache.clear()
        _cache[key] = found
    if isinstance(raw, dict):
        _last = (dict(raw), found)
    return found


def _values() -> dict[str, str]:
    """The variables set (an empty one counts as unset, except ``LOAD_PLUGINS``: see
    ``load_plugins``), and the ``*_FILE`` secrets."""
    found = {}
    for name in Settings.fields:
        text = os.environ.get(PREFIX + name)
        if text or (text is not None and name == "LOAD_PLUGINS"):
            found[name] = text
    return found | _from_files()


def _describe(exc: SettingError) -> str:
    """One line: the bad variable, its value, what is allowed, and why."""
    field = Settings.fields[exc.name]
    shown = mask(exc.text, field.secret) if field.secret else exc.text
    return f"{PREFIX}{exc.name}={shown!r} is not allowed: {field.allowed} ({exc.reason})"


def env(name: str, default: str | None = None) -> str | None:
    """A raw variable ("" counts as unset); for settings not declared in :class:`Settings`."""
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def log_format_asked() -> str:
    """``GOALHUB_LOG_FORMAT`` as asked, read alone: the format of the line that says why the
    settings cannot be read (another setting's error must not hide it)."""
    return "console" if os.environ.get(PREFIX + "LOG_FORMAT") == "console" else "json"


def mask(value: str, how: bool | str = True) -> str:
    """A secret for display: of a URL (``how="url"``) its password (the userinfo split at its last
    ``@``) and its secret query parameters (``?password=``), else the whole value."""
    if how == "url":
        return redact(value, keep_user=True)
    return "***" if value else value


def effective() -> dict[str, Any]:
    """Every variable and its effective value, secrets masked (``goalhub config``)."""
    current = settings()
    shown: dict[str, Any] = {}
    for name, field in Settings.fields.items():
        value = getattr(current, name)
        if isinstance(value, Path):
            value = str(value)
        if field.secret and value is not None:
            value = mask(value, field.secret)
        shown[PREFIX + name] = value
    allowed = load_plugins()
    shown[PREFIX + "LOAD_PLUGINS"] = None if allowed is None else sorted(allowed)
    return shown


def reference() -> list[dict[str, str]]:
    """Every variable's one description, in declaration order: ``variable``, ``default`` (as it
    reads), ``meaning`` and ``allowed``. The README's table and ``goalhub config --help``."""
    rows = []
    for name, field in Settings.fields.items():
        shown = field.shown
        if shown is None:
            default = field.default
            if isinstance(default, float) and default.is_integer():
                default = int(default)  # 5, not 5.0
            shown = str(default) if not isinstance(default, list) else ",".join(map(str, default))
        meaning = field.description or ""
        if field.secret:
            meaning += f" (or `{PREFIX}{name}_FILE`: the path of a file holding it)"
        rows.append({"variable": PREFIX + name, "default": str(shown), "meaning": meaning,
                     "allowed": field.allowed})
    return rows


def secret_names() -> list[str]:
    """The settings that hold secrets: each may also be given as ``GOALHUB_<NAME>_FILE``."""
    return [name for name, field in Settings.fields.items() if field.secret]


def _from_files() -> dict[str, str]:
    """``GOALHUB_<NAME>_FILE`` for each secret setting: the file's content (trailing newline
    and spaces stripped), when ``GOALHUB_<NAME>`` itself is unset. Read when the environment
    changes (a rotated secret file needs a restart); an unreadable file is a ConfigError."""
    found = {}
    for name in secret_names():
        path = os.environ.get(f"{PREFIX}{name}_FILE")
        if not path or os.environ.get(PREFIX + name):
            continue
        try:
            found[name] = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{PREFIX}{name}_FILE={path[:200]!r} cannot be read: {exc.strerror}",
                              code="bad_configuration") from None
    return found


def markdown_table() -> str:
    """``reference()`` as the README's Markdown table."""
    def code(text: str) -> str:
        return text if not text or "`" in text or text.startswith("unset") else f"`{text}`"

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{row['variable']}` | {code(row['default'])} | {row['meaning'].replace('|', chr(92) + '|')} |"
              for row in reference()]
    return "\n".join(lines) + "\n"


def home() -> Path:
    """``GOALHUB_HOME`` resolved (symlinks followed once per process) and created 0700 if missing."""
    key = home_key()
    path = _resolved.get(key)
    if path is None:
        path = _resolved[key] = key[0].resolve()
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


def home_key() -> tuple[Path, str]:
    """``GOALHUB_HOME`` as configured, and the directory a relative one is in: what names the
    home without resolving it (the key of what is cached per home; cheap enough for every call)."""
    configured = settings().HOME
    return configured, "" if configured.is_absolute() else os.getcwd()


def metrics_dir() -> Path:
    """``GOALHUB_METRICS_DIR`` resolved, default ``<home>/metrics``, created if missing."""
    path = settings().METRICS_DIR or home() / "metrics"
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_plugins() -> set[str] | None:
    """``GOALHUB_LOAD_PLUGINS`` (None: unset). The one variable whose empty value means something
    (load no entry point), where every other empty variable counts as unset: its presence is read here."""
    if PREFIX + "LOAD_PLUGINS" not in os.environ:
        return None
    return set(settings().LOAD_PLUGINS or ())


def retention_seconds(collection: str) -> int:
    """``GOALHUB_RETENTION_<COLLECTION>`` of ``requests``, ``outcomes``, ``events`` or ``outbound``."""
    return int(getattr(settings(), f"RETENTION_{collection.upper()}"))


def receiver_setting(setting: str, receiver_id: str) -> str | None:
    """``GOALHUB_RECEIVER_<SETTING>__<RECEIVER>``: one receiver's ``BUDGET``, ``RETRIES`` or
    ``BACKOFF``, overriding its declaration and the global variable. ``<RECEIVER>`` is the
    receiver id upper-cased with every other character than letters and digits as ``_``:
    ``GOALHUB_RECEIVER_BUDGET__ANALYTICS_TRACK_GOALS=10`` for ``analytics.track_goals``.
    (Named after each installed receiver, these cannot be fields of ``Settings``.)"""
    return env(receiver_variable(setting, receiver_id))


@functools.cache
def receiver_variable(setting: str, receiver_id: str) -> str:
    """The name of the variable ``receiver_setting`` reads."""
    key = "".join(ch if ch.isalnum() else "_" for ch in receiver_id).upper()
    return f"GOALHUB_RECEIVER_{setting.upper()}__{key}"
