"""``flowstore info``."""
from __future__ import annotations

import json

import click

from .common import user_errors


@click.command("info")
@click.argument("store", type=click.Path(path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print everything as one JSON object.")
@user_errors
def command(store, as_json):
    """Describe STORE: format and version, flow method and parameters, quantization, codecs,
    committed videos with their frame and flow counts, and failures.

    --json prints one object with at least the keys format, version, method, quantization,
    videos ([{id, num_frames, num_flows, ...}]) and failures.
    """
    from .. import open_store

    with open_store(store) as reader:
        info = reader.info()
    if as_json:
        click.echo(json.dumps(info, indent=1, ensure_ascii=False))
        return
    flow, q = info["flow"], info["quantization"]
    videos = info["videos"]
    pairs = sum(v["num_flows"] for v in videos)
    nbytes = sum(v.get("bytes") or 0 for v in videos)
    bound = f", bound ±{q['bound']:g} px" if q["scheme"] == "bound" else " (per-flow min/max)"
    click.echo(f"store      {info['path']}")
    click.echo(f"format     {info['format']} {info['version']} ({info['backend']}), written by flowstore {info['flowstore_version']}")
    click.echo(f"flow       {flow['method']} [{flow['engine']} {flow.get('library_version', '')} on {flow.get('device')}] "
               f"params {json.dumps(flow.get('params', {}), sort_keys=True)}")
    click.echo(f"encoding   flow {flow['codec']}{'' if flow.get('quality') is None else ' ' + str(flow['quality'])}, "
               f"frames {info['frames']['codec']} {info['frames'].get('quality')}, quantization {q['scheme']}{bound}, stride {info['stride']}")
    click.echo(f"frames     flow directions {' + '.join(info['directions'])}, "
               + ("every decoded frame" if info["fps"] is None else f"decoded frames nearest to {info['fps']:g} fps"))
    click.echo(f"videos     {len(videos)} committed, {pairs} flows, {nbytes:,} bytes"
               + (f" ({nbytes / pairs:,.0f} per pair)" if pairs else ""))
    for v in videos[:20]:
        click.echo(f"  {v['id']}: {v['num_frames']} frames, {v['num_flows']} flows, {v['width']}x{v['height']}, {v['shard']}")
    if len(videos) > 20:
        click.echo(f"  ... {len(videos) - 20} more (use --json)")
    click.echo(f"failures   {len(info['failures'])}")
    for f in info["failures"]:
        click.echo(f"  {f['id']}: {f['reason']}")
