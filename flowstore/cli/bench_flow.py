"""``flowstore bench-flow``: accuracy and speed of flow methods on ground-truth pairs."""
from __future__ import annotations

import click

from .common import parse_devices, parse_params, user_errors


@click.command("bench-flow")
@click.argument("pairs_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--method", "methods", multiple=True, default=("farneback", "tvl1"), show_default=True,
              help="Method to run, repeatable; METHOD or METHOD@ENGINE (e.g. tvl1@torch, farneback@opencv).")
@click.option("--device", default=None, help="Torch device for torch/ptlflow engines (cpu, cuda, cuda:N).")
@click.option("--batch-size", type=int, default=None, help="Also time batches of this many pairs (torch/ptlflow engines).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Flow parameter for every method.")
@click.option("--ckpt", type=click.Path(path_type=str), default=None, help="Checkpoint for learned methods.")
@click.option("--repeats", type=int, default=1, show_default=True, help="Timed runs per pair (after one warm-up).")
@click.option("--markdown", "markdown_path", type=click.Path(path_type=str), default=None,
              help="Append the table to this markdown file (e.g. docs/benchmarks.md).")
@user_errors
def command(pairs_dir, methods, device, batch_size, params, ckpt, repeats, markdown_path):
    """Run flow methods on PAIRS_DIR (folders of frame1.png, frame2.png, flow.flo — e.g.
    ../shared/data/flow_gt) and print, per method: end-point error per pair, mean EPE, the
    Fl-all outlier rate (EPE > 3 px and > 5% of the true motion), ms per pair and pairs/s
    (and with --batch-size B, ms per pair when B pairs run as one batch).
    """
    import datetime
    import os

    from ..bench.flow import load_gt_pairs, markdown_table, run_flow_benchmark
    from ..flow import resolve_engine

    devices = parse_devices(None, device)
    if len(devices) > 1:
        raise click.BadParameter("bench-flow runs on one device", param_hint="--device")
    device = devices[0] if devices else None
    pairs = load_gt_pairs(pairs_dir)
    specs = []
    for item in methods:
        method, _, engine = item.partition("@")
        engine = resolve_engine(method, engine=engine or None, device=device)
        options = {"ckpt": ckpt} if ckpt and engine == "ptlflow" else {}
        specs.append((item, method, engine, parse_params(params), options))
    rows = run_flow_benchmark(pairs, specs, device=device, batch_size=batch_size, repeats=repeats)
    table = markdown_table(rows, pairs)
    click.echo(table)
    if markdown_path:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        with open(markdown_path, "a", encoding="utf-8") as f:
            f.write(f"\n### bench-flow on {os.path.basename(os.path.normpath(pairs_dir))} ({stamp}, "
                    f"{os.cpu_count()} cores, device {device or 'cpu'})\n\n"
                    f"`flowstore bench-flow {pairs_dir} " + " ".join(f"--method {m}" for m in methods)
                    + (f" --device {device}" if device else "") + (f" --batch-size {batch_size}" if batch_size else "")
                    + f"`\n\n{table}\n")
        click.echo(f"appended to {markdown_path}")
