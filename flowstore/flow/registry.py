"""Registry of optical-flow methods and engines.

A *method* is an algorithm name the user types (``farneback``, ``tvl1``, ``ptlflow:NAME`` and
its short names ``gmflow``, ``neuflow2``, ... listed in :data:`.catalog.LEARNED_MODELS`); an *engine* is an implementation of it (``opencv`` on the CPU, ``torch`` on
any torch device, ``ptlflow`` for learned models). :data:`METHODS` is the one table: a method
holds its engines' builders in preference order (the first is its default), each registered
with :func:`register_flow` and called with keyword arguments only. The built-in engines are
registered at the end of this module as ``"module:function"`` references, so that an OpenCV
run never imports torch or ptlflow. A method named ``FAMILY:*`` (``ptlflow:*``) stands for
every ``FAMILY:NAME``; its builder gets ``model_name=NAME``.

Every estimator works on whole batches of RGB uint8 frames so that batched GPU engines and
one-pair-at-a-time OpenCV share one calling convention::

    est = build_flow("farneback")              # OpenCV on the CPU
    prepared = [est.prepare(rgb) for rgb in frames]   # once per frame (e.g. to grayscale)
    flows = est.compute(prepared[:-1], prepared[1:])  # (B, H, W, 2) float32, pixels
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Union

from ..errors import InputError, UnknownNameError
from .catalog import LEARNED_MODELS
from ..registry import Registry, resolve

if TYPE_CHECKING:  # numpy is not imported to look a method up
    import numpy as np

#: a builder, or its "module:function" reference
Builder = Union[Callable[..., "FlowEstimator"], str]
#: method name -> {engine name -> builder}, engines in preference order
METHODS: Registry[dict[str, Builder]] = Registry("method")
#: the name of a family of methods ``FAMILY:NAME``
_FAMILY = ":*"


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


def register_flow(method: str, engine: str, builder: Builder | None = None):
    """Register ``builder(**kwargs) -> FlowEstimator`` (or its ``"module:function"``) as engine
    ``engine`` of ``method``; without ``builder``, a decorator. The first engine registered for a
    method is its default."""
    if builder is None:
        return lambda function: register_flow(method, engine, function)
    engines = METHODS[method] if method in METHODS else METHODS.register(method, {})
    if engine in engines:
        raise ValueError(f"method {method!r} has an engine {engine!r} already")
    engines[engine] = builder
    return builder


def list_methods() -> list[str]:
    """The method names, sorted; a family ``FAMILY:*`` is listed by :func:`list_families`."""
    return [name for name in METHODS.names() if not name.endswith(_FAMILY)]


def list_families() -> list[str]:
    """How a family of methods is written, e.g. ``["ptlflow:NAME"]``."""
    return [name.removesuffix(_FAMILY) + ":NAME" for name in METHODS.names() if name.endswith(_FAMILY)]


def list_engines(method: str | None = None) -> list[str]:
    """The engines of ``method`` in preference order (the default first), or every engine, sorted."""
    if method is None:
        return sorted({engine for engines in METHODS.values() for engine in engines})
    return list(_method_entry(method)[0])


def describe_methods() -> str:
    """The methods as a sentence for help texts: ``"farneback, gmflow, ..., tvl1 or ptlflow:NAME"``."""
    names = list_methods() + list_families()
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


#: the former name of :func:`list_methods`
available_methods = list_methods


def _method_entry(method: str) -> tuple[dict[str, Builder], str | None]:
    """The engines of ``method`` and, for a family member ``FAMILY:NAME``, the model name."""
    if method in METHODS and not method.endswith(_FAMILY):
        return METHODS[method], None
    family, sep, model_name = method.partition(":")
    if sep and family + _FAMILY in METHODS:
        return METHODS[family + _FAMILY], model_name
    also = "".join(f" or {name!r}" for name in list_families())
    raise UnknownNameError(f"unknown method {method!r}; choose from {list_methods()}{also}")


def resolve_engine(method: str, *, engine: str | None = None, device: str | None = None) -> str:
    """Pick the engine: an explicit one wins; a device means torch; else the method's default."""
    engines = list(_method_entry(method)[0])
    if engine is not None:
        if engine not in engines:
            raise InputError(f"method {method!r} has no engine {engine!r}; choose from {sorted(engines)}")
        return engine
    if device is not None and "torch" in engines:
        return "torch"
    return engines[0]


