"""``flowstore features``."""
from __future__ import annotations

import click

from .choices import RegistryChoice
from .common import one_torch_device, parse_size, torch_device_options, user_errors, write_summary_json

HELP = """Extract frozen-backbone features of one stream (rgb frames or stacked flow) of every
video in a flowstore store into an HDF5 feature store.

The backbone is a timm model (resnet18, resnet50, efficientnet_b0, ... any timm name), frozen
and in eval mode. --weights random builds it with timm's random initialisation (seeded by
--seed; residual branches are NOT zero-initialised, or a random ResNet would be mostly
identity blocks); --weights PATH loads a local .pth/.pt (torch.load weights_only) or
.safetensors file. A flow backbone takes 2L input channels (x0, y0, x1, y1, ...); RGB weights
are adapted by TSN's cross-modality initialisation (first-layer filters averaged over the RGB
channels and replicated over the 2L channels).

Sampling is TSN's: --segments K snippets per video, each of --length items (1 frame for rgb,
L flows for flow), each segment taken at --temporal-views T positions; every snippet gives
--spatial-views C crops (1: centre or whole frame, 2: plus its mirror, 10: TSN's ten crops).
Each video is stored as (V = T*C views, K segments, D features).

\b
--stacking says what the L flows of a flow snippet are (Simonyan & Zisserman 2014, sec. 3.1):
  stack          the forward flows of L consecutive frame pairs (their eq. 1; the default)
  bidirectional  L/2 backward flows before the snippet's middle frame and L/2 forward flows
                 after it, 2L channels (L even); needs a store made with
                 `flowstore extract --direction both`
  trajectory     the L forward flows sampled along the trajectory that follows the flow from
                 each pixel (their eq. 2, bilinear on the dequantized flow; a stride-1 store)

Mean subtraction works on each (bidirectional: each half has its own stack mean). The stacking
is recorded in the provenance: resuming OUT with another one is refused as a settings mismatch.

--pool none keeps the
backbone's last conv map instead (timm forward_features, before global pooling): (V, K, C, h, w)
per video in float16, one HDF5 chunk per video, for `train-head --fusion mid-conv`; all videos
must then give one input size (--crop, or --resize WxH). The summary reports the bytes per
video (as stored and on disk).

The feature store records its provenance (backbone, weights SHA-256, sampling, views, input
values, the flow store's path and manifest hash). Reruns are resumable: videos already in
OUT are never recomputed; a rerun with other settings is refused unless --overwrite.
SIGINT/SIGTERM stop it cleanly (exit 130/143): the videos written so far are kept and a rerun
computes the rest. A --crop larger than the (resized) frames is refused before any work.

\b
Examples:
  flowstore features --store demo_out/store --stream flow --backbone resnet18 --weights random --out flow.h5
  flowstore features --store store --stream rgb --backbone resnet50 --weights resnet50_a1.pth \\
      --resize 256 --crop 224 --spatial-views 10 --out rgb_r50.h5 --gpu 0
  flowstore features --store store --stream flow --pool none --crop 112 --out flow_maps.h5
  flowstore features --store store_both --stream flow --length 10 --stacking bidirectional --out flow_bi.h5
"""


