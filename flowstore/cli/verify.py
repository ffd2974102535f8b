"""``flowstore verify``."""
from __future__ import annotations

import sys

import click

from .common import EXIT_VERIFY, user_errors


@click.command("verify")
@click.argument("store", type=click.Path(path_type=str))
@click.option("--decode", is_flag=True, help="Also decode every image and check its size (slower).")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@user_errors
def command(store, decode, no_progress):
    """Check every committed record of STORE: present, CRC-32 matches, (--decode) decodable.

    Exits 0 when the store is intact and 6 when any record is damaged or missing; each
    problem is printed with the video, record kind, index and shard file.
    """
    from tqdm import tqdm

    from .. import open_store
    from ..store.verify import verify_store

    with open_store(store) as reader:  # the count from the catalog: no full read just for the bar
        total = len(reader)
    with tqdm(total=total, desc="verify", unit="video", disable=no_progress) as bar:
        report = verify_store(store, decode=decode, progress=bar.update)
    for problem in report.problems:
        click.echo(f"BAD {problem}")
    status = "OK" if report.ok else f"FAILED: {len(report.problems)} problem(s)"
    click.echo(f"verify {store}: {report.videos} videos, {report.records} records checked: {status}")
    if not report.ok:
        sys.exit(EXIT_VERIFY)
