"""Clip transforms for two-stream training and testing.

A :class:`Clip` holds the decoded snippets of one sample, channel-first uint8::

    rgb         (S, 3, H, W)     RGB frames
    flow        (S, 2L, H, W)    quantized flow, channels x0, y0, x1, y1, ... (x = u, y = v)
    flow_range  (S, L, 4)        float32 (lo_x, hi_x, lo_y, hi_y) per flow, minmax stores only

Geometric transforms are callables ``t(clip, rng) -> clip`` and apply the *same* crop, resize and
flip to every snippet and to both modalities. They work on the stored uint8 values, so they are
cheap; :func:`finalize` turns a clip into float tensors at the end.

Horizontal flip mirrors the image and negates u: for quantized flow that is ``q_x -> 255 - q_x``
(exact for the ``bound`` scheme, see :mod:`flowstore.quantize`), and for ``minmax`` stores the
range becomes ``(-hi_x, -lo_x)``. Flow values are not rescaled when a crop is resized (as in TSN).

The flip is the same for every stacking (:data:`flowstore.data.sampling.STACKINGS`):

* ``stack`` and ``bidirectional``: mirroring a video (``x -> x' = W-1-x``) mirrors each flow
  field, forward or backward alike, and negates its u: ``d'(x', y) = (-u(x, y), v(x, y))``.
* ``trajectory``: in the mirrored video the trajectory from ``(W-1-x, y)`` is the mirror of the
  one from ``(x, y)``. By induction: ``p'_0 = (W-1-x_0, y_0)``; if ``p'_k = (W-1-x_k, y_k)``,
  bilinear sampling commutes with the mirror (the four neighbours and weights are mirrored, and
  clamping to ``[0, W-1]`` is symmetric), so ``d'(p'_k) = (-u(p_k), v(p_k))`` and ``p'_{k+1} =
  (W-1-x_k - u(p_k), y_k + v(p_k)) = (W-1-x_{k+1}, y_{k+1})``. Channel pair k at ``(W-1-x, y)``
  of the mirrored stack is therefore ``(-u_k, v_k)`` of the original stack at ``(x, y)``: the
  flipped trajectory stack is the trajectory stack mirrored with every u negated, the same
  :func:`hflip` (``tests/test_stackings.py`` checks it against a stack built from a mirrored
  video). The sampling points themselves mirror, ``x_k -> W-1-x_k``, ``y_k`` unchanged.

Test-time views: :class:`TenCrop` turns S snippets into ``S * 10`` views, snippet-major:
view ``s * 10 + c`` is crop ``c`` of snippet ``s`` with ``c`` in :data:`TEN_CROP_ORDER`
(4 corners, centre, then the same 5 regions mirrored).
"""
from __future__ import annotations
from ..errors import InputError

import dataclasses
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from ..quantize import LEVELS, QuantSpec, dequantize, mirror_levels, quantize

TSN_SCALES = (1.0, 0.875, 0.75, 0.66)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TEN_CROP_ORDER = ("top_left", "top_right", "bottom_left", "bottom_right", "center",
                  "top_left_flip", "top_right_flip", "bottom_left_flip", "bottom_right_flip", "center_flip")
FLOW_VALUES = ("pixels", "q128", "uint8")
MEAN_SUBTRACT = (None, "field", "stack")


@dataclasses.dataclass
class Clip:
    rgb: np.ndarray | None = None
    flow: np.ndarray | None = None
    flow_range: np.ndarray | None = None
    #: flipping u maps q -> flow_mirror - q (quantize.mirror_level of the store: 254 if it truncates)
    flow_mirror: int = LEVELS

    def arrays(self) -> list[np.ndarray]:
        return [a for a in (self.rgb, self.flow) if a is not None]

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the snippets."""
        h, w = self.arrays()[0].shape[-2:]
        return int(w), int(h)

    @property
    def num_snippets(self) -> int:
        return int(self.arrays()[0].shape[0])


def _pair(size, what: str = "size") -> tuple[int, int]:
    """``int`` -> square ``(s, s)``; ``(w, h)`` as is; both positive whole numbers (InputError)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        size = (size, size)
    try:
        w, h = size
    except (TypeError, ValueError):
        raise InputError(f"{what} must be N or (W, H), got {size!r}") from None
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (w, h)) or min(w, h) < 1:
        raise InputError(f"{what} must be positive whole numbers of pixels (>= 1), got {size!r}")
    return int(w), int(h)


