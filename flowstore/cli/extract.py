"""``flowstore extract``."""
from __future__ import annotations

import sys

import click

from .choices import RegistryChoice
from .common import EXIT_FAILURES, EXIT_USAGE, fail, parse_bytes, parse_devices, parse_params, parse_size, user_errors, write_summary_json
from ..flow.registry import describe_methods
from ..store.format import DIRECTION_OPTIONS

HELP = """Decode videos, compute dense optical flow for every frame pair, quantize it to 8 bits and
write RGB frames and flow into a sharded LMDB (default) or HDF5 store.

INPUT is any mix of video files and directories (searched recursively, following symlinked
folders, each folder once); --list FILE adds one path per line. A video's id is its path
relative to the input root without extension. Skipped non-video files and broken links are
reported.

The run is resumable: rerunning the same command skips videos already committed and
completes the job, also after a crash or kill -9. Bad videos never stop the run: they are
listed in STORE/failures.jsonl and skipped on reruns unless --retry-failed. A committed video
is never rewritten: if its source file changed since (size or SHA-256), a warning says so and
the stored one is kept; to re-extract it, extract it into a new --out.

\b
Examples:
  flowstore extract videos/ --out store --method tvl1 --size 340x256
  flowstore extract --list train.txt --out store --method farneback --workers 8
  flowstore extract videos/ --out store --method gmflow --ckpt gmflow.ckpt --gpu 0

\b
Exit codes:
  0  every video was extracted (or --allow-failures)
  2  bad command line or inputs (missing file, id collision), nothing was done
  3  some videos failed; they are in STORE/failures.jsonl
  4  another process is writing this store
  5  the store cannot be written (disk full, read-only, permissions); it stays consistent
  130  stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM: workers stopped, committed videos
     kept; rerun the same command to continue
"""


@click.command("extract", help=HELP)
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="Store directory (created if needed).")
@click.option("--list", "list_file", type=click.Path(path_type=str), help="Text file with one video path per line (relative to the file's folder).")
@click.option("--root", type=click.Path(path_type=str), help="Make video ids relative to this folder instead of each input's own root.")
@click.option("--format", "backend", type=RegistryChoice("flowstore.store.backend:list_backends"), default="lmdb", show_default=True, help="Shard format; LMDB reads ~20x faster for training.")
@click.option("--method", default="tvl1", show_default=True, help=f"Flow method: {describe_methods()}.")
@click.option("--engine", type=RegistryChoice("flowstore.flow.registry:list_engines"), default=None, help="Force an implementation (default: opencv on the CPU, torch when a device is given).")
@click.option("--gpu", default=None, help="GPU index(es), e.g. 0 or 0,1,2,3 (one worker per GPU). Same as --device cuda:N.")
@click.option("--device", default=None, help="Torch device(s) for torch/ptlflow engines: cpu, cuda, cuda:N, or a list such as cuda:0,cuda:1 (one worker each).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Flow parameter, repeatable (e.g. --param winsize=21 --param levels=5).")
@click.option("--batch-size", type=int, default=None, help="Pairs per batch for torch/ptlflow engines.")
@click.option("--ckpt", type=click.Path(path_type=str), default=None, help="Checkpoint file for learned models (ptlflow).")
@click.option("--fp16", is_flag=True, help="Half precision for learned models on CUDA.")
@click.option("--compile", "use_compile", is_flag=True, help="torch.compile the torch TV-L1 inner step on the CPU too (20-60 s to compile; pays off on long runs). On CUDA the fused path is compiled already.")
@click.option("--quant", type=RegistryChoice("flowstore.quantize:list_quant_schemes"), default="bound", show_default=True, help="bound: clip to ±BOUND px (TSN); minmax: per-flow min/max, stored beside it.")
@click.option("--bound", type=float, default=20.0, show_default=True, help="Clipping bound in pixels for --quant bound.")
@click.option("--flow-codec", type=RegistryChoice("flowstore.codec:list_codecs"), default="jpeg", show_default=True, help="Codec of each flow component (see docs/benchmarks.md for size vs. error).")
@click.option("--flow-quality", type=int, default=None, help="JPEG quality (default 95) or PNG level (default 1) for flow.")
@click.option("--frame-codec", type=RegistryChoice("flowstore.codec:list_codecs"), default="jpeg", show_default=True, help="Codec of the RGB frames.")
@click.option("--frame-quality", type=int, default=None, help="JPEG quality (default 95) or PNG level (default 1) of the RGB frames.")
@click.option("--size", default=None, help="Resize frames to WIDTHxHEIGHT before flow, e.g. 340x256 (TSN).")
@click.option("--short-side", type=int, default=None, help="Resize so the shorter side is N pixels, keeping the aspect ratio.")
@click.option("--stride", type=int, default=1, show_default=True, help="Frame gap of a flow pair: flow i goes from frame i to frame i+STRIDE.")
@click.option("--direction", type=click.Choice(list(DIRECTION_OPTIONS)), default="forward", show_default=True,
              help="Flow directions to store: backward flow i goes from frame i+STRIDE to frame i (the engine on the "
                   "swapped pair); both: forward and backward (needed by bidirectional stacking).")
