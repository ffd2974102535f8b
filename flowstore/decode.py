"""Decode stage: a video file -> a stream of RGB uint8 frames, resized on the way.

Frames are yielded one at a time, so memory stays bounded by a few frames whatever the length
of the video. The frame count is what decoding yields, never the container's header. Backends:
``opencv`` (default: cv2.VideoCapture, FFmpeg inside the pip wheel) and ``pyav`` (optional, if
the ``av`` package is installed; it raises on corrupt packets instead of stopping silently),
both in :data:`DECODERS`, filled by :func:`register_decoder`.

Frame-rate reduction (``extract --fps N``, :func:`select_fps`): of the decoded frames, keep the
one nearest to each point of a regular grid ``t_0 + j / N`` (``j = 0, 1, ...``, ``t_0`` the
first decoded frame's timestamp, grid points up to the last frame's timestamp), judged by the
**decoded** timestamps (OpenCV's ``CAP_PROP_POS_MSEC`` after each read, PyAV's ``frame.time``),
never by the container's nominal rate. A tie (a grid point exactly halfway between two frames)
keeps the earlier frame. A frame nearest to several grid points is kept once: frames are never
duplicated, so a clip whose frames are never closer together than ``1 / N`` s (a clip slower
than N fps) keeps every frame.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
from .errors import EnvironmentProblem, InputError
from .registry import Registry

#: decoder name -> ``frames(path) -> iterator of RGB uint8 frames`` (unresized), or of
#: ``(rgb, seconds)`` pairs: the frame and its decoded timestamp (needed by ``--fps``)
DECODERS: Registry[Callable[[str], Iterator[np.ndarray]]] = Registry("decoder")
#: what counts as a video file when a directory is searched (extraction inputs, label lists)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".gif", ".3gp", ".ogv")
#: TSN's standard frame size
TSN_SIZE = (340, 256)


class VideoDecodeError(InputError, RuntimeError):
    """A video that cannot be opened or decoded; the message is one line naming the problem."""


@dataclass(frozen=True)
class FrameResize:
    """How decoded frames are resized before flow and storage (``extract --size/--short-side``):
    ``size=(W, H)`` for a fixed size, or ``short_side=N`` keeping the aspect ratio, or neither.
    (The loaders' transform is :class:`flowstore.data.transforms.ResizeClip`.)"""

    size: tuple[int, int] | None = None
    short_side: int | None = None
    interpolation: str = "area"  # area for shrinking (no aliasing); linear when enlarging

    def __post_init__(self):
        if self.size is not None and self.short_side is not None:
            raise InputError("give either size=(W, H) or short_side=N, not both")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise InputError(f"size must be (W, H) with positive integers, got {self.size!r}")
        if self.short_side is not None and self.short_side < 1:
            raise InputError(f"short_side must be a positive integer, got {self.short_side!r}")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        if self.size is not None:
            return int(self.size[0]), int(self.size[1])
        if self.short_side is not None:
            scale = self.short_side / min(width, height)
            return max(1, round(width * scale)), max(1, round(height * scale))
        return width, height

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        out_w, out_h = self.output_size(w, h)
        if (out_w, out_h) == (w, h):
            return rgb
        shrinking = out_w * out_h < w * h
        interp = cv2.INTER_AREA if shrinking and self.interpolation == "area" else cv2.INTER_LINEAR
        return cv2.resize(rgb, (out_w, out_h), interpolation=interp)

    def to_manifest(self) -> dict:
        return {
            "size": list(self.size) if self.size else None,
            "short_side": self.short_side,
            "interpolation": "cv2.INTER_AREA when shrinking, cv2.INTER_LINEAR when enlarging",
        }


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"340x256"`` -> ``(340, 256)``."""
    if text is None or text == "":
        return None
    try:
        w, h = text.lower().split("x")
        size = int(w), int(h)
    except ValueError:
        raise InputError(f"bad size {text!r}; write WIDTHxHEIGHT, e.g. 340x256") from None
    if min(size) < 1:
        raise InputError(f"bad size {text!r}; width and height must be positive")
    return size


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VideoDecodeError(f"file not found: {path}")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError("empty file (0 bytes)")


def register_decoder(name: str):
    """Decorator registering ``frames(path)`` as decoder ``name``; it raises VideoDecodeError.
    It yields RGB frames, or ``(rgb, seconds)`` pairs with each frame's decoded timestamp
    (a decoder without timestamps cannot serve ``--fps``)."""
    return lambda frames: DECODERS.register(name, frames)


def list_decoders() -> list[str]:
    return DECODERS.names()


#: decoder -> (module it needs, how to get it)
DECODER_NEEDS = {"pyav": ("av", "pip install av (PyAV)")}


def check_decoder(name: str) -> None:
    """``name`` is a decoder and what it needs is installed, else InputError/EnvironmentProblem
    (exit 2) before any video is opened."""
    import importlib

    DECODERS.check(name)
    module, how = DECODER_NEEDS.get(name, (None, ""))
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ImportError:
        raise EnvironmentProblem(f"decoder {name!r} needs the {module!r} package, which is not installed: "
                                 f"{how}, or use --decoder opencv") from None


@register_decoder("opencv")
def _iter_opencv(path: str) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoDecodeError("OpenCV cannot open it as a video (not a video, or truncated/corrupt container)")
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            # after a read, POS_MSEC is the timestamp (PTS) of the frame just decoded
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
    finally:
        cap.release()


@register_decoder("pyav")
def _iter_pyav(path: str) -> Iterator[np.ndarray]:
    try:
        import av
    except ImportError:
        check_decoder("pyav")  # raises: av is missing
    try:
        container = av.open(path)
    except Exception as exc:  # av raises many types; report one line
        raise VideoDecodeError(f"PyAV cannot open it: {exc}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24"), frame.time
        except av.error.FFmpegError as exc:
            raise VideoDecodeError(f"decoding failed: {exc}") from None


class DecodedFrame(NamedTuple):
    """A decoded frame: its 0-based index among all decoded frames, its decoded timestamp in
    seconds (None from a decoder that gives none) and the RGB uint8 image."""

    index: int
    time: float | None
    rgb: np.ndarray


def iter_decoded(path: str | os.PathLike, *, decoder: str = "opencv") -> Iterator[DecodedFrame]:
    """Every decoded frame of ``path`` with its index and timestamp (unresized)."""
    path = os.fspath(path)
    frames = DECODERS[decoder]
    _check_file(path)
    for index, item in enumerate(frames(path)):
        rgb, time = item if isinstance(item, tuple) else (item, None)
        yield DecodedFrame(index, None if time is None else float(time), rgb)


def check_fps(fps: float | None) -> float | None:
    if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool) and 0 < fps < float("inf")):
        raise InputError(f"--fps must be a positive number of frames per second, got {fps!r}")
    return fps


def select_fps(frames: Iterable[DecodedFrame], fps: float, *, what: str = "the video") -> Iterator[DecodedFrame]:
    """The frames nearest to the grid ``t_0 + j / fps`` (module docstring), streamed: each frame
    is decided with one frame of look-behind. Timestamps must not decrease."""
    period = 1.0 / check_fps(fps)
    t0 = prev = None
    j = 0
    last_kept = -1
    for frame in frames:
        if frame.time is None:
            raise VideoDecodeError(f"the decoder gives no frame timestamps for {what}; --fps needs them")
        if prev is not None and frame.time < prev.time:
            raise VideoDecodeError(f"decoded timestamps go back in time at frame {frame.index} "
                                   f"({prev.time:.6f} s -> {frame.time:.6f} s); --fps cannot place it")
        if t0 is None:
            t0 = frame.time
        # every grid point in (prev.time, frame.time] is decided now: frame or prev, whichever is nearer
        while (grid := t0 + j * period) <= frame.time:
            nearest = prev if prev is not None and grid - prev.time <= frame.time - grid else frame  # tie: earlier
            if nearest.index > last_kept:
                last_kept = nearest.index
                yield nearest
            j += 1
        prev = frame


def iter_frames(path: str | os.PathLike, *, resize: FrameResize = FrameResize(), decoder: str = "opencv",
                fps: float | None = None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 ``(H, W, 3)`` frames of ``path``, resized (and with ``fps``, only those
    :func:`select_fps` keeps); raises VideoDecodeError."""
    for frame in iter_kept(path, decoder=decoder, fps=fps):
        yield resize.apply(frame.rgb)


def iter_kept(path: str | os.PathLike, *, decoder: str = "opencv", fps: float | None = None) -> Iterator[DecodedFrame]:
    """The decoded frames extraction keeps (all of them, or with ``fps`` :func:`select_fps`'s)."""
    frames = iter_decoded(path, decoder=decoder)
    return frames if fps is None else select_fps(frames, fps, what=os.fspath(path))


def read_frames(path: str | os.PathLike, *, resize: FrameResize = FrameResize(), decoder: str = "opencv",
                fps: float | None = None) -> list[np.ndarray]:
    """All frames in memory: for short clips and tests only (``iter_frames`` streams)."""
    return list(iter_frames(path, resize=resize, decoder=decoder, fps=fps))
