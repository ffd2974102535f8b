"""``flowstore bench-loader``."""
from __future__ import annotations

import json

import click

from .common import user_errors


@click.command("bench-loader")
@click.argument("store", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("-j", "--workers", type=click.IntRange(0), default=2, show_default=True,
              help="DataLoader worker processes, the same for every variant.")
@click.option("--modality", type=click.Choice(["flow", "rgb", "both"]), default="flow", show_default=True)
@click.option("--sampling", type=click.Choice(["stack", "tsn", "frame"]), default="stack", show_default=True)
@click.option("--length", type=click.IntRange(1), default=None,
              help="Snippet length L (default: 10 for stack, 5 flows / 1 frame for tsn, 1 for frame).")
@click.option("--segments", type=click.IntRange(1), default=3, show_default=True, help="TSN segments K.")
@click.option("--batch-size", type=click.IntRange(1), default=8, show_default=True, help="Clips per batch.")
@click.option("--epochs", type=click.IntRange(1), default=2, show_default=True,
              help="Epochs timed per warm round (a cold round is one epoch).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True,
              help="Rounds per variant (variants alternate within a round); figures are medians over rounds.")
@click.option("--max-clips", type=click.IntRange(1), default=None, help="Use at most this many clips per epoch.")
@click.option("--no-cold", is_flag=True, help="Skip the cold page-cache measurements.")
@click.option("--rawframes", "rawframes_dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Export the rawframes tree here (and keep it); reused if it already holds one. "
                   "Default: a temporary folder beside STORE, deleted afterwards.")
@click.option("--read-ahead", type=click.IntRange(0), default=8, show_default=True,
              help="Clips whose records a flowstore worker reads ahead of decoding (0: none).")
@click.option("--read-threads", type=click.IntRange(1), default=2, show_default=True,
              help="Reader threads per worker doing that read-ahead.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: decode_limit, flowstore, rawframes, flowstore_cold, "
                   "rawframes_cold (clips/s) and workers. The report goes to stderr.")
@click.option("--details", "details_path", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Also write everything (images/s, every round, memory per worker, ratios, settings) "
                   "as JSON to this file.")
@user_errors
def command(store, workers, modality, sampling, length, segments, batch_size, epochs, rounds, max_clips,
            no_cold, rawframes_dir, read_ahead, read_threads, seed, as_json, details_path):
    """Measure how fast the two-stream loader reads STORE, next to its limits.

    Three variants run the same clips through the loader's own dataset code and the same
    DataLoader settings; only the source of the encoded bytes differs: (a) decode limit: the
    bytes held in RAM, so no I/O, only cv2.imdecode and the batch assembly all variants share;
    (b) flowstore: the store's shards, read ahead of decoding by each worker's reader threads
    (also the worker's next batch); (c) rawframes: the same bytes exported as an mmaction2
    rawframes tree (img_00001.jpg, flow_x_00001.jpg, flow_y_00001.jpg) read file by file when
    needed, as mmaction2 does.
    A control, rawframes with (b)'s read-ahead, is reported beside them.

    (b) and (c) are measured warm (files in the page cache) and cold: before each cold round
    every file of the store and of the tree is evicted from the page cache (posix_fadvise
    DONTNEED) and only then are they opened. Worker start-up is not timed. Reports clips/s,
    images/s, memory (RSS, USS) per worker and the share of a core each worker got (other
    processes on the machine lower it, and with it every figure).

    Example: flowstore bench-loader store --workers 2 --json
    """
    from ..bench.loader import JSON_KEYS, bench_loader, format_report

    def log(msg):
        click.echo(msg, err=True)

    result = bench_loader(store, workers=workers, modality=modality, sampling=sampling, length=length,
                          num_segments=segments, batch_size=batch_size, epochs=epochs, rounds=rounds,
                          cold=not no_cold, rawframes_dir=rawframes_dir, keep_rawframes=rawframes_dir is not None,
                          max_clips=max_clips, read_ahead=read_ahead, read_threads=read_threads, seed=seed, log=log)
    if details_path:
        with open(details_path, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
    if as_json:
        log(format_report(result))
        click.echo(json.dumps({k: result[k] for k in JSON_KEYS}))
    else:
        click.echo(format_report(result))
