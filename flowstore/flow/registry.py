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
from ..errors import InputError

#: method name -> {engine name -> builder}
METHODS: dict[str, dict[str, Callable[..., "FlowEstimator"]]] = {}


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


def register_flow(method: str, engine: str):
    """Decorator registering ``builder(**kwargs) -> FlowEstimator`` for ``(method, engine)``."""

    def wrap(builder):
        METHODS.setdefault(method, {})[engine] = builder
        return builder

    return wrap


#: which module registers which engine; imported only when that engine is needed, so that an
#: OpenCV run never pays for importing torch or ptlflow
ENGINE_MODULES = {"opencv": "opencv", "torch": "torch_engines", "ptlflow": "learned"}
#: the engines of each method, known without importing them; the first is the default
KNOWN_METHODS = {
    "farneback": ("opencv", "torch"),
    "tvl1": ("opencv", "torch"),
    "gmflow": ("ptlflow",),
}


def _load_engine(engine: str) -> None:
    import importlib

    try:
        importlib.import_module(f"{__package__}.{ENGINE_MODULES[engine]}")
    except ModuleNotFoundError as exc:  # an engine module not in this install
        if exc.name != f"{__package__}.{ENGINE_MODULES[engine]}":
            raise


def _load_builtin_engines() -> None:
    for engine in ENGINE_MODULES:
        _load_engine(engine)


def available_methods() -> list[str]:
    return sorted(set(KNOWN_METHODS) | set(METHODS) - {"ptlflow:*"})


def resolve_engine(method: str, *, engine: str | None = None, device: str | None = None) -> str:
    """Pick the engine: an explicit one wins; a device means torch; else the method's default."""
    if method.startswith("ptlflow:"):
        engines: tuple[str, ...] = ("ptlflow",)
    elif method in KNOWN_METHODS or method in METHODS:
        engines = tuple(dict.fromkeys(KNOWN_METHODS.get(method, ()) + tuple(METHODS.get(method, {}))))
    else:
        raise InputError(f"unknown method {method!r}; choose from {available_methods()} or 'ptlflow:NAME'")
    if engine is not None:
        if engine not in engines:
            raise InputError(f"method {method!r} has no engine {engine!r}; choose from {sorted(engines)}")
        return engine
    if device is not None and "torch" in engines:
        return "torch"
    return engines[0]


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
    _load_engine(engine)
    if method.startswith("ptlflow:"):
        builder = METHODS["ptlflow:*"]["ptlflow"]
        return builder(model_name=method.split(":", 1)[1], device=device, params=params or {}, **options)
    if engine not in METHODS.get(method, {}):
        raise InputError(f"method {method!r} has no engine {engine!r} in this install")
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
        raise InputError(
            f"unknown parameter(s) {unknown} for method {method!r}; choose from {sorted(defaults)}"
        )
    merged = dict(defaults)
    for key, value in given.items():
        merged[key] = type(defaults[key])(value) if defaults[key] is not None else value
    return merged
