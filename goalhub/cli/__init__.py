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
from typing import Any

import click
import redis

from goalhub import config
from goalhub.cli import configuration, documents, events, introspect, processes, purge, replay, scaffold
from goalhub.errors import GoalhubError

__all__ = ["main"]


class GoalhubGroup(click.Group):
    """Turns the errors a user can cause into one line on stderr and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GoalhubError as exc:
            raise click.ClickException(exc.message) from None
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise click.ClickException(f"Redis is not reachable ({_redis_target()}): {exc}") from None
        except BrokenPipeError:
            # The reader went away (`goalhub outcomes | head`): no error line, no flush error at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except OSError as exc:  # ConnectionError, an address in use, a missing file...
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
        except Exception as exc:
            # pymongo is only imported when a real MongoDB is configured.
            if type(exc).__module__.startswith("pymongo.errors"):
                raise click.ClickException(f"the store is not reachable: {exc}") from None
            raise


def _redis_target() -> str:
    return config.redis_url() or f"embedded Redis under {config.home()}"


@click.group(cls=GoalhubGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="goalhub")
def main() -> None:
    """goalhub: the goal engine of a live-streaming platform."""
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
    documents.token,
    documents.goals,
    documents.sessions,
    scaffold.new_plugin,
    configuration.config_command,
    purge.purge,
):
    main.add_command(_command)
