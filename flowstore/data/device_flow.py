"""Flow computed on the fly on a torch device, quantized exactly as a store's flows are.

The course project's "Method 2": instead of reading stored flow, a training loop reads the RGB
frames a flow stack needs and computes the flow on its device with the *same* engine that
``flowstore extract`` uses (the flow registry, :func:`flowstore.flow.registry.build_flow`;
the ``torch`` engines of ``tvl1`` and ``farneback`` batch on the device), then quantizes it with
the store's :class:`~flowstore.quantize.QuantSpec`. What comes out is the uint8 flow a store
would hold, so the loader's transforms (crops, flips that negate u, values, mean subtraction)
apply to it unchanged (:mod:`flowstore.data.device_clips`).

::

    fod = FlowOnDevice("tvl1", engine="torch", device="cuda", quant=QuantSpec(bound=20), stride=1)
    q, ranges = fod(frames, pairs)   # frames (N, F, 3, H, W) uint8 on the device, pairs (N, L)
    # q: (N, 2L, H, W) uint8, x/y interleaved, as a stored stack; ranges: (N, L, 4) or None

Pair ``l`` of row ``n`` is the flow from frame position ``pairs[n, l]`` to ``pairs[n, l] +
stride`` (a store's flow ``i`` goes from frame ``i`` to ``i + stride``, docs/FORMAT.md).

Online flow is computed from the *stored* frames, which went through the frame codec (JPEG by
default), while extraction computed the stored flow from the frames before they were encoded,
and then encoded the flow itself (JPEG by default). So online = stored exactly with lossless
codecs (png/raw), and within the codecs' error otherwise (``tests/test_device_flow.py``
measures both parts).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..flow.registry import build_flow, resolve_engine
from ..quantize import LEVELS, QuantSpec

#: cv2's fixed-point RGB -> gray weights (R, G, B) with a 15-bit shift (OpenCV's color_rgb:
#: gray = (R*9798 + G*19235 + B*3735 + 2^14) >> 15, what ``cv2.COLOR_RGB2GRAY`` does for uint8;
#: the older 14-bit weights differ in ~0.2% of pixels; a test pins these to cv2)
_GRAY_WEIGHTS = (9798, 19235, 3735)
_GRAY_SHIFT = 15
#: the key of a sample's frames for online flow: uint8 ``(S, 3 (L + stride), H, W)``
FRAMES_KEY = "flow_frames"


def default_device() -> str:
    """``cuda`` when a CUDA device is usable, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def rgb_to_gray(rgb: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` uint8 RGB -> ``(..., H, W)`` uint8, bit for bit ``cv2.COLOR_RGB2GRAY``
    (what the engines' ``prepare`` does on the host), on the tensor's device."""
    x = rgb.to(torch.int32)
    wr, wg, wb = _GRAY_WEIGHTS
    gray = x[..., 0, :, :] * wr + x[..., 1, :, :] * wg + x[..., 2, :, :] * wb + (1 << (_GRAY_SHIFT - 1))
    return (gray >> _GRAY_SHIFT).to(torch.uint8)


def _f32(value: float, like: torch.Tensor) -> torch.Tensor:
    """A float32 0-dim tensor on ``like``'s device: the constant numpy's float32 code uses."""
    return torch.tensor(np.float32(value), device=like.device)


def quantize_on_device(flow: torch.Tensor, quant: QuantSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Float32 ``(N, 2, H, W)`` flow -> uint8 ``(N, 2, H, W)`` and, for ``minmax``, float32
    ``(N, 4)`` ranges ``(lo_x, hi_x, lo_y, hi_y)``: the float32 operations of
    :mod:`flowstore.quantize` in the same order, so the codes are the same (a test pins them)."""
    if quant.scheme == "bound":
        b = _f32(quant.bound, flow)
        scaled = (torch.clamp(flow, -b, b) + b) * _f32(LEVELS / (2 * quant.bound), flow)
        rounded = torch.floor(scaled) if quant.rounding == "truncate" else torch.round(scaled)  # half to even
        return rounded.to(torch.uint8), None
    if quant.scheme == "minmax":
        lo = flow.amin(dim=(2, 3), keepdim=True)
        hi = flow.amax(dim=(2, 3), keepdim=True)
        span = hi - lo
        scale = torch.where(span > 0, _f32(LEVELS, flow) / torch.where(span > 0, span, 1), 0)
        q = torch.round((flow - lo) * scale).to(torch.uint8)
        lo, hi = lo.flatten(1), hi.flatten(1)
        return q, torch.stack([lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1]], dim=1)
    from ..quantize import quantize  # a scheme registered out of tree: numpy, on the host

    codes, ranges = zip(*(quantize(f, quant) for f in flow.permute(0, 2, 3, 1).cpu().numpy()))
    q = torch.from_numpy(np.stack(codes)).permute(0, 3, 1, 2).to(flow.device)
    return q, (None if ranges[0] is None else torch.from_numpy(np.stack(ranges)).to(flow.device))


class FlowOnDevice:
    """Flow of RGB frame stacks on ``device`` with an extract engine (``method``/``engine``/
    ``params`` as :func:`~flowstore.flow.registry.build_flow` takes them), quantized by ``quant``;
    ``stride`` is the frame gap of a pair. :meth:`for_store` takes quant, stride, method and
    params from a store's manifest. ``batch_size`` (pairs per engine call) defaults to the engine's."""

    def __init__(self, method: str = "tvl1", *, engine: str | None = None, device: str | None = None,
                 params: dict | None = None, quant: QuantSpec = QuantSpec(), stride: int = 1,
                 batch_size: int | None = None):
        if stride < 1:
            raise InputError(f"stride must be >= 1, got {stride}")
        self.device = torch.device(device or default_device())
        self.engine = resolve_engine(method, engine=engine, device=str(self.device))
        options = {} if batch_size is None else {"batch_size": int(batch_size)}
        if self.engine != "opencv":  # the OpenCV engines run on the host and take no device
            options["device"] = str(self.device)
        self.estimator = build_flow(method, engine=self.engine, params=params, **options)
        self.method, self.quant, self.stride = method, quant, int(stride)

    @classmethod
    def for_store(cls, store, method: str | None = None, *, engine: str | None = None, device: str | None = None,
                  params: dict | None = None, batch_size: int | None = None) -> "FlowOnDevice":
        """The store's quantization and stride; its flow method (unless ``method`` is another) and,
        for its own method, its parameters unless ``params`` are given."""
        manifest_flow = getattr(store, "manifest", {}).get("flow", {})
        stored_method = manifest_flow.get("method")
        method = method or stored_method or "tvl1"
        if params is None and method == stored_method:
            params = manifest_flow.get("params")
        return cls(method, engine=engine, device=device, params=params, quant=store.quant,
                   stride=int(getattr(store, "stride", 1)), batch_size=batch_size)

    def describe(self) -> dict:
        return {**self.estimator.describe(), "quantization": self.quant.to_manifest(), "stride": self.stride}

    # -- the steps --------------------------------------------------------------------------
    def flow(self, gray0: torch.Tensor, gray1: torch.Tensor) -> torch.Tensor:
        """Float32 ``(P, 2, H, W)`` flow of grayscale uint8 ``(P, H, W)`` pairs on :attr:`device`
        with a ``torch`` engine: its own batched step (``batch_size`` pairs a call), no host copy."""
        return self.estimator.compute_on_device(gray0, gray1).to(self.device)

    def host_flow(self, rgb: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Any other engine (OpenCV, learned models): its ``prepare`` of each RGB frame
        ``(F, 3, H, W)`` once, then ``compute`` of the pairs, on the host as ``extract`` runs it."""
        est = self.estimator
        prepared = [est.prepare(np.ascontiguousarray(f.permute(1, 2, 0).numpy())) for f in rgb.cpu()]
        flows = est.compute([prepared[i] for i in first.tolist()], [prepared[i] for i in second.tolist()])
        return torch.from_numpy(np.ascontiguousarray(flows)).permute(0, 3, 1, 2).to(self.device)

    def __call__(self, frames: torch.Tensor, pairs, backward=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``frames`` uint8 ``(N, F, 3, H, W)`` (or ``(N, 3F, H, W)``), ``pairs`` ``(N, L)``
        first-frame positions -> uint8 ``(N, 2L, H, W)`` (x/y interleaved) and, for minmax,
        float32 ``(N, L, 4)`` ranges. ``backward`` (L booleans): the flows of those columns are
        backward, frame ``p + stride`` to frame ``p`` (the engine on the swapped pair, as
        ``extract --direction backward`` stores them)."""
        if frames.dim() == 4:
            frames = frames.unflatten(1, (-1, 3))
        if frames.dim() != 5 or frames.shape[2] != 3 or frames.dtype != torch.uint8:
            raise InputError(f"frames must be uint8 (N, F, 3, H, W), got {frames.dtype} {tuple(frames.shape)}")
        frames = frames.to(self.device, non_blocking=True)
        pairs = torch.as_tensor(pairs, dtype=torch.int64, device=self.device)
        N, F = frames.shape[:2]
        L = pairs.shape[1]
        if pairs.shape[0] != N or int(pairs.min()) < 0 or int(pairs.max()) + self.stride >= F:
            raise InputError(f"pairs {tuple(pairs.shape)} do not fit {N} stacks of {F} frames at stride {self.stride}")
        first = pairs + torch.arange(N, device=self.device)[:, None] * F
        second = first + self.stride
        if backward is not None and any(backward):
            swap = torch.as_tensor(list(backward), dtype=torch.bool, device=self.device)[None, :]
            first, second = torch.where(swap, second, first), torch.where(swap, first, second)
        first, second = first.flatten(), second.flatten()
        if self.engine == "torch":  # the engine's prepare (cv2's RGB2GRAY) on the device, each frame once
            gray = rgb_to_gray(frames).flatten(0, 1)
            flow = self.flow(gray[first], gray[second])
        else:
            flow = self.host_flow(frames.flatten(0, 1), first, second)
        q, ranges = quantize_on_device(flow, self.quant)
        q = q.reshape(N, 2 * L, *q.shape[-2:])  # (N*L, 2, H, W) -> x0, y0, x1, y1, ...
        return q, (None if ranges is None else ranges.reshape(N, L, 4))


def check_online_stacking(store, stacking: str, length: int):
    """The :class:`~flowstore.data.sampling.Stacking` ``stacking`` for online flow: backward
    flows are computed (the store need not hold them); trajectory stacking needs stride 1."""
    from .sampling import STACKINGS

    spec = STACKINGS[stacking]
    spec.directions_of(length)  # bidirectional: L even
    if spec.trajectory and int(getattr(store, "stride", 1)) != 1:
        raise InputError(f"trajectory stacking follows flow i into flow i+1, so it needs a stride-1 store; "
                         f"store {store.root} has stride {store.stride}")
    return spec


def stack_pairs(starts, length: int, num_flows: int) -> np.ndarray:
    """First-frame positions ``(S, L)`` of each snippet's flows within the frames
    :func:`stack_frame_indices` reads: flow ``min(s + l, num_flows - 1)`` (the store's clamping)
    starts at position ``min(l, num_flows - 1 - s)``."""
    starts = np.asarray(starts, np.int64).reshape(-1, 1)
    return np.minimum(np.arange(length, dtype=np.int64)[None, :], num_flows - 1 - starts)


def stack_frame_indices(starts, length: int, stride: int, num_frames: int) -> np.ndarray:
    """The ``(S, L + stride)`` frame indices the flows of snippets ``starts .. + L - 1`` need:
    ``start + 0 .. L - 1 + stride``, clamped to the last frame (flow ``i`` is frame ``i`` to
    ``i + stride``)."""
    from .sampling import snippet_indices

    return snippet_indices(starts, length + stride, num_frames)


__all__ = ["FRAMES_KEY", "FlowOnDevice", "check_online_stacking", "default_device", "quantize_on_device", "rgb_to_gray", "stack_frame_indices",
           "stack_pairs"]
