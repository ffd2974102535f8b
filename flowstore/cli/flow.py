"""``flowstore flow``: one image pair to a Middlebury .flo file."""
from __future__ import annotations

import click

from .choices import RegistryChoice
from .common import parse_params, user_errors
from ..errors import InputError
from ..flow.registry import describe_methods


@click.command("flow")
@click.argument("image1", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("image2", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--method", default="tvl1", show_default=True, help=f"{describe_methods()}.")
@click.option("--engine", type=RegistryChoice("flowstore.flow.registry:list_engines"), default=None, help="Force an implementation.")
@click.option("--device", default=None, help="Torch device for torch/ptlflow engines.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Flow parameter, repeatable.")
@click.option("--ckpt", type=click.Path(path_type=str), default=None, help="Checkpoint for learned models.")
@click.option("-o", "--out", required=True, type=click.Path(path_type=str), help="Output .flo file.")
@click.option("--png", "png_out", type=click.Path(path_type=str), default=None, help="Also write a colour-wheel picture.")
@user_errors
def command(image1, image2, method, engine, device, params, ckpt, out, png_out):
    """Compute the flow from IMAGE1 to IMAGE2 (u right, v down, pixels) into a .flo file."""
    import cv2
    import numpy as np

    from ..flo import write_flo
    from ..flow import build_flow

    frames = []
    for path in (image1, image2):
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise InputError(f"cannot read image {path!r}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if frames[0].shape != frames[1].shape:
        raise InputError(f"images differ in size: {frames[0].shape[1::-1]} vs {frames[1].shape[1::-1]}")
    options = {"ckpt": ckpt} if ckpt else {}
    estimator = build_flow(method, engine=engine, device=device, params=parse_params(params), **options)
    flow = estimator(frames[0], frames[1])
    write_flo(out, flow)
    mag = np.sqrt((flow**2).sum(-1))
    click.echo(f"wrote {out}: {flow.shape[1]}x{flow.shape[0]}, mean |flow| {mag.mean():.3f} px, max {mag.max():.3f} px")
    if png_out:
        from .show import flow_picture, save_rgb

        save_rgb(png_out, flow_picture(frames[0], flow))
