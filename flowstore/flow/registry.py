"""Registry of optical-flow methods and engines.

A *method* is an algorithm name the user types (``farneback``, ``tvl1``, ``gmflow``,
``ptlflow:NAME``); an *engine* is an implementation of it (``opencv`` on the CPU, ``torch`` on
any torch device, ``ptlflow`` for learned models). Builders are registered per
``(method, engine)`` and called with keyword arguments only.

Every estimator works on whole batches of RGB uint8 frames so that batched GPU engines and
one-pair-at-a-time OpenCV share one calling convention::

    est = build_flow("farneback")              # OpenCV on the CPU
    prepared = [est.prepare(rgb) for rgb in frames]   # once per frame (e.g. to grayscale)
    flows = est.compute(prepared[:-1], prepared[1:])  # (B, H, W, 2) float32, pixels
"""
from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

#: method name -> {engine name -> builder}
METHODS: dict[str, dict[str, Callable[..., "FlowEstimator"]]] = {}
#: engine used when the user names a method but no engine and no device
DEFAULT_ENGINE: dict[str, str] = {}


class FlowEstimator(abc.ABC):
    """Dense optical flow from frame t to frame t+1: (u, v) in pixels, u to the right, v down."""

    #: registry name of the method, e.g. "tvl1"
    method: str = ""
    #: implementation, e.g. "opencv" or "torch"
    engine: str = ""
    #: torch device string or "cpu"
    device: str = "cpu"
    #: how many pairs :meth:`compute` is best fed at once
    batch_size: int = 1

    def prepare(self, rgb: np.ndarray) -> Any:
        """Per-frame preprocessing done once per frame (a frame is in two pairs)."""
        return rgb

    @abc.abstractmethod
    def compute(self, prev: Sequence[Any], nxt: Sequence[Any]) -> np.ndarray:
        """Flow for each pair ``(prev[k], nxt[k])`` as float32 ``(B, H, W, 2)``."""

    @abc.abstractmethod
    def describe(self) -> dict:
        """What goes into the manifest: method, engine, library, library_version, device, params."""

    def __call__(self, rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
        """Flow of one RGB pair, ``(H, W, 2)`` float32."""
        return self.compute([self.prepare(rgb1)], [self.prepare(rgb2)])[0]


def register_flow(method: str, engine: str, *, default: bool = False):
    """Decorator registering ``builder(**kwargs) -> FlowEstimator`` for ``(method, engine)``."""

    def wrap(builder):
        METHODS.setdefault(method, {})[engine] = builder
        if default or method not in DEFAULT_ENGINE:
            DEFAULT_ENGINE[method] = engine
        return builder

    return wrap


def _load_builtin_engines() -> None:
    # Imported lazily so that `import flowstore` does not pay for torch.
    from . import opencv  # noqa: F401

    for optional in ("torch_engines", "learned"):
        try:
            __import__(f"{__package__}.{optional}")
        except ImportError as exc:  # missing optional module while it is being written
            if f"{__package__}.{optional}" not in str(exc):
                raise


def available_methods() -> list[str]:
    _load_builtin_engines()
    return sorted(METHODS)


def resolve_engine(method: str, *, engine: str | None = None, device: str | None = None) -> str:
    """Pick the engine: an explicit one wins; a device means torch; else the method's default."""
    _load_builtin_engines()
    if method.startswith("ptlflow:") or method in METHODS and set(METHODS[method]) == {"ptlflow"}:
        return "ptlflow"
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {sorted(METHODS)} or 'ptlflow:NAME'")
    if engine is not None:
        if engine not in METHODS[method]:
            raise ValueError(
                f"method {method!r} has no engine {engine!r}; choose from {sorted(METHODS[method])}"
            )
        return engine
    if device is not None and "torch" in METHODS[method]:
        return "torch"
    return DEFAULT_ENGINE[method]


def build_flow(
    method: str,
    *,
    engine: str | None = None,
    device: str | None = None,
    params: dict | None = None,
    **options: Any,
) -> FlowEstimator:
    """Build a flow estimator; ``params`` are algorithm parameters recorded in the manifest,
    ``options`` are run settings (batch size, checkpoint path, fp16) for engines that take them."""
    engine = resolve_engine(method, engine=engine, device=device)
    if method.startswith("ptlflow:"):
        builder = METHODS["ptlflow:*"]["ptlflow"]
        return builder(model_name=method.split(":", 1)[1], device=device, params=params or {}, **options)
    builder = METHODS[method][engine]
    kwargs: dict[str, Any] = {"params": params or {}}
    if device is not None:
        kwargs["device"] = device
    kwargs.update(options)
    return builder(**kwargs)


def check_params(method: str, given: dict, defaults: dict) -> dict:
    """Merge user parameters over defaults, rejecting unknown names with the list of valid ones."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for method {method!r}; choose from {sorted(defaults)}"
        )
    merged = dict(defaults)
    for key, value in given.items():
        merged[key] = type(defaults[key])(value) if defaults[key] is not None else value
    return merged
