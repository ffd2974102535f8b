"""``flowstore bench-flow``: accuracy and speed of flow methods on ground-truth pairs."""
from __future__ import annotations

import click

from .common import parse_params, user_errors
from ..errors import MissingFileError


def load_gt_pairs(root):
    """Folders holding frame1.png, frame2.png and flow.flo (e.g. ../shared/data/flow_gt)."""
    from pathlib import Path

    import cv2

    from ..flo import read_flo

    pairs = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if not all((folder / f).exists() for f in ("frame1.png", "frame2.png", "flow.flo")):
            continue
        frames = [cv2.cvtColor(cv2.imread(str(folder / f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in ("frame1.png", "frame2.png")]
        pairs.append((folder.name, frames[0], frames[1], read_flo(folder / "flow.flo")))
    if not pairs:
        raise MissingFileError(f"no frame1.png/frame2.png/flow.flo folders under {root}")
    return pairs


def run_flow_benchmark(pairs, specs, *, device=None, batch_size=None, repeats=1):
    """``specs``: list of (label, method, engine, params, options). Returns rows of results; timings
    are per pair at batch 1 after one warm-up, and with ``batch_size`` also per pair in full batches."""
    import time

    import numpy as np

    from ..flo import mean_epe, outlier_rate
    from ..flow import build_flow

    rows = []
    for label, method, engine, params, options in specs:
        opts = dict(options)
        if batch_size is not None and engine != "opencv":
            opts["batch_size"] = batch_size
        est = build_flow(method, engine=engine, device=device if engine != "opencv" else None, params=params, **opts)
        epes, outliers, seconds = {}, [], 0.0
        for name, f1, f2, gt in pairs:
            a, b = est.prepare(f1), est.prepare(f2)
            est.compute([a], [b])  # warm-up (allocations, torch.compile, cudnn autotune)
            start = time.perf_counter()
            for _ in range(repeats):
                flow = est.compute([a], [b])[0]
            seconds += (time.perf_counter() - start) / repeats
            epes[name] = mean_epe(flow, gt)
            outliers.append(outlier_rate(flow, gt))
        batch_ms = None
        if batch_size and batch_size > 1 and engine != "opencv":
            # throughput with full batches: each pair repeated batch_size times, all pairs
            batch_seconds = 0.0
            for _, f1, f2, _ in pairs:
                a, b = est.prepare(f1), est.prepare(f2)
                start = time.perf_counter()
                est.compute([a] * batch_size, [b] * batch_size)
                batch_seconds += (time.perf_counter() - start) / batch_size
            batch_ms = 1000 * batch_seconds / len(pairs)
        rows.append({
            "label": label, "engine": est.engine, "device": est.device, "epe": epes,
            "mean_epe": float(np.mean(list(epes.values()))), "fl_all": float(np.mean(outliers)),
            "ms_per_pair": 1000 * seconds / len(pairs), "pairs_per_s": len(pairs) / seconds,
            "batch_size": batch_size if batch_ms is not None else 1, "batch_ms_per_pair": batch_ms,
        })
    return rows


def markdown_table(rows, pairs) -> str:
    names = [p[0] for p in pairs]
    batched = any(r["batch_ms_per_pair"] for r in rows)
    head = ("| method | engine | device | " + " | ".join(names) + " | mean EPE | Fl-all | ms/pair | pairs/s |"
            + (" ms/pair in batches |" if batched else ""))
    lines = [head, "|" + "---|" * (len(names) + 7 + batched)]
    for r in rows:
        line = (f"| {r['label']} | {r['engine']} | {r['device']} | " + " | ".join(f"{r['epe'][n]:.3f}" for n in names)
                + f" | {r['mean_epe']:.3f} | {100 * r['fl_all']:.1f}% | {r['ms_per_pair']:.0f} | {r['pairs_per_s']:.2f} |")
        if batched:
            line += f" {r['batch_ms_per_pair']:.0f} (B={r['batch_size']}) |" if r["batch_ms_per_pair"] else " – |"
        lines.append(line)
    return "\n".join(lines)


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

    pairs = load_gt_pairs(pairs_dir)
    specs = []
    for item in methods:
        method, _, engine = item.partition("@")
        from ..flow import resolve_engine

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
