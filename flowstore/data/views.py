"""Test views of video clips: N_t clips over time times N_s spatial crops.

A video's ``V = N_t * N_s`` views are indexed ``t * N_s + s`` (clip-major): temporal clip ``t``
(:func:`flowstore.data.clip_sampling.clip_offsets` in test mode with ``num_clips = N_t``)
cut at spatial crop ``s``. The same crop is applied to every frame (or flow) of a clip.

Spatial crops of ``crop_w x crop_h`` in a ``W x H`` frame, :func:`spatial_crop_boxes`:

``N_s = 1``
    The centre crop ``((W - w) // 2, (H - h) // 2)``.
``N_s = 10``
    Five crops (4 corners, centre) and their mirror images, in
    :data:`flowstore.data.transforms.TEN_CROP_ORDER` (TSN's / mmaction2's ``TenCrop``).
any other ``N_s`` (2, 3, 4, 8, 16, ...)
    ``N_s`` crops spread along the *long* side, centred on the short side: with
    ``step = (long - crop) // (N_s - 1)``, crop ``i`` starts at ``i * step``. ``N_s = 3`` is
    mmaction2's ``ThreeCrop`` (offsets ``0``, ``step``, ``2 * step`` with ``step =
    (long - crop) // 2``), listed here left, centre, right (mmaction2 lists left, right, centre;
    the order only matters for which views a subset keeps, :mod:`flowstore.heads.views`).

Mirrored views mirror the image and negate u (flow: ``q_x -> 255 - q_x``), as everywhere in
:mod:`flowstore.data.transforms`.
"""
from __future__ import annotations

from ..errors import InputError
from .transforms import Clip, ResizeClip, _pair, crop_views, ten_crop_boxes


def spatial_crop_boxes(image_w: int, image_h: int, crop_w: int, crop_h: int,
                       num: int) -> list[tuple[int, int, int, int, bool]]:
    """``(x, y, w, h, flipped)`` of ``num`` spatial views (see the module docstring)."""
    if num < 1:
        raise InputError(f"number of spatial views must be >= 1, got {num}")
    if crop_w > image_w or crop_h > image_h or crop_w < 1 or crop_h < 1:
        raise InputError(f"crop {crop_w}x{crop_h} does not fit the {image_w}x{image_h} frames "
                         "(resize them first)")
    if num == 10:
        return ten_crop_boxes(image_w, image_h, crop_w, crop_h)
    cx, cy = (image_w - crop_w) // 2, (image_h - crop_h) // 2
    if num == 1:
        return [(cx, cy, crop_w, crop_h, False)]
    if image_w >= image_h:
        step = (image_w - crop_w) // (num - 1)
        return [(i * step, cy, crop_w, crop_h, False) for i in range(num)]
    step = (image_h - crop_h) // (num - 1)
    return [(cx, i * step, crop_w, crop_h, False) for i in range(num)]


class SpatialViews:
    """Transform: S clips -> ``S * num`` views (clip-major), optionally resized first
    (``resize``: shorter side or ``(w, h)``, as :class:`~flowstore.data.transforms.ResizeClip`)."""

    def __init__(self, num: int, size, resize=None):
        self.num = int(num)
        self.size = _pair(size)
        self.resize = None if resize is None else ResizeClip(resize)
        if self.num < 1:
            raise InputError(f"number of spatial views must be >= 1, got {num}")

    def __call__(self, clip: Clip, rng=None) -> Clip:
        if self.resize is not None:
            clip = self.resize(clip)
        return crop_views(clip, spatial_crop_boxes(*clip.size, *self.size, self.num))

    def __repr__(self):
        return f"SpatialViews({self.num}, size={self.size}, resize={self.resize!r})"


__all__ = ["SpatialViews", "spatial_crop_boxes"]
