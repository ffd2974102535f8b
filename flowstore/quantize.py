"""8-bit flow quantization, as in Simonyan & Zisserman (2014) and TSN.

``bound`` scheme (default): clip each component to ``[-bound, bound]`` pixels and map linearly::

    q = round((v + bound) * 255 / (2 * bound))      # uint8, round half to even (np.rint)
    v = q * 2 * bound / 255 - bound                 # dequantize

``minmax`` scheme: per frame and per component, ``lo = min(v)``, ``hi = max(v)``, and
``q = round((v - lo) * 255 / (hi - lo))``; ``v = lo + q * (hi - lo) / 255``. The four numbers
``(lo_x, hi_x, lo_y, hi_y)`` of each flow are stored beside it. A constant component
(``hi == lo``) is stored as all zeros and dequantizes to ``lo``.

Horizontal flip of stored flow: mirror the image and map ``q_x -> 255 - q_x``. For ``bound``
this is ``u -> -u`` after dequantization (exact in real arithmetic, within float32 rounding,
~4e-6 px at bound 20, in practice); for ``minmax`` the range becomes ``(-hi_x, -lo_x)`` as well.
Zero flow has no exact code with 255 levels: it is stored as 128 and reads back as +bound/255.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from .errors import InputError

SCHEMES = ("bound", "minmax")
LEVELS = 255  # q in 0..255
ROUNDING = "half_to_even"  # np.rint; never truncation


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How flow becomes uint8; recorded in the manifest so readers never guess."""

    scheme: str = "bound"
    bound: float = 20.0

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise InputError(f"unknown quantization {self.scheme!r}; choose from {sorted(SCHEMES)}")
        if self.scheme == "bound" and not (self.bound > 0 and np.isfinite(self.bound)):
            raise InputError(f"quantization bound must be a positive number of pixels, got {self.bound!r}")

    def to_manifest(self) -> dict:
        out = {"scheme": self.scheme, "levels": LEVELS, "rounding": ROUNDING, "dtype": "uint8"}
        if self.scheme == "bound":
            out["bound"] = float(self.bound)
            out["formula"] = "q = rint((clip(v, -bound, bound) + bound) * 255 / (2 * bound))"
            out["inverse"] = "v = q * 2 * bound / 255 - bound"
        else:
            out["formula"] = "q = rint((v - lo) * 255 / (hi - lo)), per flow and component"
            out["inverse"] = "v = lo + q * (hi - lo) / 255"
        return out

    @classmethod
    def from_manifest(cls, entry: dict) -> "QuantSpec":
        return cls(scheme=entry["scheme"], bound=float(entry.get("bound", 20.0)))


def quantize(flow: np.ndarray, spec: QuantSpec = QuantSpec()) -> tuple[np.ndarray, np.ndarray | None]:
    """Float ``(H, W, 2)`` flow in pixels -> (uint8 ``(H, W, 2)``, range or None).

    The range is float32 ``(lo_x, hi_x, lo_y, hi_y)`` for ``minmax`` and None for ``bound``.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise InputError(f"flow must have shape (H, W, 2), got {flow.shape}")
    if spec.scheme == "bound":
        b = np.float32(spec.bound)
        scaled = (np.clip(flow, -b, b) + b) * np.float32(LEVELS / (2 * spec.bound))
        return np.rint(scaled).astype(np.uint8), None
    lo = flow.reshape(-1, 2).min(axis=0)
    hi = flow.reshape(-1, 2).max(axis=0)
    span = hi - lo
    scale = np.divide(np.float32(LEVELS), span, out=np.zeros_like(span), where=span > 0)
    q = np.rint((flow - lo) * scale).astype(np.uint8)
    rng = np.array([lo[0], hi[0], lo[1], hi[1]], dtype=np.float32)
    return q, rng


def dequantize(q: np.ndarray, spec: QuantSpec = QuantSpec(), value_range: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(H, W, 2)`` -> float32 flow in pixels (the inverse map; see module docstring)."""
    q = np.asarray(q)
    if spec.scheme == "bound":
        return q.astype(np.float32) * np.float32(2 * spec.bound / LEVELS) - np.float32(spec.bound)
    if value_range is None:
        raise InputError("minmax quantization needs the per-flow range (lo_x, hi_x, lo_y, hi_y)")
    lo = np.array([value_range[0], value_range[2]], dtype=np.float32)
    hi = np.array([value_range[1], value_range[3]], dtype=np.float32)
    return lo + q.astype(np.float32) * ((hi - lo) / np.float32(LEVELS))


def flip_horizontal(q: np.ndarray, value_range: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror stored flow left-right: columns reversed and ``q_x -> 255 - q_x``.

    Returns the flipped uint8 flow and, for ``minmax``, the flipped range ``(-hi_x, -lo_x, lo_y, hi_y)``.
    """
    flipped = q[:, ::-1].copy()
    flipped[..., 0] = LEVELS - flipped[..., 0]
    if value_range is None:
        return flipped, None
    lo_x, hi_x, lo_y, hi_y = value_range
    return flipped, np.array([-hi_x, -lo_x, lo_y, hi_y], dtype=np.float32)


def quantization_step(spec: QuantSpec) -> float:
    """Pixel size of one quantization level for ``bound`` (the worst-case rounding error is half)."""
    return 2 * spec.bound / LEVELS
