"""``goalhub backup`` and ``goalhub restore``: the embedded store, copied online and brought
back, then Redis reconciled with it; ``goalhub store-upgrade``: its file brought up to date
(``goalhub.backup``)."""

from __future__ import annotations

import click

from goalhub.cli.output import echo_json, table


@click.command()
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace PATH if it exists.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def backup(path: str, force: bool, as_json: bool) -> None:
    """Copy the embedded store to PATH while goalhub runs (SQLite's backup API: one consistent
    snapshot, what is still in the WAL included). MongoDB: mongodump --oplog (README)."""
    from goalhub import backup as backups  # deferred: only this command needs the store's backup and RQ

    done = backups.backup(path, overwrite=force)
    if as_json:
        echo_json(done)
        return
    click.echo(f"backed up to {done['path']} ({done['bytes']} bytes, {done['seconds']} s)")
    table(["COLLECTION", "DOCUMENTS"], [[name, count] for name, count in done["collections"].items()])


@click.command()
@click.argument("path", type=click.Path(dir_okay=False), required=False)
@click.option("--force", is_flag=True, help="Restore even while workers or a scheduler run.")
@click.option("--reconcile-only", is_flag=True,
              help="Restore nothing; reconcile Redis with the store (after restoring MongoDB with its own tools).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def restore(path: str | None, force: bool, reconcile_only: bool, as_json: bool) -> None:
    """Bring a backup made by `goalhub backup` back into the embedded store, then reconcile Redis
    with it: goals created after the backup are created again from their jobs, events and
    receivers left unfinished are delivered again. Stop the workers and scheduler first."""
    from goalhub import backup as backups  # deferred: only this command needs the store's backup and RQ

    if reconcile_only:
        done = {"reconciled": backups.reconcile()}
    elif path is None:
        raise click.UsageError("PATH is required (or --reconcile-only)")
    else:
        done = backups.restore(path, force=force)
    if as_json:
        echo_json(done)
        return
    if "path" in done:
        click.echo(f"restored {done['path']}")
        table(["COLLECTION", "DOCUMENTS"], [[name, count] for name, count in done["collections"].items()])
    reconciled = done["reconciled"]
    click.echo(f"reconciled: {len(reconciled['recreated'])} goal(s) re-created from their jobs, "
               f"{len(reconciled['resent'])} goal.created sent again, {len(reconciled['redelivered'])} outcome(s) "
               f"delivered again, {len(reconciled['stuck'])} left (see the log)")


@click.command("store-upgrade")
@click.option("--force", is_flag=True, help="Upgrade even while workers or a scheduler run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def store_upgrade(force: bool, as_json: bool) -> None:
    """Bring the embedded store's file up to date after upgrading goalhub: drop the index that
    releases before 2026-12-04 kept on the index entries' row ids (each entry then costs one
    insert, not two). Stop the workers and scheduler first: a process of an earlier release
    would scan every index entry for each delete."""
    from goalhub import backup as backups  # deferred: only this command needs the store's maintenance and RQ

    done = backups.upgrade_store(force=force)
    if as_json:
        echo_json(done)
        return
    click.echo(f"dropped {', '.join(done['dropped'])}" if done["dropped"] else "the store is up to date")
