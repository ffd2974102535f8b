"""Streams: the feature stores (``rgb``, ``flow``, ...) that heads are trained on and scored with."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass
class Stream:
    """One open feature store a head reads, under its stream name."""

    name: str
    path: str
    provenance: dict
    store: object  # FeatureStore

    def digest(self) -> dict:
        """What a head trained on this stream depends on (checked again at evaluation)."""
        from ..features.store import settings_of

        return settings_of(self.provenance)


def open_streams(paths, names=None, *, kind: str = "vectors", needed_by: str = "train-head") -> list[Stream]:
    """Open feature stores of ``kind`` (``"vectors"``, or ``"maps"`` for the mid-conv fusion; the
    other kind is refused naming ``needed_by``); stream names come from their provenance
    (``rgb``, ``flow``), made unique with ``_2``, ``_3`` ... unless ``names`` are given."""
    from ..features.store import open_features

    paths = [str(p) for p in paths]
    if not paths:
        raise InputError("give at least one --features file")
    if names and len(names) != len(paths):
        raise InputError(f"{len(names)} --name value(s) for {len(paths)} --features file(s)")
    out, seen = [], {}
    for i, p in enumerate(paths):
        fs = open_features(p)
        try:
            fs.require(kind, needed_by)
        except InputError:
            fs.close()
            for opened in out:
                opened.store.close()
            raise
        prov = fs.provenance
        if names:
            name = names[i]
        else:
            base = str(prov.get("stream") or f"stream{i}")
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        out.append(Stream(name=name, path=str(Path(p).resolve()), provenance=prov, store=fs))
    if len({s.name for s in out}) != len(out):
        raise InputError(f"stream names must differ, got {[s.name for s in out]}")
    return out


def stream_features(stream: Stream, videos: list[str], views: int | None = None) -> np.ndarray:
    """float32 features of ``videos`` (all views, or the first ``views``)."""
    x = stream.store.features(videos)
    if views is not None:
        if not 1 <= views <= x.shape[1]:
            raise InputError(f"--views {views}: {stream.name} features have {x.shape[1]} view(s)")
        x = x[:, :views]
    return x.astype(np.float32, copy=False)


__all__ = ["Stream", "open_streams", "stream_features"]
