"""``flowstore merge``."""
from __future__ import annotations

import click

from .common import user_errors


@click.command("merge")
@click.argument("stores", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="The new, merged store.")
@click.option("--copy", is_flag=True, help="Copy shards instead of hard-linking them (linking needs one file system).")
@user_errors
def command(stores, out, copy):
    """Combine STORE... (same settings, no video id in common) into the new store --out.

    For stores extracted on machines with no shared storage. Shards are hard-linked (or copied)
    under new numbers, entries and failures united, and the result is verified. Stores with
    different settings are refused, naming the differing key; so is an id in two stores,
    before anything is written.
    """
    from ..store.merge import merge_stores

    summary = merge_stores(stores, out, copy=copy, log=lambda m: click.echo(m, err=True))
    for line in summary.lines():
        click.echo(line)
