"""``flowstore methods``."""
from __future__ import annotations

import json

import click

from .common import user_errors


def _rows() -> list[dict]:
    from ..flow.catalog import engine_facts
    from ..flow.registry import list_engines, list_families, list_methods

    rows = []
    for method in list_methods() + [f.replace(":NAME", ":*") for f in list_families()]:
        lookup = method.replace(":*", ":NAME")
        for rank, engine in enumerate(list_engines(lookup)):
            rows.append({"method": lookup, "engine": engine, "default": rank == 0, **engine_facts(lookup, engine)})
    return rows


@click.command("methods")
@click.option("--json", "as_json", is_flag=True, help="Print the table as a JSON list.")
@user_errors
def command(as_json):
    """List every flow method and engine: what it needs (extra, checkpoint name), the devices it
    runs on, and a speed/accuracy note with the source of each number (ptlflow's published table
    or this project's docs/benchmarks.md). The learned models also show their paper, licence,
    CPU speed and smallest frame side; one is marked as recommended for bulk extraction."""
    rows = _rows()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for r in rows:
        recommended = ", recommended for bulk extraction" if r.get("recommended") else ""
        click.echo(f"{r['method']} [{r['engine']}{', default' if r['default'] else ''}{recommended}]")
        if "paper" in r:
            click.echo(f"  {r['paper']}; licence {r['licence']}")
        click.echo(f"  needs: {r.get('needs', '?')}")
        if "checkpoint" in r:
            click.echo(f"  checkpoint: {r['checkpoint']}"
                       + (f" (published: {r['published_checkpoint']})" if "published_checkpoint" in r else ""))
        click.echo(f"  devices: {', '.join(r.get('devices', ['?']))}")
        if r.get("min_side"):
            click.echo(f"  frames: both sides >= {r['min_side']} px")
        if "speed" in r:
            click.echo(f"  speed: {r['speed']}; accuracy: {r['accuracy']}")
        if "cpu" in r:
            click.echo(f"  CPU at 340x256: {r['cpu']}")
        for name, p in r.get("published", {}).items():
            click.echo(f"  {r['method'].replace('NAME', name)}: {p['ms_per_pair']} ms/pair, Sintel clean EPE {p['sintel_clean_epe']}")
        if "source" in r:
            click.echo(f"  source: {r['source']}")
