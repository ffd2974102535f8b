"""Middlebury ``.flo`` files and flow error metrics.

Layout (little-endian): float32 magic 202021.25 (``PIEH``), int32 width, int32 height, then
``width * height * 2`` float32 values row by row, ``u`` then ``v`` per pixel. Values with
``|x| > 1e9`` mean "unknown flow" (Middlebury uses 1.6666668e9).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from .errors import InputError
from .io import atomic_write_bytes

FLO_MAGIC = 202021.25
UNKNOWN_FLOW_THRESHOLD = 1e9


def read_flo(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.flo`` file as float32 ``(H, W, 2)``; raises ValueError naming the file if malformed."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 12:
        raise InputError(f"{path}: too short for a .flo file ({len(data)} bytes, need at least 12)")
    magic = np.frombuffer(data, "<f4", count=1)[0]
    if magic != np.float32(FLO_MAGIC):
        raise InputError(f"{path}: bad .flo magic {magic!r} (expected {FLO_MAGIC}, bytes 'PIEH')")
    width, height = (int(x) for x in np.frombuffer(data, "<i4", count=2, offset=4))
    if width <= 0 or height <= 0:
        raise InputError(f"{path}: bad .flo size {width}x{height}")
    expected = 12 + 8 * width * height
    if len(data) != expected:
        raise InputError(f"{path}: {len(data)} bytes, but a {width}x{height} .flo has {expected}")
    return np.frombuffer(data, "<f4", offset=12).reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write float ``(H, W, 2)`` flow as a ``.flo`` file (atomically: temporary name, then rename)."""
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise InputError(f"flow must have shape (H, W, 2), got {flow.shape}")
    height, width = flow.shape[:2]
    header = np.array([FLO_MAGIC], "<f4").tobytes() + np.array([width, height], "<i4").tobytes()
    atomic_write_bytes(path, header + np.ascontiguousarray(flow, "<f4").tobytes())


def valid_mask(flow_gt: np.ndarray) -> np.ndarray:
    """True where the ground truth is known (Middlebury marks unknown pixels with huge values)."""
    return np.all(np.isfinite(flow_gt), axis=-1) & (np.abs(flow_gt).max(axis=-1) < UNKNOWN_FLOW_THRESHOLD)


def endpoint_error(flow: np.ndarray, flow_gt: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel end-point error over the valid (and masked) pixels, as a 1-D array."""
    if flow.shape != flow_gt.shape:
        raise InputError(f"flow shape {flow.shape} differs from ground truth {flow_gt.shape}")
    keep = valid_mask(flow_gt)
    if mask is not None:
        keep &= mask
    diff = flow.astype(np.float64)[keep] - flow_gt.astype(np.float64)[keep]
    return np.sqrt((diff**2).sum(axis=-1))


def mean_epe(flow: np.ndarray, flow_gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    return float(endpoint_error(flow, flow_gt, mask).mean())


def outlier_rate(flow: np.ndarray, flow_gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """KITTI Fl-all style: share of pixels with EPE > 3 px and > 5% of the true magnitude."""
    keep = valid_mask(flow_gt)
    if mask is not None:
        keep &= mask
    epe = endpoint_error(flow, flow_gt, mask)
    mag = np.sqrt((flow_gt.astype(np.float64)[keep] ** 2).sum(axis=-1))
    return float(((epe > 3.0) & (epe > 0.05 * mag)).mean())