@click.command("features", help=HELP)
@click.option("--store", "-s", required=True, type=click.Path(path_type=str), help="The flowstore store to read.")
@click.option("--stream", type=click.Choice(["rgb", "flow"]), required=True, help="RGB frames or stacked optical flow.")
@click.option("--backbone", "-b", default="resnet18", show_default=True, help="timm model name.")
@click.option("--weights", "-w", default="random", show_default=True, metavar="PATH|random",
              help="Local weights file (.pth/.pt/.safetensors), or 'random' (frozen random init).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="Feature store file (HDF5, e.g. feats.h5).")
@click.option("--segments", "num_segments", type=int, default=3, show_default=True, help="TSN segments K per video.")
@click.option("--length", type=int, default=None, help="Items per snippet: 1 frame for rgb; flows L for flow (default 5).")
@click.option("--temporal-views", type=int, default=1, show_default=True, help="Positions T per segment (evenly spaced; 1 = segment centre).")
@click.option("--spatial-views", type=click.Choice(["1", "2", "10"]), default="1", show_default=True,
              help="Crops per snippet: 1 centre, 2 centre + mirror, 10 TSN ten-crop (needs --crop).")
@click.option("--resize", default=None, metavar="WxH|N", help="Resize frames/flow first: WIDTHxHEIGHT, or shorter side N.")
@click.option("--crop", default=None, metavar="WxH|N", help="Crop size (default: the whole frame).")
@click.option("--flow-values", type=click.Choice(["q128", "pixels", "uint8"]), default="q128", show_default=True,
              help="Flow input: (q-128)/128 as TSN, dequantized pixels, or raw 8-bit values.")
@click.option("--stacking", type=RegistryChoice("flowstore.data.sampling:list_stackings"), default="stack",
              show_default=True, help="Flow snippets: stack (forward flows), bidirectional (L/2 backward + L/2 "
                                      "forward; a --direction both store) or trajectory (along the flow).")
@click.option("--mean-subtract", type=click.Choice(["none", "field", "stack"]), default="none", show_default=True,
              help="Camera-motion compensation: subtract each flow field's (or stack's) mean vector.")
@click.option("--pool", type=click.Choice(["avg", "none"]), default="avg", show_default=True,
              help="avg: the pooled feature vector; none: keep the last conv map (V, S, C, h, w) in float16 "
                   "(for train-head --fusion mid-conv; needs one input size: --crop or --resize WxH).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random initialisation.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Images per forward pass.")
@torch_device_options("features")
@click.option("--executor", type=RegistryChoice("flowstore.extract.executor:list_executors"), default="local", show_default=True,
              help="Compute here, or on Ray actors (one backbone each; docs/cluster.md).")
@click.option("--workers", type=int, default=None, help="Ray: actors (default: as many as the cluster has room for).")
@click.option("--ray-address", default=None, help="Ray cluster (default: a running one, else a local one).")
@click.option("--gpus-per-worker", type=float, default=None, help="Ray: GPUs per actor (e.g. 1; set --device cuda).")
@click.option("--cpus-per-worker", type=float, default=None, help="Ray: CPUs per actor (default 1).")
@click.option("--max-retries", type=int, default=None, help="Ray: tries of videos whose actor dies (default 3).")
@click.option("--overwrite", is_flag=True, help="Replace OUT instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--summary-json", type=click.Path(path_type=str), default=None, help="Also write the summary as JSON here.")
@user_errors
def command(store, stream, backbone, weights, out, num_segments, length, temporal_views, spatial_views, resize, crop,
            flow_values, stacking, mean_subtract, pool, seed, batch_size, device, gpu, threads, dtype, executor, workers, ray_address,
            gpus_per_worker, cpus_per_worker, max_retries, overwrite, no_progress, summary_json):
    from ..features.extract import FeatureConfig, extract_features

    device = one_torch_device(gpu, device, threads, "features")
    if pool == "none" and dtype == "float32" and \
            click.get_current_context().get_parameter_source("dtype") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--pool none stores float16 maps; drop --dtype float32")
    crop_size = parse_size(crop, "--crop", single=True)
    if isinstance(crop_size, int):
        crop_size = (crop_size, crop_size)
    cfg = FeatureConfig(stream=stream, backbone=backbone, weights=weights, seed=seed, num_segments=num_segments,
                        length=length, temporal_views=temporal_views, spatial_views=int(spatial_views),
                        resize=parse_size(resize, "--resize", single=True), crop=crop_size, flow_values=flow_values,
                        mean_subtract=None if mean_subtract == "none" else mean_subtract, dtype=dtype,
                        batch_size=batch_size, device=device, pool=pool, stacking=stacking)
    click.echo(f"features: {stream} of {store} with {backbone} ({'random init' if weights == 'random' else weights}) "
               f"-> {out} [{device}]", err=True)
    options = {k: v for k, v in dict(workers=workers, ray_address=ray_address, gpus_per_worker=gpus_per_worker,
                                     cpus_per_worker=cpus_per_worker, max_retries=max_retries).items() if v is not None}
    if options and executor == "local":
        raise click.UsageError(f"{', '.join('--' + k.replace('_', '-') for k in options)}: only with --executor ray")
    summary = extract_features(store, out, cfg, overwrite=overwrite, show_progress=not no_progress,
                               log=lambda m: click.echo(m, err=True), executor=executor, executor_options=options)
    for line in summary.lines():
        click.echo(line)
    if summary_json:
        write_summary_json(summary_json, summary)
