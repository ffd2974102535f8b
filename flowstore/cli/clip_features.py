"""``flowstore clip-features``."""
from __future__ import annotations

import click

from .choices import RegistryChoice
from .common import one_torch_device, parse_size, torch_device_options, user_errors, write_summary_json

HELP = """Extract frozen video-backbone features of clips (rgb (T, 3, H, W) or flow (T, 2, H, W))
of every video in a flowstore store into a feature store that train-head and evaluate read
like the 2D features: (V = N_t x N_s views, S = 1, D) per video.

Backbones: torchvision's r3d_18, mc3_18, r2plus1d_18, s3d, mvit_v1_b, mvit_v2_s, swin3d_t/s/b
and pytorchvideo's X3D (x3d_xs/s/m/l; the `video` extra). --weights random (seeded) or a
local .pth/.pt (torch.load weights_only) or .safetensors file; flow backbones take 2 input
channels, RGB weights averaged over the colour channels (I3D's flow init).

Clips as mmaction2's SampleFrames in test mode: --temporal-views N_t clips of --clip-len
items every --frame-interval items, evenly spread (first at the start, last at the end);
short videos loop. Each clip is resized (--resize: shorter side) and cut into --spatial-views
N_s crops of --crop: 1 centre, 3 ThreeCrop (left/centre/right along the long side), 10 five
crops and their mirrors, any other count spread along the long side. Defaults are the
backbone's published clip length, interval, resize and crop.

The provenance records the clip shape, frame interval, parameters, GFLOPs per clip
(torch.utils.flop_counter, 2 per multiply-add), the weights' SHA-256 and seconds per clip.

\b
Examples:
  flowstore clip-features --store store --stream rgb --backbone x3d_m --weights X3D_M.pyth \\
      --temporal-views 10 --spatial-views 3 --out rgb_x3d_m.h5 --gpu 0 --workers 8
  flowstore clip-features --store demo_out/store --stream rgb --backbone x3d_xs --clip-len 8 \\
      --frame-interval 1 --resize 96 --crop 96 --out demo_out/features/rgb_x3d.h5
"""


@click.command("clip-features", help=HELP)
@click.option("--store", "-s", required=True, type=click.Path(path_type=str), help="The flowstore store to read.")
@click.option("--stream", type=click.Choice(["rgb", "flow"]), required=True, help="RGB clips or flow clips.")
@click.option("--backbone", "-b", type=RegistryChoice("flowstore.features.video_backbones:list_video_backbones"),
              default="x3d_xs", show_default=True, help="Video backbone.")
@click.option("--weights", "-w", default="random", show_default=True, metavar="PATH|random",
              help="Local weights file (.pth/.pt/.pyth/.safetensors), or 'random' (frozen random init).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=str), help="Feature store file (HDF5).")
@click.option("--clip-len", type=int, default=None, help="Frames (or flows) T per clip (default: the backbone's).")
@click.option("--frame-interval", type=int, default=None, help="Items between a clip's frames (default: the backbone's).")
@click.option("--temporal-views", type=int, default=1, show_default=True, help="Clips N_t per video, evenly spread.")
@click.option("--spatial-views", type=int, default=1, show_default=True,
              help="Crops N_s per clip: 1 centre, 3 ThreeCrop, 10 ten-crop, others along the long side.")
@click.option("--resize", default=None, metavar="N|WxH", help="Shorter side N (or WIDTHxHEIGHT) first (default: the backbone's).")
@click.option("--crop", default=None, metavar="N|WxH", help="Crop size (default: the backbone's).")
@click.option("--flow-values", type=click.Choice(["q128", "pixels", "uint8"]), default="q128", show_default=True,
              help="Flow input: (q-128)/128, dequantized pixels, or raw 8-bit values.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random initialisation.")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Clips per forward pass.")
@click.option("--workers", type=int, default=0, show_default=True, help="DataLoader processes decoding ahead (0: this process).")
@torch_device_options("features")
@click.option("--overwrite", is_flag=True, help="Replace OUT instead of resuming it.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--summary-json", type=click.Path(path_type=str), default=None, help="Also write the summary as JSON here.")
@user_errors
def command(store, stream, backbone, weights, out, clip_len, frame_interval, temporal_views, spatial_views, resize,
            crop, flow_values, seed, batch_size, workers, device, gpu, threads, dtype, overwrite, no_progress,
            summary_json):
    from ..features.clip_extract import ClipFeatureConfig, extract_clip_features

    device = one_torch_device(gpu, device, threads, "clip-features")
    cfg = ClipFeatureConfig(stream=stream, backbone=backbone, weights=weights, seed=seed, clip_len=clip_len,
                            frame_interval=frame_interval, temporal_views=temporal_views,
                            spatial_views=spatial_views, resize=parse_size(resize, "--resize", single=True),
                            crop=parse_size(crop, "--crop", single=True),
                            flow_values=flow_values, dtype=dtype, batch_size=batch_size, device=device,
                            workers=workers)
    click.echo(f"clip-features: {stream} clips of {store} with {backbone} "
               f"({'random init' if weights == 'random' else weights}) -> {out} [{device}]", err=True)
    summary = extract_clip_features(store, out, cfg, overwrite=overwrite, show_progress=not no_progress,
                                    log=lambda m: click.echo(m, err=True))
    for line in summary.lines():
        click.echo(line)
    if summary_json:
        write_summary_json(summary_json, summary, clips_per_second=summary.clips_per_second)
