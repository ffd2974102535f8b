"""Torch engines for ``tvl1`` and ``farneback``: batched, on any torch device.

Same parameter names and defaults as the OpenCV engines (:data:`~flowstore.flow.opencv.TVL1_DEFAULTS`,
:data:`~flowstore.flow.opencv.FARNEBACK_DEFAULTS`); OpenCV stays the default engine of both methods.
Select these with ``build_flow("tvl1", engine="torch", device="cuda")`` (or any ``device=``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .opencv import FARNEBACK_DEFAULTS, FARNEBACK_RANGES, TVL1_DEFAULTS, TVL1_RANGES, to_gray
from .registry import FlowEstimator, check_params
from .torch_farneback import farneback_flow
from .torch_tvl1 import tvl1_flow
from ..errors import InputError


def _as_gray(frame: Any) -> np.ndarray | torch.Tensor:
    if isinstance(frame, torch.Tensor):
        if frame.dim() != 2:
            raise InputError(f"torch frames must be prepared grayscale (H, W), got shape {tuple(frame.shape)}")
        return frame
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 3:
        frame = to_gray(np.ascontiguousarray(frame, dtype=np.uint8))
    if frame.ndim != 2:
        raise InputError(f"expected a grayscale (H, W) or RGB (H, W, 3) frame, got shape {frame.shape}")
    return frame


class _TorchEstimator(FlowEstimator):
    engine = "torch"

    def __init__(self, params: dict, device: str, batch_size: int, compile: bool):
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        try:
            dev = torch.device(device)
            torch.empty(1, device=dev)  # fail here, with the device named, if it is unusable
        except (RuntimeError, AssertionError) as exc:
            raise InputError(f"torch device {device!r} is not usable here: {exc}") from exc
        self._device = dev
        self.device = str(dev)
        self.params = params
        self.batch_size = int(batch_size)
        self.compile = bool(compile)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> grayscale uint8 (H, W), exactly as cv2 COLOR_RGB2GRAY."""
        return to_gray(np.asarray(rgb))

    def _run(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _to_device(self, frames: list) -> torch.Tensor:
        if all(isinstance(f, torch.Tensor) for f in frames):
            batch = torch.stack([f.to(self._device) for f in frames])
        else:
            batch = torch.from_numpy(np.stack([np.asarray(f) for f in frames]))
            if self._device.type == "cuda":
                batch = batch.pin_memory()
        return batch.to(self._device, non_blocking=True)

    def compute(self, prev: Sequence[Any], nxt: Sequence[Any]) -> np.ndarray:
        """Flow of each pair as float32 (B, H, W, 2), run in chunks of ``batch_size`` pairs."""
        if len(prev) != len(nxt):
            raise InputError(f"got {len(prev)} first frames but {len(nxt)} second frames")
        if len(prev) == 0:
            return np.zeros((0, 0, 0, 2), np.float32)
        prev = [_as_gray(f) for f in prev]
        nxt = [_as_gray(f) for f in nxt]
        shapes = {tuple(f.shape) for f in (*prev, *nxt)}
        if len(shapes) != 1:
            raise InputError(f"all frames of one compute() call must have the same size, got {sorted(shapes)}")
        out = []
        for start in range(0, len(prev), self.batch_size):
            i0 = self._to_device(prev[start : start + self.batch_size])
            i1 = self._to_device(nxt[start : start + self.batch_size])
            flow = self._run(i0, i1)  # (b, 2, H, W) float32
            out.append(flow.permute(0, 2, 3, 1).to("cpu").numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "engine": self.engine,
            "library": "torch",
            "library_version": torch.__version__,
            "device": self.device,
            "params": dict(self.params),
            "batch_size": self.batch_size,
        }


class TorchTVL1(_TorchEstimator):
    """Dual TV-L1 (OpenCV's DualTVL1 algorithm); ``compile=True`` fuses the inner iteration with
    torch.compile (a one-off compilation of tens of seconds per process)."""

    method = "tvl1"

    def _run(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        return tvl1_flow(i0, i1, compile=self.compile, **self.params)


class TorchFarneback(_TorchEstimator):
    """Farnebäck (cv2.calcOpticalFlowFarneback's algorithm); ``compile`` has no effect (nothing in it
    gained from torch.compile on the CPU: its cost is in convolutions)."""

    method = "farneback"

    def _run(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        return farneback_flow(i0, i1, **self.params)


def build_torch_tvl1(
    *, params: dict | None = None, device: str | None = "cpu", batch_size: int = 8, compile: bool = False
) -> TorchTVL1:
    return TorchTVL1(check_params("tvl1", params or {}, TVL1_DEFAULTS, TVL1_RANGES), device or "cpu", batch_size, compile)


def build_torch_farneback(
    *, params: dict | None = None, device: str | None = "cpu", batch_size: int = 8, compile: bool = False
) -> TorchFarneback:
    return TorchFarneback(check_params("farneback", params or {}, FARNEBACK_DEFAULTS, FARNEBACK_RANGES), device or "cpu", batch_size, compile)
