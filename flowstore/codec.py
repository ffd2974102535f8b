"""Encode and decode single-channel flow components and RGB frames.

Codecs: ``jpeg`` (lossy, ``quality`` 0..100), ``png`` (lossless, ``level`` 0..9) and ``raw``
(the uint8 pixels, row-major, no header: the frame size is in the manifest). All encoded
images are standard files that ``cv2.imdecode`` (or PIL) reads.
"""
from __future__ import annotations

import cv2
import numpy as np
from .errors import InputError

CODECS = ("jpeg", "png", "raw")
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 1  # PNG compression level: small effect on size for flow, large on speed


def check_codec(name: str) -> str:
    if name not in CODECS:
        raise InputError(f"unknown codec {name!r}; choose from {sorted(CODECS)}")
    return name


def effective_quality(codec: str, quality: int | None) -> int | None:
    """The quality/level actually used (recorded in the manifest); None for raw."""
    if codec == "raw":
        return None
    if quality is not None:
        return int(quality)
    return DEFAULT_JPEG_QUALITY if codec == "jpeg" else DEFAULT_PNG_LEVEL


def check_quality(codec: str, quality: int | None) -> None:
    """Raise ValueError if ``quality`` is not valid for ``codec`` (raw ignores it)."""
    if codec != "raw":
        _params(check_codec(codec), quality)


def _params(codec: str, quality: int | None) -> list[int]:
    if codec == "jpeg":
        q = DEFAULT_JPEG_QUALITY if quality is None else int(quality)
        if not 0 <= q <= 100:
            raise InputError(f"JPEG quality must be in 0..100, got {q}")
        return [cv2.IMWRITE_JPEG_QUALITY, q]
    level = DEFAULT_PNG_LEVEL if quality is None else int(quality)
    if not 0 <= level <= 9:
        raise InputError(f"PNG compression level must be in 0..9, got {level}")
    return [cv2.IMWRITE_PNG_COMPRESSION, level]


def encode_gray(plane: np.ndarray, codec: str, quality: int | None = None) -> bytes:
    """uint8 ``(H, W)`` -> bytes."""
    if plane.dtype != np.uint8 or plane.ndim != 2:
        raise InputError(f"expected a uint8 (H, W) plane, got {plane.dtype} {plane.shape}")
    if codec == "raw":
        return np.ascontiguousarray(plane).tobytes()
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", plane, _params(check_codec(codec), quality))
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {plane.shape} plane as {codec}")
    return buf.tobytes()


def decode_gray(data: bytes, codec: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """bytes -> uint8 ``(H, W)``; ``shape`` (H, W) is required for ``raw``."""
    if codec == "raw":
        if shape is None:
            raise InputError("raw planes need the frame shape (H, W) to decode")
        return np.frombuffer(data, np.uint8).reshape(shape)
    plane = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if plane is None:
        raise InputError(f"could not decode {len(data)} bytes as {codec}")
    return plane


def encode_rgb(rgb: np.ndarray, codec: str = "jpeg", quality: int | None = None) -> bytes:
    """RGB uint8 ``(H, W, 3)`` -> bytes (stored as a normal JPEG/PNG, i.e. BGR order inside OpenCV)."""
    if codec == "raw":
        return np.ascontiguousarray(rgb).tobytes()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg" if codec == "jpeg" else ".png", bgr, _params(check_codec(codec), quality))
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {rgb.shape} frame as {codec}")
    return buf.tobytes()


def decode_rgb(data: bytes, codec: str = "jpeg", shape: tuple[int, int] | None = None) -> np.ndarray:
    """bytes -> RGB uint8 ``(H, W, 3)``."""
    if codec == "raw":
        if shape is None:
            raise InputError("raw frames need the frame shape (H, W) to decode")
        return np.frombuffer(data, np.uint8).reshape(*shape, 3)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"could not decode {len(data)} bytes as {codec}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