# ---------------------------------------------------------------------------------------
# primitive operations on a clip (deterministic)
# ---------------------------------------------------------------------------------------
def crop(clip: Clip, x: int, y: int, w: int, h: int) -> Clip:
    W, H = clip.size
    if not (0 <= x and 0 <= y and x + w <= W and y + h <= H and w > 0 and h > 0):
        raise InputError(f"crop ({x}, {y}, {w}, {h}) does not fit a {W}x{H} clip")
    return dataclasses.replace(
        clip,
        rgb=None if clip.rgb is None else clip.rgb[..., y:y + h, x:x + w],
        flow=None if clip.flow is None else clip.flow[..., y:y + h, x:x + w],
    )


def hflip(clip: Clip) -> Clip:
    """Mirror left-right; flow: ``q_x -> 255 - q_x`` (u negated; ``clip.flow_mirror - q_x`` in
    general) and minmax ranges flipped."""
    flow, rng = clip.flow, clip.flow_range
    if flow is not None:
        flow = _mirror(flow, copy=True)
        flow[:, 0::2] = _mirror_levels(flow[:, 0::2], clip.flow_mirror)
    if rng is not None:
        rng = rng.copy()
        rng[..., 0], rng[..., 1] = -clip.flow_range[..., 1], -clip.flow_range[..., 0]
    return dataclasses.replace(clip, rgb=None if clip.rgb is None else _mirror(clip.rgb), flow=flow, flow_range=rng)


def _mirror(arr, copy: bool = False):
    """``arr`` mirrored left-right: a numpy view (a copy with ``copy``), or for a torch tensor
    (a clip on a device, :mod:`flowstore.data.device_clips`) ``torch.flip``, always a copy."""
    if torch.is_tensor(arr):
        return torch.flip(arr, dims=(-1,))
    return arr[..., ::-1].copy() if copy else arr[..., ::-1]


def _mirror_levels(q, mirror: int):
    """:func:`~flowstore.quantize.mirror_levels` of numpy levels or of a uint8 tensor."""
    if not torch.is_tensor(q):
        return mirror_levels(q, mirror)
    return LEVELS - q if mirror == LEVELS else (mirror - q.to(torch.int16)).clamp(0, LEVELS).to(torch.uint8)


