"""The ``goalhub`` command: run the processes, inspect plugins and hooks, fire test signals,
read and retry receiver outcomes, read outbound calls and documents, mint dev tokens.

Human output by default (tables; colour only on a terminal), ``--json`` for scripts.
Every mistake a user can make (a bad id, an unknown class, Redis or the store down) is one
line on stderr and a non-zero exit, never a traceback.

One module per group of commands: ``processes`` (serve, worker, scheduler, up, reload),
``introspect`` (plugins, hooks), ``events`` (fire, outcomes, retry, outbound),
``documents`` (token, goals, sessions), ``scaffold`` (new-plugin); ``output`` holds the
shared formatting.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click
import redis
from pymongo.errors import ConnectionFailure, PyMongoError

from goalhub import config, connection, logs
from goalhub.cli import (
    backup,
    configuration,
    documents,
    events,
    introspect,
    processes,
    purge,
    replay,
    scaffold,
)
from goalhub.errors import GoalhubError

__all__ = ["main"]


class GoalhubGroup(click.Group):
    """Turns the errors a user can cause into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        # A command that is done leaves no server behind (issue 22); serve, worker and
        # scheduler (their logs configured) share theirs, which outlives them.
        with connection.stopping_what_it_starts(keep=logs.configured):
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GoalhubError as exc:
            _fail(exc.message)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            _fail(f"Redis is not reachable ({_redis_target()}): {exc}")
        except BrokenPipeError:
            # The reader went away (`goalhub outcomes | head`): no error line, no flush error at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:  # ConnectionError, an address in use, a missing file...
            _fail(f"{type(exc).__name__}: {exc}")
        except ConnectionFailure as exc:  # MongoDB, or the embedded store, cannot be reached
            _fail(f"the store is not reachable: {exc}")
        except PyMongoError as exc:  # it answered, and refused (a write error, a bad query...)
            _fail(f"the store refused: {exc}")


def _fail(message: str) -> NoReturn:
    """One line and exit 1: a log record (JSON in JSON mode) from a long-running process whose
    logs are set up, else ``Error: ...`` on stderr."""
    if logs.configured():
        logs.crash(message)
    raise click.ClickException(message) from None


# Their logs report a bad GOALHUB_* setting themselves, in the configured format.
_LOGGING_COMMANDS = {"serve", "worker", "scheduler"}


def _redis_target() -> str:
    return config.settings().REDIS_URL or f"embedded Redis under {config.home()}"


@click.group(cls=GoalhubGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="goalhub")
@click.pass_context
def main(ctx: click.Context) -> None:
    """goalhub: the goal engine of a live-streaming platform."""
    if ctx.invoked_subcommand not in _LOGGING_COMMANDS:
        config.settings()  # a bad GOALHUB_* value: one line naming it, exit 1, before any work


for _command in (
    processes.serve,
    processes.worker,
    processes.scheduler,
    processes.up,
    processes.reload,
    introspect.plugins,
    introspect.hooks,
    events.fire,
    events.outcomes,
    events.retry,
    events.outbound_command,
    replay.backfill,
    replay.resume,
    replay.breakers,
    replay.retarget_command,
    replay.drop_command,
    documents.token,
    documents.goals,
    documents.sessions,
    scaffold.new_plugin,
    configuration.config_command,
    purge.purge,
    backup.backup,
    backup.restore,
    backup.store_upgrade,
):
    main.add_command(_command)
