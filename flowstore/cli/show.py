"""``flowstore show``."""
from __future__ import annotations

import click

from .common import user_errors
from ..errors import InputError


def flow_picture(rgb, flow, *, clip: float | None = None):
    """RGB frame beside the Middlebury colour-wheel rendering of its flow (flow_vis)."""
    import flow_vis
    import numpy as np

    flow = np.asarray(flow, dtype=np.float32)
    colours = flow_vis.flow_to_color(np.clip(flow, -clip, clip) if clip else flow, convert_to_bgr=False)
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    return np.hstack([rgb, gap, colours])


def save_rgb(path: str, rgb) -> None:
    import cv2

    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise InputError(f"could not write {path!r}: use a .png or .jpg name in an existing, writable folder")


@click.command("show")
@click.argument("store", type=click.Path(path_type=str))
@click.argument("video")
@click.option("--frame", "index", type=int, default=0, show_default=True, help="Flow/frame index (0-based).")
@click.option("-o", "--out", required=True, type=click.Path(path_type=str), help="Output image (.png).")
@click.option("--clip", type=float, default=None, help="Clip flow magnitude to ±CLIP px before colouring.")
@user_errors
def command(store, video, index, out, clip):
    """Write frame I of VIDEO beside the colour-wheel picture of flow I (frame I -> I+stride).

    Colours follow the Middlebury convention: hue is direction, saturation is magnitude
    (normalised to the largest motion in the picture).
    """
    from .. import open_store

    with open_store(store) as reader:
        picture = flow_picture(reader.frame(video, index), reader.flow(video, index), clip=clip)
    save_rgb(out, picture)
    click.echo(f"wrote {out} ({picture.shape[1]}x{picture.shape[0]})")
