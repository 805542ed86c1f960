"""``goalhub purge``: delete the records past their lifetime (``goalhub.retention``)."""

from __future__ import annotations

import click

from goalhub import config, retention
from goalhub.cli.output import echo_json, table
from goalhub.store import get_database


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def purge(dry_run: bool, as_json: bool) -> None:
    """Delete idempotency records, outcomes, events and outbound records past their lifetime.

    MongoDB expires them by itself (TTL indexes); the scheduler purges the embedded store
    every GOALHUB_PURGE_INTERVAL seconds. This runs the same purge now."""
    counts = retention.purge(get_database(), dry_run=dry_run)
    if as_json:
        echo_json({"dry_run": dry_run, "deleted" if not dry_run else "expired": counts})
        return
    rows = []
    for name, count in counts.items():
        ttl = config.retention_seconds(name)
        rows.append([name, f"{ttl} s" if ttl > 0 else "for ever", count])
    table(["COLLECTION", "KEPT", "WOULD DELETE" if dry_run else "DELETED"], rows)
