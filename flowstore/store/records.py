"""The record layout, both ways: how a frame and a flow become records of a store, and how
records become arrays again. The writer (extraction), the reader, the loaders and ``verify``
all go through here, so the layout is written once (docs/FORMAT.md, "Records").

A frame is one ``rgb`` record. A flow is two uint8 component records, ``flow_x`` and
``flow_y``, plus, for ``minmax`` quantization only, a ``flow_range`` record: 16 bytes, float32
little-endian ``lo_x, hi_x, lo_y, hi_y``. A backward flow (format 1.2, stores whose
``directions`` hold ``"backward"``) is the same with the kinds ``flow_bx``, ``flow_by`` and
``flow_brng`` (:data:`~.format.DIRECTION_KINDS`).
"""
from __future__ import annotations

import struct
import zlib
from typing import NamedTuple

import numpy as np

from ..codec import decode_gray, decode_rgb, encode_gray, encode_rgb
from ..errors import DamagedStoreError, UnknownNameError
from ..quantize import QuantSpec, dequantize, quantize
from .format import DIRECTION_KINDS, DIRECTIONS, FORWARD, KINDS, RGB

#: the component records of one (forward) flow, in (u, v) order
FLOW_COMPONENTS = DIRECTION_KINDS[FORWARD][:2]
#: the minmax range kinds of every direction (16-byte records, not images)
RANGE_KINDS = tuple(kinds[2] for kinds in DIRECTION_KINDS.values())
RANGE_DTYPE = "<f4"
RANGE_BYTES = 4 * np.dtype(RANGE_DTYPE).itemsize


class Record(NamedTuple):
    kind: str
    index: int
    payload: bytes


def check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise UnknownNameError(f"unknown flow direction {direction!r}; choose from {list(DIRECTIONS)}")
    return direction


def flow_components(direction: str = FORWARD) -> tuple[str, str]:
    """The ``(x, y)`` component record kinds of one flow of ``direction``."""
    return DIRECTION_KINDS[check_direction(direction)][:2]


def range_kind(direction: str = FORWARD) -> str:
    """The minmax range record kind of one flow of ``direction``."""
    return DIRECTION_KINDS[check_direction(direction)][2]


def flow_kinds(scheme: str, direction: str = FORWARD) -> tuple[str, ...]:
    """The record kinds one flow of ``direction`` is stored as under quantization ``scheme``."""
    return flow_components(direction) + ((range_kind(direction),) if scheme == "minmax" else ())


def record_counts(entry: dict, scheme: str, directions=(FORWARD,)) -> list[tuple[str, int]]:
    """``(kind, count)`` for every kind a committed video entry promises in a store holding flow
    of ``directions`` (:func:`~.format.store_directions` of its header)."""
    return [(RGB, int(entry["num_frames"]))] + [(kind, int(entry["num_flows"]))
                                                for d in DIRECTIONS if d in directions for kind in flow_kinds(scheme, d)]


def records_crc32(crcs: dict[str, list[int]]) -> int:
    """A video entry's ``records_crc32`` (docs/FORMAT.md, section 3): the CRC-32 of the records'
    own CRC-32s, each as 4 little-endian bytes, kind by kind (rgb, flow_x, flow_y, flow_range,
    then the backward kinds flow_bx, flow_by, flow_brng) in index order; absent kinds add
    nothing. ``crcs`` maps a kind to its records' CRC-32s in index order."""
    digest = 0
    for kind in KINDS:
        values = crcs.get(kind, ())
        digest = zlib.crc32(struct.pack(f"<{len(values)}I", *values), digest)
    return digest


# -- writing ------------------------------------------------------------------------------
def frame_records(index: int, rgb: np.ndarray, codec: str, quality: int | None) -> list[Record]:
    return [Record(RGB, index, encode_rgb(rgb, codec, quality))]


def flow_records(index: int, flow: np.ndarray, quant: QuantSpec, codec: str, quality: int | None,
                 direction: str = FORWARD) -> list[Record]:
    """Quantize and encode one float flow ``(H, W, 2)`` of ``direction`` into its records."""
    q, value_range = quantize(flow, quant)
    records = [Record(kind, index, encode_gray(np.ascontiguousarray(q[..., c]), codec, quality))
               for c, kind in enumerate(flow_components(direction))]
    if value_range is not None:
        records.append(Record(range_kind(direction), index, pack_range(value_range)))
    return records


def pack_range(value_range: np.ndarray) -> bytes:
    return np.asarray(value_range).astype(RANGE_DTYPE).tobytes()


# -- reading ------------------------------------------------------------------------------
def unpack_range(payload: bytes, where: str = "flow_range record") -> np.ndarray:
    """``(lo_x, hi_x, lo_y, hi_y)`` float32 from a ``flow_range`` record."""
    if len(payload) != RANGE_BYTES:
        raise DamagedStoreError(f"{where}: {len(payload)} bytes, a flow range has {RANGE_BYTES}")
    return np.frombuffer(payload, RANGE_DTYPE).astype(np.float32)


def _of_shape(decode, payload: bytes, codec: str, shape: tuple[int, int]) -> np.ndarray:
    """``decode(payload)``, refused as damaged unless it is an image of ``shape`` (H, W), the
    size its video entry records (a raw record of another length, a record of another store)."""
    try:
        image = decode(payload, codec, shape)
    except ValueError as exc:
        if isinstance(exc, DamagedStoreError) or codec != "raw":
            raise
        raise DamagedStoreError(f"a raw record of {len(payload)} bytes is not a {shape[1]}x{shape[0]} image") from None
    if image.shape[:2] != tuple(shape):
        raise DamagedStoreError(f"a record decodes to {image.shape[1]}x{image.shape[0]}, "
                                f"its video entry says {shape[1]}x{shape[0]}")
    return image


def decode_frame(payload: bytes, codec: str, shape: tuple[int, int]) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)``; ``shape`` is ``(H, W)``."""
    return _of_shape(decode_rgb, payload, codec, shape)


def decode_flow_component(payload: bytes, codec: str, shape: tuple[int, int]) -> np.ndarray:
    """One stored component, uint8 ``(H, W)``."""
    return _of_shape(decode_gray, payload, codec, shape)


def decode_flow_q(x: bytes, y: bytes, codec: str, shape: tuple[int, int]) -> np.ndarray:
    """The stored uint8 flow ``(H, W, 2)`` from its component records."""
    return np.dstack([decode_flow_component(x, codec, shape), decode_flow_component(y, codec, shape)])


def decode_flow(x: bytes, y: bytes, range_payload: bytes | None, quant: QuantSpec, codec: str,
                shape: tuple[int, int]) -> np.ndarray:
    """Dequantized float32 flow ``(H, W, 2)`` in pixels from its records."""
    value_range = unpack_range(range_payload) if range_payload is not None else None
    return dequantize(decode_flow_q(x, y, codec, shape), quant, value_range)
