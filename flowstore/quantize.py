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
A store that truncates (imported denseflow trees) reads levels at their centres, so there the map
is ``q_x -> 254 - q_x`` (:func:`mirror_level`).
Zero flow has no exact code with 255 levels: it is stored as 128 and reads back as +bound/255.

:data:`SCHEMES` is the one table of schemes; a new one is a :class:`QuantScheme` passed to
:func:`register_quant_scheme`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from .errors import InputError
from .registry import Registry

LEVELS = 255  # q in 0..255
ROUNDING = "half_to_even"  # np.rint: what flowstore writes
#: roundings a ``bound`` store may declare: flowstore and denseflow round half to even;
#: ``truncate`` is for stores imported from tools that cast with ``astype(np.uint8)`` (mmaction2's
#: tools/misc/flow_extraction.py), read back at the centre of each level (docs/FORMAT.md, section 7)
ROUNDINGS = ("half_to_even", "truncate")


class QuantScheme:
    """How one scheme maps flow to uint8 and back; registered with :func:`register_quant_scheme`."""

    #: whether each flow's range ``(lo_x, hi_x, lo_y, hi_y)`` is stored beside it
    per_flow_range = False

    def check(self, spec: "QuantSpec") -> None:
        """Raise InputError if ``spec``'s parameters do not suit this scheme."""

    def manifest(self, spec: "QuantSpec") -> dict:
        """The scheme's parameters and formulas, for the manifest."""
        raise NotImplementedError

    def quantize(self, flow: np.ndarray, spec: "QuantSpec") -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def dequantize(self, q: np.ndarray, spec: "QuantSpec", value_range: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError


#: scheme name -> :class:`QuantScheme`
SCHEMES: Registry[QuantScheme] = Registry("quantization")


def register_quant_scheme(name: str, scheme: QuantScheme) -> QuantScheme:
    return SCHEMES.register(name, scheme)


def list_quant_schemes() -> list[str]:
    return SCHEMES.names()


@dataclasses.dataclass(frozen=True)
class QuantSpec:
    """How flow becomes uint8; recorded in the manifest so readers never guess."""

    scheme: str = "bound"
    bound: float = 20.0
    rounding: str = ROUNDING

    def __post_init__(self):
        if self.rounding not in ROUNDINGS or (self.rounding != ROUNDING and self.scheme != "bound"):
            raise InputError(f"rounding {self.rounding!r} is not one of {list(ROUNDINGS)} "
                             f"(only 'bound' stores may declare {ROUNDINGS[1]!r})")
        SCHEMES[self.scheme].check(self)

    def to_manifest(self) -> dict:
        out = {"scheme": self.scheme, "levels": LEVELS, "rounding": self.rounding, "dtype": "uint8"}
        out.update(SCHEMES[self.scheme].manifest(self))
        return out

    @classmethod
    def from_manifest(cls, entry: dict) -> "QuantSpec":
        return cls(scheme=entry["scheme"], bound=float(entry.get("bound", 20.0)),
                   rounding=entry.get("rounding", ROUNDING))


class BoundScheme(QuantScheme):
    """Clip to ``[-bound, bound]`` pixels and map linearly (Simonyan & Zisserman, TSN)."""

    def check(self, spec: QuantSpec) -> None:
        if not (spec.bound > 0 and np.isfinite(spec.bound)):
            raise InputError(f"quantization bound must be a positive number of pixels, got {spec.bound!r}")

    def manifest(self, spec: QuantSpec) -> dict:
        if spec.rounding == "truncate":
            return {"bound": float(spec.bound),
                    "formula": "q = floor((clip(v, -bound, bound) + bound) * 255 / (2 * bound))",
                    "inverse": "v = (q + 0.5) * 2 * bound / 255 - bound"}
        return {"bound": float(spec.bound),
                "formula": "q = rint((clip(v, -bound, bound) + bound) * 255 / (2 * bound))",
                "inverse": "v = q * 2 * bound / 255 - bound"}

    def quantize(self, flow: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, None]:
        b = np.float32(spec.bound)
        scaled = (np.clip(flow, -b, b) + b) * np.float32(LEVELS / (2 * spec.bound))
        rounded = np.floor(scaled) if spec.rounding == "truncate" else np.rint(scaled)
        return rounded.astype(np.uint8), None

    def dequantize(self, q: np.ndarray, spec: QuantSpec, value_range: np.ndarray | None) -> np.ndarray:
        q = q.astype(np.float32)
        if spec.rounding == "truncate":  # level q holds [q, q + 1) steps: read its centre
            q = q + np.float32(0.5)
        return q * np.float32(2 * spec.bound / LEVELS) - np.float32(spec.bound)


class MinMaxScheme(QuantScheme):
    """Per flow and component, map ``[min, max]`` linearly; the range is stored beside the flow."""

    per_flow_range = True

    def manifest(self, spec: QuantSpec) -> dict:
        return {"formula": "q = rint((v - lo) * 255 / (hi - lo)), per flow and component",
                "inverse": "v = lo + q * (hi - lo) / 255"}

    def quantize(self, flow: np.ndarray, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
        lo = flow.reshape(-1, 2).min(axis=0)
        hi = flow.reshape(-1, 2).max(axis=0)
        span = hi - lo
        scale = np.divide(np.float32(LEVELS), span, out=np.zeros_like(span), where=span > 0)
        q = np.rint((flow - lo) * scale).astype(np.uint8)
        rng = np.array([lo[0], hi[0], lo[1], hi[1]], dtype=np.float32)
        return q, rng

    def dequantize(self, q: np.ndarray, spec: QuantSpec, value_range: np.ndarray | None) -> np.ndarray:
        if value_range is None:
            raise InputError("minmax quantization needs the per-flow range (lo_x, hi_x, lo_y, hi_y)")
        lo = np.array([value_range[0], value_range[2]], dtype=np.float32)
        hi = np.array([value_range[1], value_range[3]], dtype=np.float32)
        return lo + q.astype(np.float32) * ((hi - lo) / np.float32(LEVELS))


register_quant_scheme("bound", BoundScheme())
register_quant_scheme("minmax", MinMaxScheme())


def quantize(flow: np.ndarray, spec: QuantSpec = QuantSpec()) -> tuple[np.ndarray, np.ndarray | None]:
    """Float ``(H, W, 2)`` flow in pixels -> (uint8 ``(H, W, 2)``, range or None).

    The range is float32 ``(lo_x, hi_x, lo_y, hi_y)`` for ``minmax`` and None for ``bound``.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise InputError(f"flow must have shape (H, W, 2), got {flow.shape}")
    return SCHEMES[spec.scheme].quantize(flow, spec)


def dequantize(q: np.ndarray, spec: QuantSpec = QuantSpec(), value_range: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(H, W, 2)`` -> float32 flow in pixels (the inverse map; see module docstring)."""
    return SCHEMES[spec.scheme].dequantize(np.asarray(q), spec, value_range)


def mirror_level(spec: QuantSpec) -> int:
    """The level ``m`` with ``q -> m - q`` negating the value: 255 for rounded levels (``q · step
    - bound`` is symmetric about 127.5). A ``truncate`` store reads level ``q`` at its centre
    ``(q + 0.5) · step - bound``, so the negation lies at level ``254 - q`` (255, which only
    ``+bound`` itself reaches, becomes 0, i.e. ``-bound``)."""
    return LEVELS - 1 if spec.scheme == "bound" and spec.rounding == "truncate" else LEVELS


def mirror_levels(q: np.ndarray, mirror: int = LEVELS) -> np.ndarray:
    """``mirror - q`` in uint8, clipped at 0 (see :func:`mirror_level`)."""
    if mirror == LEVELS:
        return LEVELS - q
    return np.clip(mirror - q.astype(np.int16), 0, LEVELS).astype(np.uint8)


def flip_horizontal(q: np.ndarray, value_range: np.ndarray | None = None,
                    spec: QuantSpec | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror stored flow left-right: columns reversed and ``q_x -> m - q_x``, ``m`` the
    :func:`mirror_level` of ``spec`` (255 unless the store truncates).

    Returns the flipped uint8 flow and, for ``minmax``, the flipped range ``(-hi_x, -lo_x, lo_y, hi_y)``.
    """
    flipped = q[:, ::-1].copy()
    flipped[..., 0] = mirror_levels(flipped[..., 0], LEVELS if spec is None else mirror_level(spec))
    if value_range is None:
        return flipped, None
    lo_x, hi_x, lo_y, hi_y = value_range
    return flipped, np.array([-hi_x, -lo_x, lo_y, hi_y], dtype=np.float32)


def quantization_step(spec: QuantSpec) -> float:
    """Pixel size of one quantization level for ``bound`` (the worst-case rounding error is half)."""
    return 2 * spec.bound / LEVELS
