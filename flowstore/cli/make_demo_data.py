"""``flowstore make-demo-data``."""
from __future__ import annotations

import click

from .common import user_errors
from ..errors import AlreadyExistsError


@click.command("make-demo-data")
@click.argument("out", type=click.Path(path_type=str))
@click.option("--clips-per-class", type=int, default=40, show_default=True, help="Videos per motion class.")
@click.option("--frames", "num_frames", type=int, default=16, show_default=True, help="Frames per video.")
@click.option("--size", default="128x96", show_default=True, help="Frame size WIDTHxHEIGHT (even numbers).")
@click.option("--fps", type=float, default=25.0, show_default=True)
@click.option("--camera-shake", type=float, default=0.0, show_default=True, help="Random global jitter per frame, in pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset in OUT.")
@user_errors
def command(out, clips_per_class, num_frames, size, fps, camera_shake, seed, overwrite):
    """Write a small synthetic action dataset with known motion into OUT.

    Six classes (translations, rotations, zooms) whose clips differ only in motion: a textured
    object on a textured background, drawn from the same appearance distribution in every
    class. Writes OUT/videos/<class>/*.mp4 (real video files), OUT/labels.csv
    (video_id,label,class_name,split), OUT/classInd.txt (UCF101 style) and OUT/motion.json
    (the true motion of every clip, from which the true flow follows).
    """
    from ..decode import parse_size
    from ..synthetic import make_demo_dataset

    try:
        dataset = make_demo_dataset(out, clips_per_class=clips_per_class, num_frames=num_frames, size=parse_size(size),
                                    fps=fps, camera_shake=camera_shake, seed=seed, overwrite=overwrite)
    except FileExistsError:
        raise AlreadyExistsError(f"{out} already holds a demo dataset; pass --overwrite to replace it") from None
    click.echo(f"wrote {dataset.num_clips} videos of {dataset.num_frames} frames ({len(dataset.classes)} classes: "
               f"{', '.join(dataset.classes)}) to {dataset.videos_dir}; labels in {dataset.labels_path}")
