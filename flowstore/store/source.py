"""The one interface the loaders read encoded records through: :class:`RecordSource`.

:class:`~flowstore.store.reader.StoreReader` (a store's shards),
:class:`~flowstore.data.rawframes.RawframesReader` (an exported mmaction2 rawframes tree) and
the loader benchmark's in-memory copy (:class:`~flowstore.bench.loader.InMemorySource`) all
implement it, so a dataset never has to ask which kind it was given. Indices are 0-based.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import InputError
from ..quantize import QuantSpec


@runtime_checkable
class RecordSource(Protocol):
    """Encoded frames and flows of committed videos, plus what decoding them needs."""

    #: where the records come from (a store, a rawframes tree; an in-memory copy names its origin)
    root: Path
    #: the video ids, sorted
    videos: list[str]
    #: how the flows were quantized (to dequantize them)
    quant: QuantSpec
    #: codecs of the flow components and of the RGB frames (``jpeg``, ``png``, ``raw``)
    flow_codec: str
    frame_codec: str
    #: the flow directions it holds, in :data:`~flowstore.store.format.DIRECTIONS` order:
    #: ``("forward",)``, ``("backward",)`` or both (a store's ``directions`` setting, format 1.2)
    directions: tuple[str, ...]

    def num_frames(self, video: str) -> int: ...

    def num_flows(self, video: str) -> int: ...

    def frame_size(self, video: str) -> tuple[int, int]:
        """``(width, height)`` of the video's frames and flows."""

    def frame_bytes(self, video: str, index: int) -> bytes: ...

    def flow_bytes(self, video: str, indices, direction: str = "forward") -> tuple[list[bytes], list[bytes]]:
        """Encoded x and y components of the flows of ``direction`` at ``indices`` (backward
        flow i goes from frame i + stride to frame i). A direction not in :attr:`directions`
        raises :class:`~flowstore.errors.InputError` naming the source and the fix."""

    def flow_range(self, video: str, index: int, direction: str = "forward") -> np.ndarray | None:
        """``(lo_x, hi_x, lo_y, hi_y)`` float32 for minmax quantization, None otherwise."""

    def shard_of(self, video: str) -> str | None:
        """The shard holding ``video``, None for sources without shards. Readers that open
        shards lazily are read from several threads: the loader opens each shard once first."""

    def close(self) -> None:
        """Release open handles (a no-op for sources that hold none)."""


#: the :attr:`RecordSource.directions` of a source holding forward flow only
FORWARD_ONLY = ("forward",)


def check_forward_only(direction: str, what: str) -> None:
    """For sources holding forward flow only (a rawframes tree, an in-memory copy of forward
    stacks): ``direction`` must be ``"forward"``; ``what`` names the source in the error."""
    if direction != "forward":
        raise InputError(f"{what} has no {direction} flow, only forward flow; read a flowstore store "
                         f"extracted with --direction both for {direction} flow")


__all__ = ["FORWARD_ONLY", "RecordSource", "check_forward_only"]
