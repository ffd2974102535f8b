"""One registry per axis (storage backends, flow methods, codecs, decoders, quantization schemes,
backbones, heads, fusions), as timm does it: a table that registration fills, a query function
listing its names, and a lookup whose error names the choices.

An entry may be a ``"package.module:attr"`` reference instead of the object itself: the table
then knows the name without importing the module (an OpenCV-only run never imports torch, and
``flowstore --help`` imports neither torch nor numpy); :func:`resolve` imports it when it is used.
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

from .errors import UnknownNameError

T = TypeVar("T")


def load_object(reference: str) -> Any:
    """``"package.module:attr"`` -> the object, importing the module."""
    module, _, attr = reference.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve(entry: Any) -> Any:
    """A registered entry, its ``"module:attr"`` reference imported if it is one."""
    return load_object(entry) if isinstance(entry, str) else entry


class Registry(Mapping[str, T], Generic[T]):
    """Names of one ``kind`` (``"codec"``, ``"fusion"``, ...) -> entries, in registration order.

    A read-only mapping for its users; :meth:`register` and :meth:`unregister` change it.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name is registered once (unregister it first)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> T:
        entry = self[name]
        del self._entries[name]
        return entry

    def names(self) -> list[str]:
        """The registered names, sorted (what every query function and error message lists)."""
        return sorted(self._entries)

    def unknown(self, name: str, *, also: str = "") -> UnknownNameError:
        """The error for a name not in the table; ``also`` adds choices outside it."""
        return UnknownNameError(f"unknown {self.kind} {name!r}; choose from {self.names()}{also}")

    def check(self, name: str) -> str:
        """``name`` if it is registered, else :class:`~flowstore.errors.UnknownNameError`."""
        if name not in self._entries:
            raise self.unknown(name)
        return name

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise self.unknown(name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"


class FieldView(Mapping[str, Any]):
    """A live read-only mapping name -> one attribute of each entry (e.g. a backend's suffix)."""

    def __init__(self, registry: Registry, field: str):
        self._registry = registry
        self._field = field

    def __getitem__(self, name: str) -> Any:
        return getattr(self._registry[name], self._field)

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry)

    def __len__(self) -> int:
        return len(self._registry)
