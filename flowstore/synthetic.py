"""Demo dataset with known motion, written as real video files.

Six action classes that differ **only in motion**: every clip shows a randomly textured object on
a randomly textured background, and the object translates, rotates or zooms. Appearance
(textures, object shape, size, position, orientation) is drawn from the same distribution for
every class, so a single-frame RGB classifier is at chance while a flow classifier is not::

    from flowstore.synthetic import make_demo_dataset
    ds = make_demo_dataset("demo", clips_per_class=40, num_frames=16)

Layout written under ``out_dir``::

    videos/<class>/<class>_<k:03d>.mp4   real videos (cv2.VideoWriter, fourcc "mp4v"; .avi/MJPG fallback)
    labels.csv                           video_id,label,class_name,split
    classInd.txt                         UCF101 style "1 translate_right" lines (1-based)
    motion.json                          true motion of every clip (see below)

``video_id`` is the video path relative to ``videos/`` without extension, e.g.
``rotate_cw/rotate_cw_003``. ``label`` in labels.csv is the **0-based** index into
:data:`MOTION_CLASSES` (what a torch head uses); classInd.txt numbers the same classes from 1 as
UCF101 does, so ``classInd index == label + 1``. The split is deterministic and stable: clip ``k``
of every class is ``test`` iff ``floor((k+1)*f + 1/2) > floor(k*f + 1/2)`` for ``f = test_fraction``
(k = 1, 5, 9, ... for the default 0.25), so 40 clips per class give 30 train / 10 test, and
asking for more clips never moves an existing clip to the other split.

Why the appearance cannot give the class away
---------------------------------------------
* By default appearance is *paired*: clip ``k`` of every class uses the very same textures,
  object shape, base size, base position and initial angle; only the motion differs (and clip k
  is in the same split in every class).
* Each class has a mirror class (right/left, cw/ccw, in/out) and trajectories are centred on
  the middle frame, so position and scale are symmetric around the clip's base pose.
* Classes that do not move along a dimension still get a *static* offset along it, drawn as
  ``rate' * (t' - mid)`` with ``rate'`` from that dimension's range and ``t'`` a random frame
  index: the single-frame distribution of object x-position and scale is therefore identical
  for all six classes (and the angle is uniform in every class).

Geometry and ``motion.json``
----------------------------
Image coordinates are pixels, x right, y down, pixel centres at integers (OpenCV's convention).
Angles are in degrees, **positive = counter-clockwise on screen** (``cv2.getRotationMatrix2D``'s
convention), so ``rotate_cw`` has negative angle rates. Flow is frame t -> t+1, (u, v) in pixels,
u right, v down, as in :mod:`flowstore.flow`.

``motion.json`` = ``{"format": ..., "config": {...}, "classes": [...], "clips": {video_id: entry}}``
and each entry holds

* ``class_name``, ``label``, ``split``, ``size`` [W, H], ``num_frames``, ``appearance_seed``;
* ``motion``: ``{"kind": "translate"|"rotate"|"zoom", "rate": r, "units": ...}`` where ``r`` is
  px/frame along x, deg/frame, or the scale factor per frame minus 1 (signed);
* ``object``: the object outline ``polygon`` in object units (pixels at scale 1, relative to the
  object centre), ``canvas`` side of the square sprite it is drawn on;
* ``frames[t]``: object pose in frame t: ``cx, cy`` (centre, camera shake excluded), ``angle``,
  ``scale``, camera shake ``shake_x, shake_y`` (a global translation of the whole frame), and
  ``matrix``: the 2x3 map sprite pixel -> image pixel (shake included) used with cv2.warpAffine;
* ``steps[t]`` (t = 0 .. T-2): the true motion from frame t to t+1. Object pixels move by the
  affine map ``x' = centre + (dx, dy) + scale * R(angle) @ (x - centre)`` (``matrix`` is the
  same map as 2x3), with ``R(a) = [[cos a, sin a], [-sin a, cos a]]``; ``centre`` is the object
  centre in frame t (shake included), ``dx, dy`` the centre's displacement (shake included),
  ``angle``/``scale`` the rotation/scale between the two frames. Background pixels move by
  ``background`` = shake(t+1) - shake(t).

:func:`true_flow` turns a step into a dense (H, W, 2) field over the **whole frame** (object
pixels by the affine map, the rest by the background shift); :func:`object_mask` gives the object
pixels of frame t. Pixels the object uncovers/covers between t and t+1 get the background shift,
which is right for the uncovered ones and undefined (occluded) for the covered ones.
:func:`render_clip` re-renders the exact (pre-codec) frames of an entry.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from .errors import AlreadyExistsError, InputError, OutOfRangeError

#: The six classes in label order (label = index here; classInd.txt = index + 1).
MOTION_CLASSES: tuple[str, ...] = (
    "translate_right",
    "translate_left",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
)

#: class name -> (motion kind, sign of the rate). Angles are counter-clockwise-positive on screen.
CLASS_MOTION: dict[str, tuple[str, int]] = {
    "translate_right": ("translate", +1),
    "translate_left": ("translate", -1),
    "rotate_cw": ("rotate", -1),
    "rotate_ccw": ("rotate", +1),
    "zoom_in": ("zoom", +1),
    "zoom_out": ("zoom", -1),
}

#: Default per-clip speed ranges (magnitudes): px/frame, deg/frame, relative scale change/frame.
MOTION_RANGES: dict[str, tuple[float, float]] = {
    "translate": (1.0, 3.0),
    "rotate": (3.0, 6.0),
    "zoom": (0.03, 0.05),
}

MOTION_UNITS = {"translate": "px/frame", "rotate": "deg/frame", "zoom": "scale/frame - 1"}

#: object base radius as a fraction of min(W, H)
OBJECT_RADIUS_RANGE = (0.16, 0.20)
#: amplitude of each of the radial harmonics k = 2, 3, 4 of the object outline
OUTLINE_HARMONIC_MAX = 0.08
OUTLINE_VERTICES = 48
#: file extension per fourcc
CODEC_EXTENSIONS = {"mp4v": ".mp4", "avc1": ".mp4", "h264": ".mp4", "H264": ".mp4"}
FALLBACK_CODEC = "MJPG"
MOTION_FORMAT = "flowstore-synthetic-motion/1"


@dataclass(frozen=True)
class DemoDataset:
    """What :func:`make_demo_dataset` wrote."""

    root: Path
    videos_dir: Path
    classes: tuple[str, ...]
    labels_path: Path
    class_index_path: Path
    motion_path: Path
    num_clips: int
    num_frames: int
    size: tuple[int, int]  # (W, H)
    fps: float
    codec: str
    video_ext: str
    video_ids: tuple[str, ...] = field(default=(), repr=False)

    def video_path(self, video_id: str) -> Path:
        return self.videos_dir / f"{video_id}{self.video_ext}"

    def read_labels(self) -> list[dict]:
        """Rows of labels.csv as dicts (``label`` as int)."""
        with open(self.labels_path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            row["label"] = int(row["label"])
        return rows

    def load_motion(self) -> dict:
        return load_motion(self.motion_path)


def load_motion(path) -> dict:
    """Read a motion.json written by :func:`make_demo_dataset`."""
    with open(path) as fh:
        return json.load(fh)


# --------------------------------------------------------------------------------------------
# appearance


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Random RGB float32 texture in [0, 255]: multi-octave smooth noise plus soft colour blobs.

    Feature sizes are fixed in pixels (not relative to the canvas), so the object sprite and the
    background have the same kind of detail, fine enough for dense flow to lock onto.
    """
    img = np.zeros((height, width, 3), np.float32)
    for cell, amp in ((16, 1.0), (8, 0.8), (4, 0.6), (2, 0.35)):
        grid = rng.standard_normal((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
        img += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    img -= img.mean(axis=(0, 1))
    img /= img.std(axis=(0, 1)) + 1e-6
    mix = rng.normal(0.0, 0.35, (3, 3)).astype(np.float32) + np.eye(3, dtype=np.float32)
    img = img @ mix.T
    base = rng.uniform(70.0, 185.0, 3).astype(np.float32)
    contrast = rng.uniform(28.0, 45.0)
    img = base + contrast * img / (img.std() + 1e-6)
    n_blobs = 2 + int(rng.poisson(height * width / 500.0))
    for _ in range(n_blobs):
        colour = tuple(float(c) for c in rng.uniform(20.0, 235.0, 3))
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        axes = (int(rng.integers(2, 9)), int(rng.integers(2, 9)))
        cv2.ellipse(img, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    img = cv2.GaussianBlur(img, (0, 0), 0.7)
    return np.clip(img, 0.0, 255.0)


def _outline(rng: np.random.Generator, radius: float) -> np.ndarray:
    """Smooth random star-convex outline, (N, 2) float64 in object units around (0, 0)."""
    phi = np.linspace(0.0, 2.0 * np.pi, OUTLINE_VERTICES, endpoint=False)
    r = np.ones_like(phi)
    for k in (2, 3, 4):
        r += rng.uniform(0.0, OUTLINE_HARMONIC_MAX) * np.cos(k * phi + rng.uniform(0, 2 * np.pi))
    return np.stack([radius * r * np.cos(phi), radius * r * np.sin(phi)], axis=1)


def _sprite_alpha(polygon: np.ndarray, canvas: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased float32 alpha (canvas, canvas) of the outline, centred on the canvas."""
    p0 = (canvas - 1) / 2.0
    big = np.zeros((canvas * supersample, canvas * supersample), np.uint8)
    # pixel centre i of the small canvas covers big pixels [i*ss, (i+1)*ss) -> centre (i+0.5)*ss-0.5
    pts = (np.asarray(polygon) + p0 + 0.5) * supersample - 0.5
    cv2.fillPoly(big, [np.round(pts * 16).astype(np.int32)], 255, cv2.LINE_8, shift=4)
    small = cv2.resize(big, (canvas, canvas), interpolation=cv2.INTER_AREA)
    return small.astype(np.float32) / 255.0


def _appearance(entry: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(background texture, sprite texture, sprite alpha, background margin) of an entry."""
    rng = np.random.default_rng(entry["appearance_seed"])
    width, height = entry["size"]
    margin = int(entry["background_margin"])
    canvas = int(entry["object"]["canvas"])
    background = _texture(rng, height + 2 * margin, width + 2 * margin)
    sprite = _texture(rng, canvas, canvas)
    alpha = _sprite_alpha(np.asarray(entry["object"]["polygon"]), canvas)
    return background, sprite, alpha, margin


# --------------------------------------------------------------------------------------------
# geometry


def _pose_matrix(cx: float, cy: float, angle: float, scale: float, canvas: int) -> np.ndarray:
    """2x3 map sprite pixel -> image pixel: x = c + scale * R(angle) @ (p - p0)."""
    p0 = (canvas - 1) / 2.0
    a = math.radians(angle)
    alpha, beta = scale * math.cos(a), scale * math.sin(a)
    return np.array(
        [[alpha, beta, cx - alpha * p0 - beta * p0], [-beta, alpha, cy + beta * p0 - alpha * p0]]
    )


def _to3(m) -> np.ndarray:
    return np.vstack([np.asarray(m, np.float64), [0.0, 0.0, 1.0]])


def _trajectory_offsets(kind: str, rate: float, nuisance: dict, num_frames: int) -> dict:
    """Per-frame x offset, log-scale offset and angle offset relative to the clip's base pose."""
    t = np.arange(num_frames) - (num_frames - 1) / 2.0
    dx = np.full(num_frames, nuisance["x"])
    log_s = np.full(num_frames, nuisance["log_scale"])
    dang = np.zeros(num_frames)
    if kind == "translate":
        dx = rate * t
    elif kind == "zoom":
        log_s = math.log1p(rate) * t
    elif kind == "rotate":
        dang = rate * t
    else:  # pragma: no cover - guarded by CLASS_MOTION
        raise InputError(kind)
    return {"x": dx, "log_scale": log_s, "angle": dang}


def _effective_ranges(size, num_frames, camera_shake, ranges) -> tuple[dict, dict]:
    """Cap speed ranges so that every object of every class stays inside the frame.

    Returns (ranges, layout) where layout holds the worst-case object radius and the jitter of
    the base position that is still safe; both are the same for every class.
    """
    width, height = size
    half = (num_frames - 1) / 2.0
    margin = 2.0 + 2.0 * camera_shake
    shortest = min(width, height)
    r_outline = OBJECT_RADIUS_RANGE[1] * shortest * (1.0 + 3 * OUTLINE_HARMONIC_MAX)
    ranges = {k: tuple(float(x) for x in v) for k, v in ranges.items()}

    def scaled(kind, new_hi):
        lo, hi = ranges[kind]
        if new_hi < hi:
            factor = max(new_hi, 1e-9) / hi
            warnings.warn(
                f"synthetic demo: {kind} speeds capped from {lo:g}-{hi:g} to "
                f"{lo * factor:.3g}-{hi * factor:.3g} {MOTION_UNITS[kind]} so the object stays "
                f"in a {width}x{height} frame over {num_frames} frames",
                stacklevel=3,
            )
            ranges[kind] = (lo * factor, hi * factor)

    if half > 0:
        # zoom: the largest scale must keep the object within the shorter half-side
        max_scale = (shortest / 2.0 - margin) / r_outline
        if max_scale <= 1.0:
            raise InputError(f"frame size {size} is too small for the demo objects")
        scaled("zoom", math.expm1(math.log(max_scale) / half))
        r_worst = r_outline * (1.0 + ranges["zoom"][1]) ** half
        # translation along x: the travel must fit beside the largest object
        budget = width / 2.0 - margin - r_worst
        if budget <= 0:
            raise InputError(f"frame size {size} is too small for the demo objects")
        scaled("translate", budget / half)
        travel = ranges["translate"][1] * half
    else:
        r_worst, travel = r_outline, 0.0
    layout = {
        "margin": margin,
        "max_object_radius": r_worst,
        "jitter_x": max(0.0, width / 2.0 - margin - r_worst - travel),
        "jitter_y": max(0.0, height / 2.0 - margin - r_worst),
    }
    return ranges, layout


def _split_of(k: int, test_fraction: float) -> str:
    # floor(x + 0.5), not round(): Python rounds halves to even, which would make the pattern irregular
    def r(x):
        return math.floor(x + 0.5)

    return "test" if r((k + 1) * test_fraction) > r(k * test_fraction) else "train"


def _make_entry(
    *, class_name: str, label: int, k: int, seed: int, size, num_frames: int, fps: float,
    camera_shake: float, ranges: dict, layout: dict, paired: bool, split: str,
) -> dict:
    width, height = size
    kind, sign = CLASS_MOTION[class_name]
    appearance_seed = [seed, 0, k] if paired else [seed, 0, k, label + 1]
    motion_seed = [seed, 1, k, label]
    # base pose, drawn from its own stream so it is shared across classes when paired
    arng = np.random.default_rng(appearance_seed + [7])
    shortest = min(width, height)
    radius = float(arng.uniform(*OBJECT_RADIUS_RANGE) * shortest)
    polygon = _outline(arng, radius)
    canvas = 2 * int(math.ceil(np.hypot(polygon[:, 0], polygon[:, 1]).max())) + 6
    base_x = width / 2.0 + float(arng.uniform(-1, 1)) * layout["jitter_x"]
    base_y = height / 2.0 + float(arng.uniform(-1, 1)) * layout["jitter_y"]
    base_angle = float(arng.uniform(0.0, 360.0))
    # motion: the class's rate, then static "nuisance" offsets for the other dimensions drawn
    # from the same per-frame marginal as a moving clip's, then camera shake (always drawn)
    mrng = np.random.default_rng(motion_seed)
    rate = sign * float(mrng.uniform(*ranges[kind]))
    half = (num_frames - 1) / 2.0
    nuisance = {}
    for dim, rkind in (("x", "translate"), ("log_scale", "zoom")):
        mag = float(mrng.uniform(*ranges[rkind]))
        tprime = float(mrng.integers(0, num_frames)) - half
        nuisance[dim] = tprime * (mag if dim == "x" else math.log1p(mag))
    shake = mrng.uniform(-1.0, 1.0, (num_frames, 2)) * camera_shake
    offsets = _trajectory_offsets(kind, rate, nuisance, num_frames)

    frames = []
    for t in range(num_frames):
        cx = base_x + float(offsets["x"][t])
        cy = base_y
        angle = (base_angle + float(offsets["angle"][t])) % 360.0
        scale = math.exp(float(offsets["log_scale"][t]))
        sx, sy = float(shake[t, 0]), float(shake[t, 1])
        frames.append({
            "t": t, "cx": cx, "cy": cy, "angle": angle, "scale": scale,
            "shake_x": sx, "shake_y": sy,
            "matrix": _pose_matrix(cx + sx, cy + sy, angle, scale, canvas).tolist(),
        })
    steps = []
    for t in range(num_frames - 1):
        a, b = frames[t], frames[t + 1]
        step = _to3(b["matrix"]) @ np.linalg.inv(_to3(a["matrix"]))
        dangle = (b["angle"] - a["angle"] + 180.0) % 360.0 - 180.0
        steps.append({
            "t": t,
            "centre": [a["cx"] + a["shake_x"], a["cy"] + a["shake_y"]],
            "dx": (b["cx"] + b["shake_x"]) - (a["cx"] + a["shake_x"]),
            "dy": (b["cy"] + b["shake_y"]) - (a["cy"] + a["shake_y"]),
            "angle": dangle,
            "scale": b["scale"] / a["scale"],
            "matrix": step[:2].tolist(),
            "background": [b["shake_x"] - a["shake_x"], b["shake_y"] - a["shake_y"]],
        })
    return {
        "video_id": f"{class_name}/{class_name}_{k:03d}",
        "class_name": class_name,
        "label": label,
        "split": split,
        "size": [width, height],
        "num_frames": num_frames,
        "fps": fps,
        "appearance_seed": appearance_seed,
        "motion_seed": motion_seed,
        "background_margin": int(math.ceil(2.0 * camera_shake)) + 2,
        "motion": {"kind": kind, "rate": rate, "units": MOTION_UNITS[kind]},
        "object": {"radius": radius, "canvas": canvas, "polygon": polygon.tolist()},
        "frames": frames,
        "steps": steps,
    }


# --------------------------------------------------------------------------------------------
# rendering and true flow


def render_clip(entry: dict) -> list[np.ndarray]:
    """The exact RGB uint8 (H, W, 3) frames of a motion.json entry, before video encoding."""
    width, height = entry["size"]
    background, sprite, alpha, margin = _appearance(entry)
    out = []
    for fr in entry["frames"]:
        shift = np.array([[1.0, 0.0, fr["shake_x"] - margin], [0.0, 1.0, fr["shake_y"] - margin]])
        bg = cv2.warpAffine(background, shift, (width, height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
        m = np.asarray(fr["matrix"])
        obj = cv2.warpAffine(sprite, m, (width, height), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(alpha, m, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
        frame = a * obj + (1.0 - a) * bg
        out.append(np.clip(np.rint(frame), 0, 255).astype(np.uint8))
    return out


def _size_of(entry: dict, size) -> tuple[int, int]:
    width, height = entry["size"] if size is None else size
    if tuple(entry["size"]) != (int(width), int(height)):
        raise InputError(f"size {tuple(size)} does not match the clip's size {tuple(entry['size'])}")
    return int(width), int(height)


def object_alpha(entry: dict, frame_index: int, size=None) -> np.ndarray:
    """Float32 (H, W) coverage in [0, 1] of the object in frame ``frame_index`` (as rendered)."""
    width, height = _size_of(entry, size)
    obj = entry["object"]
    alpha = _sprite_alpha(np.asarray(obj["polygon"]), int(obj["canvas"]))
    m = np.asarray(entry["frames"][frame_index]["matrix"])
    return cv2.warpAffine(alpha, m, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def object_mask(entry: dict, frame_index: int, size=None, *, threshold: float = 0.5) -> np.ndarray:
    """Bool (H, W): pixels of frame ``frame_index`` that belong to the object."""
    return object_alpha(entry, frame_index, size) >= threshold


def step_matrix(entry: dict, frame_index: int) -> np.ndarray:
    """2x3 affine map of object pixels from frame ``frame_index`` to ``frame_index + 1``."""
    return np.asarray(entry["steps"][frame_index]["matrix"], np.float64)


def true_flow(entry: dict, frame_index: int, size=None) -> np.ndarray:
    """True flow (H, W, 2) float32 from frame ``frame_index`` to ``frame_index + 1``.

    Whole frame: object pixels (``object_mask(entry, frame_index)``) follow the step's affine
    map, all other pixels the background (camera-shake) shift. ``size`` = (W, H) is optional and
    checked against the entry.
    """
    width, height = _size_of(entry, size)
    if not 0 <= frame_index < len(entry["steps"]):
        raise OutOfRangeError(f"frame_index {frame_index} outside 0..{len(entry['steps']) - 1}")
    step = entry["steps"][frame_index]
    m = np.asarray(step["matrix"], np.float64)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u = m[0, 0] * xs + m[0, 1] * ys + m[0, 2] - xs
    v = m[1, 0] * xs + m[1, 1] * ys + m[1, 2] - ys
    flow = np.empty((height, width, 2), np.float32)
    mask = object_mask(entry, frame_index, (width, height))
    bx, by = step["background"]
    flow[..., 0] = np.where(mask, u, bx)
    flow[..., 1] = np.where(mask, v, by)
    return flow


# --------------------------------------------------------------------------------------------
# writing


def _open_writer(stem: Path, codec: str, fps: float, size) -> tuple[cv2.VideoWriter, str]:
    ext = CODEC_EXTENSIONS.get(codec, ".avi")
    writer = cv2.VideoWriter(str(stem) + ext, cv2.VideoWriter_fourcc(*codec), float(fps), tuple(size))
    return writer, ext


def _check_video(path: Path, num_frames: int, size) -> None:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise RuntimeError(f"{path}: written but cv2.VideoCapture cannot open it")
        n = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if frame.shape[:2] != (size[1], size[0]):
                raise RuntimeError(f"{path}: decoded frame {n} is {frame.shape[1]}x{frame.shape[0]}, "
                                   f"expected {size[0]}x{size[1]}")
            n += 1
    finally:
        cap.release()
    if n != num_frames:
        raise RuntimeError(f"{path}: decoded {n} frames, expected {num_frames}")


def make_demo_dataset(
    out_dir,
    *,
    clips_per_class: int = 40,
    num_frames: int = 16,
    size: tuple[int, int] = (128, 96),
    fps: float = 25.0,
    seed: int = 0,
    camera_shake: float = 0.0,
    codec: str = "mp4v",
    test_fraction: float = 0.25,
    paired_appearance: bool = True,
    motion_ranges: dict | None = None,
    verify: bool = True,
    overwrite: bool = False,
) -> DemoDataset:
    """Write the six-class motion demo under ``out_dir`` (layout in the module docstring).

    ``size`` is (W, H), even numbers. ``camera_shake`` is the amplitude in pixels of a random
    global translation of each frame (uniform in [-a, a] per axis, independently per frame, so
    the frame-to-frame jitter is up to 2a). ``motion_ranges`` overrides entries of
    :data:`MOTION_RANGES`; ranges are capped (with a warning, recorded in motion.json) when
    ``num_frames``/``size`` would let the object leave the frame. ``codec`` is a fourcc;
    if OpenCV cannot open a writer for it, MJPG/.avi is used instead (with a warning).
    ``verify`` re-decodes every video with cv2.VideoCapture and checks frame count and size.
    Deterministic: the same arguments give byte-identical files.
    """
    width, height = (int(x) for x in size)
    if width <= 0 or height <= 0 or width % 2 or height % 2:
        raise InputError(f"size must be (W, H) with positive even numbers, got {size}")
    if clips_per_class < 1:
        raise InputError("clips_per_class must be >= 1")
    if num_frames < 2:
        raise InputError("num_frames must be >= 2 (flow needs pairs)")
    if camera_shake < 0:
        raise InputError("camera_shake must be >= 0")
    if not 0.0 <= test_fraction < 1.0:
        raise InputError("test_fraction must be in [0, 1)")
    ranges = dict(MOTION_RANGES)
    for kind, rng_ in (motion_ranges or {}).items():
        if kind not in ranges:
            raise InputError(f"unknown motion kind {kind!r}; known: {sorted(ranges)}")
        lo, hi = (float(x) for x in rng_)
        if not 0 < lo <= hi:
            raise InputError(f"motion range for {kind} must satisfy 0 < lo <= hi, got {rng_}")
        ranges[kind] = (lo, hi)
    ranges, layout = _effective_ranges((width, height), num_frames, camera_shake, ranges)

    root = Path(out_dir)
    videos_dir = root / "videos"
    labels_path = root / "labels.csv"
    class_index_path = root / "classInd.txt"
    motion_path = root / "motion.json"
    existing = [p for p in (labels_path, class_index_path, motion_path) if p.exists()]
    if videos_dir.exists() and any(videos_dir.iterdir()):
        existing.append(videos_dir)
    if existing:
        if not overwrite:
            raise AlreadyExistsError(f"{root} already holds a demo dataset ({existing[0].name}); "
                                  "pass overwrite=True to replace it")
        shutil.rmtree(videos_dir, ignore_errors=True)
        for p in (labels_path, class_index_path, motion_path):
            p.unlink(missing_ok=True)
    videos_dir.mkdir(parents=True, exist_ok=True)

    entries = []
    for label, class_name in enumerate(MOTION_CLASSES):
        for k in range(clips_per_class):
            entries.append(_make_entry(
                class_name=class_name, label=label, k=k, seed=int(seed), size=(width, height),
                num_frames=num_frames, fps=float(fps), camera_shake=float(camera_shake),
                ranges=ranges, layout=layout, paired=paired_appearance,
                split=_split_of(k, test_fraction),
            ))

    used_codec, ext = codec, None
    for entry in entries:
        stem = videos_dir / entry["video_id"]
        stem.parent.mkdir(parents=True, exist_ok=True)
        writer, ext_ = _open_writer(stem, used_codec, fps, (width, height))
        if not writer.isOpened() and used_codec != FALLBACK_CODEC and ext is None:
            warnings.warn(f"cv2.VideoWriter cannot encode fourcc {codec!r} here; "
                          f"falling back to {FALLBACK_CODEC}/.avi", stacklevel=2)
            used_codec = FALLBACK_CODEC
            writer, ext_ = _open_writer(stem, used_codec, fps, (width, height))
        if not writer.isOpened():
            raise RuntimeError(f"cv2.VideoWriter cannot open {stem}{ext_} with fourcc {used_codec!r}")
        ext = ext_
        try:
            for frame in render_clip(entry):
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        if verify:
            _check_video(Path(str(stem) + ext), num_frames, (width, height))

    with open(labels_path, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["video_id", "label", "class_name", "split"])
        for e in entries:
            w.writerow([e["video_id"], e["label"], e["class_name"], e["split"]])
    with open(class_index_path, "w") as fh:
        for label, name in enumerate(MOTION_CLASSES):
            fh.write(f"{label + 1} {name}\n")
    motion = {
        "format": MOTION_FORMAT,
        "config": {
            "seed": int(seed), "size": [width, height], "num_frames": num_frames, "fps": float(fps),
            "clips_per_class": clips_per_class, "camera_shake": float(camera_shake),
            "codec": used_codec, "video_ext": ext, "test_fraction": test_fraction,
            "paired_appearance": paired_appearance,
            "motion_ranges": {k: list(v) for k, v in ranges.items()},
            "motion_units": dict(MOTION_UNITS),
            "layout": layout,
            "conventions": {
                "coordinates": "pixels, x right, y down, pixel centres at integers",
                "angle": "degrees, positive = counter-clockwise on screen",
                "flow": "frame t -> t+1, (u, v) pixels, u right, v down",
                "step": "x' = centre + (dx, dy) + scale * R(angle) @ (x - centre), "
                        "R(a) = [[cos a, sin a], [-sin a, cos a]]",
                "label": "0-based index into classes; classInd.txt index = label + 1",
            },
        },
        "classes": list(MOTION_CLASSES),
        "clips": {e["video_id"]: e for e in entries},
    }
    with open(motion_path, "w") as fh:
        json.dump(motion, fh, indent=1)
        fh.write("\n")

    return DemoDataset(
        root=root, videos_dir=videos_dir, classes=MOTION_CLASSES, labels_path=labels_path,
        class_index_path=class_index_path, motion_path=motion_path, num_clips=len(entries),
        num_frames=num_frames, size=(width, height), fps=float(fps), codec=used_codec,
        video_ext=ext, video_ids=tuple(e["video_id"] for e in entries),
    )


__all__ = [
    "CLASS_MOTION",
    "DemoDataset",
    "MOTION_CLASSES",
    "MOTION_RANGES",
    "load_motion",
    "make_demo_dataset",
    "object_alpha",
    "object_mask",
    "render_clip",
    "step_matrix",
    "true_flow",
]
