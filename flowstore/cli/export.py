"""``flowstore export``."""
from __future__ import annotations

import click

from .common import parse_bytes, user_errors


@click.command("export")
@click.argument("store", type=click.Path(path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--to", "target", type=click.Choice(["webdataset", "rawframes"]), required=True,
              help="webdataset: tar shards of whole videos; rawframes: an mmaction2 rawframes tree.")
@click.option("--video", "videos", multiple=True, help="Export only this video id (repeatable).")
@click.option("--shard-size", default="1GB", show_default=True, help="webdataset: start a new tar after this many bytes.")
@user_errors
def command(store, out, target, videos, shard_size):
    """Write the committed videos of STORE to OUT in another tool's layout.

    \b
    webdataset: OUT/shard-000000.tar ..., one sample per video: <key>.entry.json,
      <key>.settings.json, <key>.rgb.000000.jpg, <key>.flow_x.000000.jpg, ... (records as stored)
    rawframes:  OUT/<id>/img_00001.jpg, flow_x_00001.jpg, flow_y_00001.jpg, rgb_list.txt, flow_list.txt
    """
    from .. import open_store

    with open_store(store) as reader:
        chosen = list(videos) or None
        for vid in chosen or []:
            reader.entry(vid)  # an unknown id fails before any output
        if target == "webdataset":
            from ..integrations.webdataset import export_webdataset

            paths = export_webdataset(reader, out, videos=chosen, shard_size=parse_bytes(shard_size))
            click.echo(f"export: {len(chosen or reader.videos)} video(s) -> {len(paths)} tar shard(s) in {out}")
        else:
            from ..data.rawframes import export_rawframes

            export_rawframes(reader, out, videos=chosen)
            click.echo(f"export: {len(chosen or reader.videos)} video(s) -> rawframes tree {out}")
