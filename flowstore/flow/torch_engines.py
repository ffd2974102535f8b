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

#: pairs per batch on the CPU, and wherever no automatic size applies
DEFAULT_BATCH_SIZE = 8
#: the automatic batch size never exceeds this (beyond it a GPU gains nothing from fewer launches)
MAX_AUTO_BATCH_SIZE = 256
#: share of the device's free memory (torch.cuda.mem_get_info) the automatic batch may take; the
#: rest is left to other workers on the same device (``--gpu 0,0``) and to the allocator
AUTO_BATCH_MEMORY_SHARE = 0.5


def auto_batch_size(device: torch.device, height: int, width: int, bytes_per_pixel: int) -> int:
    """Pairs per batch that fit in :data:`AUTO_BATCH_MEMORY_SHARE` of ``device``'s free memory at
    ``bytes_per_pixel`` per pixel of each pair (1 to :data:`MAX_AUTO_BATCH_SIZE`); CUDA only, else
    :data:`DEFAULT_BATCH_SIZE`."""
    if device.type != "cuda":
        return DEFAULT_BATCH_SIZE
    free, _total = torch.cuda.mem_get_info(device)
    fit = int(free * AUTO_BATCH_MEMORY_SHARE) // max(1, bytes_per_pixel * height * width)
    return max(1, min(MAX_AUTO_BATCH_SIZE, fit))


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
    """``batch_size=None`` (the default): :data:`DEFAULT_BATCH_SIZE` on the CPU; on CUDA the
    :func:`auto_batch_size` for the frame size (seen by :meth:`prepare` or :meth:`compute`) at the
    engine's :attr:`BYTES_PER_PIXEL`, resolved once per frame size. An integer overrides it."""

    engine = "torch"
    #: device memory per pixel of one pair at the peak of a batch (see the subclasses)
    BYTES_PER_PIXEL = 0

    def __init__(self, params: dict, device: str, batch_size: int | None, compile: bool | None):
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
            raise InputError(f"batch_size must be a positive integer (or None: automatic), got {batch_size!r}")
        try:
            dev = torch.device(device)
            torch.empty(1, device=dev)  # fail here, with the device named, if it is unusable
        except (RuntimeError, AssertionError) as exc:
            raise InputError(f"torch device {device!r} is not usable here: {exc}") from exc
        self._device = dev
        self.device = str(dev)
        self.params = params
        self.requested_batch_size = batch_size
        self.compile = compile
        self._frame_shape: tuple[int, int] | None = None
        self._auto: dict[tuple[int, int], int] = {}

    @property
    def batch_size(self) -> int:
        """Pairs per batch: the requested one, else automatic (see the class docstring)."""
        if self.requested_batch_size is not None:
            return self.requested_batch_size
        if self._device.type != "cuda" or self._frame_shape is None:
            return DEFAULT_BATCH_SIZE
        if self._frame_shape not in self._auto:
            self._auto[self._frame_shape] = auto_batch_size(self._device, *self._frame_shape, self.BYTES_PER_PIXEL)
        return self._auto[self._frame_shape]

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (H, W, 3) -> grayscale uint8 (H, W), exactly as cv2 COLOR_RGB2GRAY."""
        gray = to_gray(np.asarray(rgb))
        self._frame_shape = tuple(gray.shape[:2])
        return gray

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
        self._frame_shape = tuple(next(iter(shapes)))
        out = []
        for start in range(0, len(prev), self.batch_size):
            i0 = self._to_device(prev[start : start + self.batch_size])
            i1 = self._to_device(nxt[start : start + self.batch_size])
            flow = self._run(i0, i1)  # (b, 2, H, W) float32
            out.append(flow.permute(0, 2, 3, 1).to("cpu").numpy())
        return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)

    def compute_on_device(self, gray0: torch.Tensor, gray1: torch.Tensor) -> torch.Tensor:
        """Tensors in, tensors out (for flow computed in a training loop, e.g.
        :class:`~flowstore.data.device_flow.FlowOnDevice`): grayscale uint8 ``(P, H, W)`` pairs
        -> float32 ``(P, 2, H, W)`` flow on the engine's device, in chunks of ``batch_size``
        pairs, with no copy to the host."""
        if gray0.shape != gray1.shape or gray0.ndim != 3:
            raise InputError(f"need two (P, H, W) batches of one shape, got {tuple(gray0.shape)} and {tuple(gray1.shape)}")
        self._frame_shape = tuple(gray0.shape[-2:])
        step = self.batch_size
        parts = [self._run(gray0[i:i + step].to(self._device), gray1[i:i + step].to(self._device))
                 for i in range(0, len(gray0), step)]
        return torch.cat(parts)

    def describe(self) -> dict:
        return {
            "method": self.method,
            "engine": self.engine,
            "library": "torch",
            "library_version": torch.__version__,
            "device": self.device,
            "params": dict(self.params),
            "batch_size": self.batch_size if self.requested_batch_size is not None or self._device.type != "cuda"
            else "auto",
        }


class TorchTVL1(_TorchEstimator):
    """Dual TV-L1 (OpenCV's DualTVL1 algorithm). ``fused`` (default: on CUDA) runs the fused path
    of :mod:`~flowstore.flow.torch_tvl1` (compiled outer iterations replayed as CUDA graphs; a
    one-off compilation of tens of seconds per process); ``compile=True`` on the unfused path
    compiles its inner iteration; the CPU default is the unfused eager path."""

    method = "tvl1"
    #: float32 planes of H x W per pair at the peak of a batch: 107 measured on the CPU for the
    #: eager paths, fused or not (live tensor bytes; the flow, dual variables and data term are ~16
    #: planes, the rest is the pyramid and the temporaries of the 5x5 median and an inner
    #: iteration), times 2.8 because on CUDA each pyramid level's CUDA graph keeps its own memory
    #: pool and the levels add up to 1/(1 - 0.8^2) = 2.8 times the finest (an upper bound: a pool
    #: holds the temporaries of one outer iteration only): 300, 320 with a margin.
    #: tests/test_tvl1_ops.py measures the eager peak and checks it against PLANES_PER_PAIR / 2.8.
    PLANES_PER_PAIR = 320
    BYTES_PER_PIXEL = 4 * PLANES_PER_PAIR

    def __init__(self, params: dict, device: str, batch_size: int | None, compile: bool | None,
                 fused: bool | None = None):
        super().__init__(params, device, batch_size, compile)
        self.fused = fused

    def _run(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        return tvl1_flow(i0, i1, compile=self.compile, fused=self.fused, **self.params)


class TorchFarneback(_TorchEstimator):
    """Farnebäck (cv2.calcOpticalFlowFarneback's algorithm); ``compile`` has no effect (nothing in it
    gained from torch.compile on the CPU: its cost is in convolutions)."""

    method = "farneback"
    #: float32 planes of H x W per pair at the peak: 58 measured on the CPU (live tensor bytes: the
    #: two frames' polynomial expansions, the normal equations and their window sums, the pyramid,
    #: the filter temporaries); 80 with a margin (tests/test_tvl1_ops.py checks the measurement)
    PLANES_PER_PAIR = 80
    BYTES_PER_PIXEL = 4 * PLANES_PER_PAIR

    def _run(self, i0: torch.Tensor, i1: torch.Tensor) -> torch.Tensor:
        return farneback_flow(i0, i1, **self.params)


def build_torch_tvl1(
    *, params: dict | None = None, device: str | None = "cpu", batch_size: int | None = None,
    compile: bool | None = None, fused: bool | None = None,
) -> TorchTVL1:
    """``batch_size=None``: automatic on CUDA, 8 elsewhere; ``fused``/``compile``: see :class:`TorchTVL1`."""
    return TorchTVL1(check_params("tvl1", params or {}, TVL1_DEFAULTS, TVL1_RANGES), device or "cpu", batch_size,
                     compile, fused)


def build_torch_farneback(
    *, params: dict | None = None, device: str | None = "cpu", batch_size: int | None = None, compile: bool = False
) -> TorchFarneback:
    return TorchFarneback(check_params("farneback", params or {}, FARNEBACK_DEFAULTS, FARNEBACK_RANGES), device or "cpu", batch_size, compile)