def _load_builder(method: str, engine: str, builder: Builder) -> Callable[..., FlowEstimator]:
    try:
        return resolve(builder)
    except ModuleNotFoundError as exc:  # an engine module not in this install
        if exc.name != builder.partition(":")[0]:
            raise
        raise InputError(f"method {method!r} has no engine {engine!r} in this install") from None


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
    engines, model_name = _method_entry(method)
    builder = _load_builder(method, engine, engines[engine])
    if model_name is not None:
        return builder(model_name=model_name, device=device, params=params or {}, **options)
    kwargs: dict[str, Any] = {"params": params or {}}
    if device is not None:
        kwargs["device"] = device
    kwargs.update(options)
    return builder(**kwargs)


@dataclasses.dataclass(frozen=True)
class Range:
    """The valid values of one numeric flow parameter: bounds (``gt``/``ge``/``lt``/``le``) or a
    set of ``choices``; ``note`` says what the values mean where that helps."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    note: str = ""

    def contains(self, value) -> bool:
        if self.choices is not None:
            return value in self.choices
        return not ((self.gt is not None and not value > self.gt) or (self.ge is not None and not value >= self.ge)
                    or (self.lt is not None and not value < self.lt) or (self.le is not None and not value <= self.le))

    def __str__(self) -> str:
        if self.note:
            return self.note
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low = f"({self.gt:g}" if self.gt is not None else f"[{self.ge:g}" if self.ge is not None else ""
        high = f"{self.lt:g})" if self.lt is not None else f"{self.le:g}]" if self.le is not None else ""
        if low and high:
            return f"in {low}, {high}"
        if low:
            return ("> " if low[0] == "(" else ">= ") + low[1:]
        return ("< " if high[-1] == ")" else "<= ") + high[:-1]


def _typed(method: str, key: str, value, default):
    """``value`` as the type of ``default`` (int params take whole numbers only, never bools)."""
    kind = type(default)
    if kind not in (int, float) or default is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        what = "a whole number" if kind is int else "a number"
        raise InputError(f"parameter {key}={value!r} of method {method!r} must be {what}")
    return kind(value)


def check_params(method: str, given: dict, defaults: dict, ranges: dict | None = None) -> dict:
    """Merge user parameters over defaults, rejecting unknown names with the list of valid ones
    and values outside ``ranges`` (name -> :class:`Range`) with the valid range."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise InputError(
            f"unknown parameter(s) {unknown} for method {method!r}; choose from {sorted(defaults)}"
        )
    merged = dict(defaults)
    for key, value in given.items():
        merged[key] = _typed(method, key, value, defaults[key])
        valid = (ranges or {}).get(key)
        if valid is not None and not valid.contains(merged[key]):
            raise InputError(f"parameter {key}={value!r} of method {method!r} is out of range: must be {valid}")
    return merged


# the built-in engines, first the default of each method
register_flow("farneback", "opencv", f"{__package__}.opencv:build_opencv_farneback")
register_flow("farneback", "torch", f"{__package__}.torch_engines:build_torch_farneback")
register_flow("tvl1", "opencv", f"{__package__}.opencv:build_opencv_tvl1")
register_flow("tvl1", "torch", f"{__package__}.torch_engines:build_torch_tvl1")


def _learned_short_name(model_name: str) -> Callable[..., FlowEstimator]:
    """The builder of the short name ``model_name`` of ``ptlflow:model_name``; the ptlflow engine
    is imported when it is called, not when a method is looked up."""
    def build(**options: Any) -> FlowEstimator:
        return resolve(f"{__package__}.learned:build_short_name")(model_name=model_name, **options)
    build.__qualname__ = build.__name__ = f"build_{model_name}"
    return build


for _name in LEARNED_MODELS:  # gmflow, neuflow2, ...: short names of ptlflow:NAME
    register_flow(_name, "ptlflow", _learned_short_name(_name))
register_flow("ptlflow:*", "ptlflow", f"{__package__}.learned:build_ptlflow_model")