def _resize_chw(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``(S, C, H, W)`` uint8 to ``size = (w, h)``."""
    w, h = size
    S, C = arr.shape[:2]
    if tuple(arr.shape[-2:]) == (h, w):
        return arr
    if torch.is_tensor(arr):  # a clip on a device: cv2's exact result, by way of the host
        return torch.from_numpy(_resize_chw(arr.cpu().numpy(), size)).to(arr.device)
    out = np.empty((S, C, h, w), dtype=arr.dtype)
    for s in range(S):
        for c0 in range(0, C, 4):  # cv2 resizes up to 4 channels per call in its fast paths
            block = np.ascontiguousarray(arr[s, c0:c0 + 4].transpose(1, 2, 0))
            res = cv2.resize(block, (w, h), interpolation=cv2.INTER_LINEAR)
            out[s, c0:c0 + 4] = res.reshape(h, w, -1).transpose(2, 0, 1)
    return out


def resize(clip: Clip, size: tuple[int, int]) -> Clip:
    return dataclasses.replace(
        clip,
        rgb=None if clip.rgb is None else _resize_chw(clip.rgb, size),
        flow=None if clip.flow is None else _resize_chw(clip.flow, size),
    )


# ---------------------------------------------------------------------------------------
# transforms: callables (clip, rng) -> clip
# ---------------------------------------------------------------------------------------
class Compose:
    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
        for t in self.transforms:
            clip = t(clip, rng)
        return clip

    def __repr__(self):
        return f"Compose({self.transforms!r})"


class ResizeClip:
    """A loader transform resizing every image of a clip: ``size`` int: shorter side to ``size``
    keeping the aspect ratio; ``(w, h)``: exactly. (Frames are resized at extraction by
    :class:`flowstore.decode.FrameResize`.)"""

    def __init__(self, size):
        _pair(size, "resize size")  # checked now, not per clip
        self.size = size

    def target(self, w: int, h: int) -> tuple[int, int]:
        if isinstance(self.size, (int, np.integer)):
            s = int(self.size)
            return (s, max(1, round(h * s / w))) if w <= h else (max(1, round(w * s / h)), s)
        return _pair(self.size)

    def __call__(self, clip: Clip, rng=None) -> Clip:
        return resize(clip, self.target(*clip.size))

    def __repr__(self):
        return f"ResizeClip({self.size!r})"


class CenterCrop:
    def __init__(self, size):
        self.size = _pair(size, "crop size")

    def __call__(self, clip: Clip, rng=None) -> Clip:
        W, H = clip.size
        w, h = self.size
        return crop(clip, (W - w) // 2, (H - h) // 2, w, h)

    def __repr__(self):
        return f"CenterCrop({self.size!r})"


class RandomHorizontalFlip:
    """Flip with probability ``p`` (``p=1`` always flips): the image is mirrored and u negated."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
        return hflip(clip) if rng.random() < self.p else clip

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


def fixed_offsets(image_w: int, image_h: int, crop_w: int, crop_h: int, more: bool = True) -> list[tuple[int, int]]:
    """TSN's fixed crop positions: 4 corners and the centre, plus 8 more with ``more``."""
    ws, hs = (image_w - crop_w) // 4, (image_h - crop_h) // 4
    out = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
    if more:
        out += [(0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                (ws, hs), (3 * ws, hs), (ws, 3 * hs), (3 * ws, 3 * hs)]
    return out


class MultiScaleCrop:
    """TSN's multi-scale crop: crop sides ``base * scale`` (base = shorter image side,
    scales 1, .875, .75, .66), width and height scale indices at most ``max_distort`` apart,
    at one of TSN's fixed positions (or anywhere with ``fix_crop=False``), resized to ``size``."""

    def __init__(self, size=224, scales: Sequence[float] = TSN_SCALES, max_distort: int = 1,
                 fix_crop: bool = True, more_fix_crop: bool = True):
        self.size = _pair(size, "crop size")
        self.scales = tuple(float(s) for s in scales)
        self.max_distort = int(max_distort)
        self.fix_crop = fix_crop
        self.more_fix_crop = more_fix_crop

    def sample(self, image_w: int, image_h: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of one crop."""
        base = min(image_w, image_h)
        sizes = [int(base * s) for s in self.scales]
        out_w, out_h = self.size
        crop_h = [out_h if abs(s - out_h) < 3 else s for s in sizes]
        crop_w = [out_w if abs(s - out_w) < 3 else s for s in sizes]
        pairs = [(w, h) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w)
                 if abs(i - j) <= self.max_distort]
        w, h = pairs[int(rng.integers(len(pairs)))]
        w, h = min(w, image_w), min(h, image_h)
        if self.fix_crop:
            offsets = fixed_offsets(image_w, image_h, w, h, self.more_fix_crop)
            x, y = offsets[int(rng.integers(len(offsets)))]
        else:
            x = int(rng.integers(image_w - w + 1))
            y = int(rng.integers(image_h - h + 1))
        return x, y, w, h

    def __call__(self, clip: Clip, rng: np.random.Generator) -> Clip:
        x, y, w, h = self.sample(*clip.size, rng)
        return resize(crop(clip, x, y, w, h), self.size)

    def __repr__(self):
        return f"MultiScaleCrop(size={self.size}, scales={self.scales}, max_distort={self.max_distort})"


def ten_crop_boxes(image_w: int, image_h: int, w: int, h: int) -> list[tuple[int, int, int, int, bool]]:
    """``(x, y, w, h, flipped)`` of the ten test crops in :data:`TEN_CROP_ORDER`."""
    if w > image_w or h > image_h:
        raise InputError(f"crop {w}x{h} is larger than the {image_w}x{image_h} image")
    r, b = image_w - w, image_h - h
    five = [(0, 0), (r, 0), (0, b), (r, b), (r // 2, b // 2)]
    return [(x, y, w, h, False) for x, y in five] + [(x, y, w, h, True) for x, y in five]


def crop_views(clip: Clip, boxes) -> Clip:
    """S snippets -> ``S * len(boxes)`` views, snippet-major (view ``s * C + c`` is box ``c`` of
    snippet ``s``); ``boxes`` are ``(x, y, w, h, flipped)``."""
    views = [hflip(crop(clip, x, y, w, h)) if flipped else crop(clip, x, y, w, h) for x, y, w, h, flipped in boxes]

    def interleave(get):
        parts = [get(v) for v in views]
        if parts[0] is None:
            return None
        if torch.is_tensor(parts[0]):
            return torch.stack(parts, dim=1).flatten(0, 1)
        stacked = np.stack([np.ascontiguousarray(p) for p in parts], axis=1)  # (S, C, ...)
        return stacked.reshape(-1, *stacked.shape[2:])

    return Clip(rgb=interleave(lambda v: v.rgb), flow=interleave(lambda v: v.flow),
                flow_range=interleave(lambda v: v.flow_range), flow_mirror=views[0].flow_mirror)


class TenCrop:
    """S snippets -> ``S * 10`` views (snippet-major), crops in :data:`TEN_CROP_ORDER`."""

    def __init__(self, size=224):
        self.size = _pair(size, "crop size")

    def __call__(self, clip: Clip, rng=None) -> Clip:
        return crop_views(clip, ten_crop_boxes(*clip.size, *self.size))

    def __repr__(self):
        return f"TenCrop({self.size!r})"


def train_transform(size=224, scales: Sequence[float] = TSN_SCALES, flip: bool = True) -> Compose:
    """TSN training augmentation: multi-scale crop to ``size``, then a random flip."""
    steps = [MultiScaleCrop(size, scales)]
    if flip:
        steps.append(RandomHorizontalFlip(0.5))
    return Compose(steps)


def eval_transform(size=224, resize_to=None, ten_crop: bool = True) -> Compose:
    """Test views: optional resize (e.g. 256 shorter side), then 10 crops (or one centre crop)."""
    steps = [] if resize_to is None else [ResizeClip(resize_to)]
    steps.append(TenCrop(size) if ten_crop else CenterCrop(size))
    return Compose(steps)


# ---------------------------------------------------------------------------------------
# values: uint8 clip -> tensors
# ---------------------------------------------------------------------------------------
def flow_values(flow: np.ndarray, quant: QuantSpec, mode: str = "pixels",
                flow_range: np.ndarray | None = None) -> np.ndarray:
    """``(S, 2L, H, W)`` uint8 -> ``pixels`` (dequantized float32), ``q128`` ((q - 128) / 128,
    as TSN/mmaction2 normalise flow images) or ``uint8`` (unchanged)."""
    if mode == "uint8":
        return flow
    if mode == "q128":
        return (flow.astype(np.float32) - 128.0) * np.float32(1 / 128)
    if mode != "pixels":
        raise InputError(f"unknown flow values {mode!r}; choose from {list(FLOW_VALUES)}")
    if quant.scheme == "bound":
        return flow.astype(np.float32) * np.float32(2 * quant.bound / LEVELS) - np.float32(quant.bound)
    lo, scale = minmax_channels(flow_range, flow.shape[:2])
    return lo[..., None, None] + flow.astype(np.float32) * scale[..., None, None]


def minmax_channels(flow_range: np.ndarray | None, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel float32 ``(lo, (hi - lo) / 255)`` of ``(S, 2L)`` minmax flow from its
    ``(S, L, 4)`` ranges: the dequantization is ``lo + q * scale``."""
    if flow_range is None:
        raise InputError("minmax flow needs its per-flow ranges to dequantize")
    lo = np.empty(shape, np.float32)
    hi = np.empty(shape, np.float32)
    lo[:, 0::2], hi[:, 0::2] = flow_range[..., 0], flow_range[..., 1]
    lo[:, 1::2], hi[:, 1::2] = flow_range[..., 2], flow_range[..., 3]
    return lo, (hi - lo) / np.float32(LEVELS)


def subtract_mean_flow(flow: np.ndarray, mode: str | None, groups: int = 1) -> np.ndarray:
    """Camera-motion compensation on float ``(S, 2L, H, W)`` flow.

    ``field``: each displacement field minus its own mean vector (Simonyan & Zisserman);
    ``stack``: every field of a stack minus the stack's mean (u, v) vector, taken over each of
    ``groups`` equal runs of channels (2 for a bidirectional stack: its backward half and its
    forward half, whose camera motions are opposite).
    """
    if mode is None:
        return flow
    if flow.dtype == np.uint8:
        raise InputError("mean-flow subtraction needs float flow values (pixels or q128), not uint8")
    if mode == "field":
        return flow - flow.mean(axis=(2, 3), keepdims=True)
    if mode == "stack":
        out = flow.copy()
        step = flow.shape[1] // groups
        for g in range(groups):
            part = out[:, g * step:(g + 1) * step]
            mu = part.mean(axis=(2, 3))  # (S, 2L / groups)
            part[:, 0::2] -= mu[:, 0::2].mean(axis=1)[:, None, None, None]
            part[:, 1::2] -= mu[:, 1::2].mean(axis=1)[:, None, None, None]
        return out
    raise InputError(f"unknown mean subtraction {mode!r}; choose from {list(MEAN_SUBTRACT)}")


def bilinear_sample(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``field`` ``(H, W, C)`` at real points ``(x, y)`` (pixel centres at integers), bilinear;
    points outside the image are clamped to its border (OpenCV's BORDER_REPLICATE)."""
    h, w = field.shape[:2]
    x = np.clip(x, 0, w - 1)
    y = np.clip(y, 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2) if w > 1 else np.zeros(x.shape, np.int64)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2) if h > 1 else np.zeros(y.shape, np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    top = field[y0, x0] * (1 - fx) + field[y0, x1] * fx
    bottom = field[y1, x0] * (1 - fx) + field[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def trajectory_stack(flows: np.ndarray) -> np.ndarray:
    """Simonyan & Zisserman's trajectory stacking (eq. 2) of float flows ``(L, H, W, 2)``, the
    forward flows ``τ .. τ+L-1`` in pixels: ``out[k]`` at pixel ``(u, v)`` is ``flows[k]`` at
    ``p_k``, where ``p_0 = (u, v)`` and ``p_{k+1} = p_k + flows[k](p_k)``; bilinear sampling
    with the border clamped (:func:`bilinear_sample`), in float64 coordinates. ``out[0]`` is
    ``flows[0]``; a constant translation gives back the flows unchanged."""
    flows = np.asarray(flows, np.float64)
    L, h, w = flows.shape[:3]
    y, x = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    out = np.empty(flows.shape, np.float32)
    for k in range(L):
        sample = flows[k] if k == 0 else bilinear_sample(flows[k], x, y)
        out[k] = sample
        x, y = x + sample[..., 0], y + sample[..., 1]
    return out


def trajectory_snippets(flow: np.ndarray, quant: QuantSpec, flow_range: np.ndarray | None = None,
                        out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Stored uint8 flow snippets ``(S, 2L, H, W)`` (x/y interleaved) -> their trajectory
    stacks, requantized with the store's scheme ``quant`` so that every later step (crops,
    flip, :func:`flow_values`) treats them as stored flow: the sampling is done on the
    dequantized flow. Returns ``(uint8 (S, 2L, H, W), minmax ranges (S, L, 4) or None)``."""
    S, C, h, w = flow.shape
    L = C // 2
    out = np.empty_like(flow) if out is None else out
    ranges = None if quant.scheme != "minmax" else np.empty((S, L, 4), np.float32)
    for s in range(S):
        fields = np.stack([dequantize(flow[s, 2 * l:2 * l + 2].transpose(1, 2, 0), quant,
                                      None if flow_range is None else flow_range[s, l]) for l in range(L)])
        for l, field in enumerate(trajectory_stack(fields)):
            q, value_range = quantize(field, quant)
            out[s, 2 * l:2 * l + 2] = q.transpose(2, 0, 1)
            if ranges is not None:
                ranges[s, l] = value_range
    return out, ranges


def normalize_rgb(rgb: np.ndarray, mean: Sequence[float] | None = IMAGENET_MEAN,
                  std: Sequence[float] | None = IMAGENET_STD) -> np.ndarray:
    """uint8 ``(S, 3, H, W)`` -> float32 in [0, 1], then ``(x - mean) / std`` per channel."""
    out = rgb.astype(np.float32) * np.float32(1 / 255)
    if mean is not None:
        out -= np.asarray(mean, np.float32)[None, :, None, None]
    if std is not None:
        out /= np.asarray(std, np.float32)[None, :, None, None]
    return out


def finalize(clip: Clip, quant: QuantSpec, *, flow_mode: str = "pixels", mean_subtract: str | None = None,
             rgb_mode: str = "float", rgb_mean=IMAGENET_MEAN, rgb_std=IMAGENET_STD, mean_groups: int = 1) -> dict:
    """Clip -> ``{"rgb": tensor, "flow": tensor}`` (only the modalities present).

    ``rgb_mode`` ``float`` (normalised with ``rgb_mean``/``rgb_std``; None skips) or ``uint8``.
    ``mean_groups``: see :func:`subtract_mean_flow` (the stacking's ``mean_groups``).
    """
    out = {}
    if clip.rgb is not None:
        if rgb_mode == "uint8":
            out["rgb"] = torch.from_numpy(np.ascontiguousarray(clip.rgb))
        elif rgb_mode == "float":
            out["rgb"] = torch.from_numpy(normalize_rgb(clip.rgb, rgb_mean, rgb_std))
        else:
            raise InputError(f"unknown rgb values {rgb_mode!r}; choose 'float' or 'uint8'")
    if clip.flow is not None:
        if mean_subtract not in MEAN_SUBTRACT:
            raise InputError(f"unknown mean subtraction {mean_subtract!r}; choose from {list(MEAN_SUBTRACT)}")
        values = subtract_mean_flow(flow_values(clip.flow, quant, flow_mode, clip.flow_range), mean_subtract,
                                    mean_groups)
        out["flow"] = torch.from_numpy(np.ascontiguousarray(values))
    return out


__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "TEN_CROP_ORDER", "TSN_SCALES", "FLOW_VALUES", "MEAN_SUBTRACT",
    "CenterCrop", "Clip", "Compose", "MultiScaleCrop", "RandomHorizontalFlip", "ResizeClip", "TenCrop",
    "bilinear_sample", "trajectory_snippets", "trajectory_stack",
    "crop", "crop_views", "finalize", "fixed_offsets", "flow_values", "hflip", "normalize_rgb", "resize",
    "eval_transform", "subtract_mean_flow", "ten_crop_boxes", "train_transform",
]