@click.option("--fps", type=float, default=None,
              help="Frame-rate reduction: keep the decoded frames nearest to a regular N fps grid (from the first "
                   "frame's decoded timestamp; ties keep the earlier frame; never duplicates, so a slower clip keeps "
                   "every frame). The kept source frame indices and timestamps go into each video's entry.")
@click.option("--decoder", type=RegistryChoice("flowstore.decode:list_decoders"), default="opencv", show_default=True, help="Video decoding backend.")
@click.option("--shard-size", default="1GB", show_default=True, help="Start a new shard file after this many bytes (shards hold whole videos).")
@click.option("--workers", "-j", type=int, default=0, help="Worker processes (default: all cores; with --executor ray: as many as the cluster has room for).")
@click.option("--executor", type=RegistryChoice("flowstore.extract.executor:list_executors"), default="local", show_default=True, help="Where workers run: local processes, or Ray actors on a cluster (docs/cluster.md).")
@click.option("--ray-address", default=None, help="Ray cluster to use (default: a running one, else a local one sized by --workers; 'local' always starts one).")
@click.option("--gpus-per-worker", type=float, default=None, help="GPUs per Ray worker (e.g. 1, or 0.5 to pack two workers on a GPU).")
@click.option("--cpus-per-worker", type=float, default=None, help="CPUs per Ray worker (default 1).")
@click.option("--max-retries", type=int, default=None, help="Ray: tries of a video whose worker dies before it is listed as failed (default 3).")
@click.option("--retry-failed", is_flag=True, help="Retry videos listed in failures.jsonl.")
@click.option("--allow-failures", is_flag=True, help="Exit 0 even if some videos failed.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--summary-json", type=click.Path(path_type=str), default=None, help="Also write the closing summary as JSON to this file.")
@click.pass_context
@user_errors
def command(ctx, inputs, out, list_file, root, backend, method, engine, gpu, device, params, batch_size, ckpt,
            fp16, use_compile, quant, bound, flow_codec, flow_quality, frame_codec, frame_quality, size, short_side, stride, direction, fps, decoder,
            shard_size, workers, executor, ray_address, gpus_per_worker, cpus_per_worker, max_retries, retry_failed,
            allow_failures, no_progress, summary_json):
    from ..decode import FrameResize
    from ..extract import ExtractConfig, PlanError, Skipped, plan_jobs, run_extract
    from ..quantize import QuantSpec

    if not inputs and not list_file:
        raise click.UsageError("give at least one INPUT (file or directory) or --list FILE")
    devices = parse_devices(gpu, device)
    options = {}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if ckpt is not None:
        options["ckpt"] = ckpt
    if fp16:
        options["fp16"] = True
    if use_compile:
        options["compile"] = True
    skipped = Skipped()
    try:
        jobs = plan_jobs(inputs, list_file=list_file, root=root, skipped=skipped)
    except PlanError as exc:
        fail(str(exc), EXIT_USAGE)
    for line in skipped.lines():
        click.echo(line, err=True)
    cfg = ExtractConfig(
        out=out, backend=backend, method=method, engine=engine, device=devices[0] if devices else None,
        devices=tuple(devices), flow_params=parse_params(params), flow_options=options,
        quant=QuantSpec(scheme=quant, bound=bound), flow_codec=flow_codec, flow_quality=flow_quality,
        frame_codec=frame_codec, frame_quality=frame_quality, resize=FrameResize(size=parse_size(size, "--size"), short_side=short_side),
        stride=stride, directions=DIRECTION_OPTIONS[direction], fps=fps, decoder=decoder, shard_size=parse_bytes(shard_size), workers=workers,
    )
    where = f"{cfg.n_workers} worker(s)" if executor == "local" else f"executor {executor}"
    click.echo(f"extract: {len(jobs)} video(s) -> {out} [{backend}, {method}, {where}]", err=True)
    options = dict(ray_address=ray_address, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                   max_retries=max_retries)
    summary = run_extract(jobs, cfg, retry_failed=retry_failed, show_progress=not no_progress,
                          log=lambda m: click.echo(m, err=True), executor=executor, executor_options=options)
    for line in summary.lines():
        click.echo(line)
    if summary_json:
        write_summary_json(summary_json, summary, pairs_per_second=summary.pairs_per_second,
                           bytes_per_pair=summary.bytes_per_pair)
    if summary.failures and not allow_failures:
        click.echo(f"{len(summary.failures)} video(s) failed (listed above and in {out}/failures.jsonl); "
                   "exit code 3. Use --allow-failures to accept them.", err=True)
        sys.exit(EXIT_FAILURES)

