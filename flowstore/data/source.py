"""Records of a sample's snippets: which ones, reading them from a source, decoding them to uint8.

A sample is read in two halves so that reader threads can do the first while a worker does the
second (:mod:`flowstore.data.readahead`): :func:`read_snippets` (I/O: the encoded records, a
dict) and :func:`decode_snippets` (CPU: uint8 channel-first arrays, a
:class:`~flowstore.data.transforms.Clip`). Both read through the
:class:`~flowstore.store.source.RecordSource` protocol.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import DamagedStoreError, InputError
from ..quantize import mirror_level
from ..store.source import RecordSource
from .sampling import DEFAULT_STACKING, STACKINGS, Stacking, snippet_indices
from .transforms import Clip, trajectory_snippets
from ..store.records import decode_flow_component, decode_frame


def open_source(store) -> RecordSource:
    """A path opens a StoreReader; an already open source (a StoreReader, a RawframesReader, an
    in-memory copy: any :class:`~flowstore.store.source.RecordSource`) is used as is."""
    if isinstance(store, (str, os.PathLike)):
        from .. import open_store

        return open_store(store)
    if not isinstance(store, RecordSource):
        raise InputError(f"{type(store).__name__} is not a store path or a RecordSource "
                         "(see flowstore.store.source)")
    return store


def source_name(source: RecordSource) -> str:
    """How messages name a source: ``store <root>``."""
    return f"store {source.root}"


def record_indices(source: RecordSource, video: str, starts, length: int,
                   modality: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """``(flow indices (S, L), frame indices)`` the snippets at ``starts`` need, None for a kind
    the modality does not read. Frames: ``(S, L)`` for rgb; for ``both``, ``(S, 1)``: each
    snippet's frame in the middle of its flow snippet, ``start + length // 2``."""
    starts = np.asarray(starts, np.int64)
    flows = frames = None
    if modality in ("flow", "both"):
        flows = snippet_indices(starts, length, source.num_flows(video))
    if modality == "rgb":
        frames = snippet_indices(starts, length, source.num_frames(video))
    elif modality == "both":
        frames = np.minimum(starts + length // 2, source.num_frames(video) - 1)[:, None]
    return flows, frames


def check_stacking(source: RecordSource, stacking: str, length: int) -> Stacking:
    """The stacking ``stacking`` (:data:`~flowstore.data.sampling.STACKINGS`), checked against
    what ``source`` holds and the snippet length: InputError naming the source and the fix."""
    spec = STACKINGS[stacking]
    spec.directions_of(length)  # bidirectional: L even
    missing = [d for d in spec.directions if d not in source.directions]
    if missing:
        raise InputError(f"{stacking} stacking needs {' and '.join(missing)} flow, but {source_name(source)} holds "
                         f"{' and '.join(source.directions)} flow only; extract the videos with "
                         f"`flowstore extract --direction both` into a new --out and read that store")
    if spec.trajectory and getattr(source, "stride", 1) != 1:
        raise InputError(f"trajectory stacking follows flow i into flow i+1, so it needs a stride-1 store; "
                         f"{source_name(source)} has stride {source.stride}")
    return spec


def read_snippets(source: RecordSource, video: str, starts, length: int, modality: str,
                  stacking: str = DEFAULT_STACKING) -> dict:
    """The encoded records of the snippets at ``starts``: ``{"starts", "flow": (xs, ys),
    "flow_range" (minmax only), "rgb": rows of frame bytes, "stacking"}`` as the modality has
    them; the flows in the directions the stacking reads them (sampling.py, "Stackings")."""
    starts = np.asarray(starts, np.int64)
    flows, frames = record_indices(source, video, starts, length, modality)
    directions = STACKINGS[stacking].directions_of(length) if flows is not None else None
    raw = read_records(source, video, starts, flows, frames, directions)
    raw["stacking"] = stacking
    return raw


def read_records(source: RecordSource, video: str, starts, flows: np.ndarray | None,
                 frames: np.ndarray | None, directions: tuple[str, ...] | None = None) -> dict:
    """The encoded records at explicit ``(S, L)`` flow and frame indices (None: not read), in
    :func:`read_snippets`'s layout (video clips with a frame interval read this way); column
    ``l`` of ``flows`` is read in ``directions[l]`` (default: all forward)."""
    raw = {"starts": np.asarray(starts, np.int64)}
    if flows is not None:
        S, L = flows.shape
        directions = directions or ("forward",) * L
        xs, ys = [b""] * (S * L), [b""] * (S * L)
        ranges = [None] * (S * L)
        for direction in dict.fromkeys(directions):  # one read per direction, in order of appearance
            cols = [l for l in range(L) if directions[l] == direction]
            slots = [s * L + l for s in range(S) for l in cols]
            indices = [int(flows[s, l]) for s in range(S) for l in cols]
            got_x, got_y = source.flow_bytes(video, indices, direction)
            for k, slot in enumerate(slots):
                xs[slot], ys[slot] = got_x[k], got_y[k]
                if source.quant.scheme == "minmax":
                    ranges[slot] = source.flow_range(video, indices[k], direction)
        raw["flow"] = (xs, ys)
        if source.quant.scheme == "minmax":
            raw["flow_range"] = np.stack(ranges)
    if frames is not None:
        raw["rgb"] = [[source.frame_bytes(video, int(i)) for i in row] for row in frames]
    return raw


def decode_flow_snippets(xs, ys, codec: str, out: np.ndarray) -> np.ndarray:
    """Flow records (x and y components, snippet by snippet) into ``out`` ``(S, 2L, H, W)``,
    x/y interleaved."""
    L, h, w = out.shape[1] // 2, out.shape[2], out.shape[3]
    for k, (bx, by) in enumerate(zip(xs, ys)):
        s, l = divmod(k, L)
        out[s, 2 * l] = decode_flow_component(bx, codec, (h, w))
        out[s, 2 * l + 1] = decode_flow_component(by, codec, (h, w))
    return out


def decode_rgb_snippets(rows, codec: str, out: np.ndarray) -> np.ndarray:
    """Rows of RGB frame records (one row per snippet) into ``out`` ``(S, 3L, H, W)``."""
    h, w = out.shape[2], out.shape[3]
    for s, row in enumerate(rows):
        for l, data in enumerate(row):
            out[s, 3 * l:3 * l + 3] = decode_frame(data, codec, (h, w)).transpose(2, 0, 1)
    return out


def decode_snippets(source: RecordSource, video: str, raw: dict, length: int, out: Clip | None = None) -> Clip:
    """Decoded uint8 channel-first snippets from :func:`read_snippets`'s records; written into
    ``out``'s arrays when given (e.g. a slot of a batch in shared memory). A record that does
    not decode is a damaged store: DamagedStoreError naming the source, video and shard."""
    try:
        return _decode_snippets(source, video, raw, length, out)
    except (InputError, DamagedStoreError) as exc:
        raise DamagedStoreError(f"{source_name(source)}: video {video!r} in shard {source.shard_of(video)}: "
                                f"a record does not decode ({exc.message})") from None


def _decode_snippets(source: RecordSource, video: str, raw: dict, length: int, out: Clip | None) -> Clip:
    w, h = source.frame_size(video)
    S, L = len(raw["starts"]), length
    clip = Clip(flow_mirror=mirror_level(source.quant))
    if "flow" in raw:
        xs, ys = raw["flow"]
        flow = out.flow if out is not None and out.flow is not None else np.empty((S, 2 * L, h, w), np.uint8)
        if STACKINGS[raw.get("stacking", DEFAULT_STACKING)].trajectory:
            stored = decode_flow_snippets(xs, ys, source.flow_codec, np.empty((S, 2 * L, h, w), np.uint8))
            ranges = raw["flow_range"].reshape(S, L, 4) if "flow_range" in raw else None
            if ranges is None and source.quant.scheme == "minmax":
                raise InputError("trajectory stacking of minmax flow needs its ranges to dequantize it")
            clip.flow, clip.flow_range = trajectory_snippets(stored, source.quant, ranges, out=flow)
        else:
            clip.flow = decode_flow_snippets(xs, ys, source.flow_codec, flow)
            if "flow_range" in raw:
                clip.flow_range = raw["flow_range"].reshape(S, L, 4)
    if "rgb" in raw:
        rows = raw["rgb"]
        rgb = (out.rgb if out is not None and out.rgb is not None
               else np.empty((S, 3 * len(rows[0]), h, w), np.uint8))
        clip.rgb = decode_rgb_snippets(rows, source.frame_codec, rgb)
    return clip


_OPEN_LOCK = threading.Lock()


class ShardOpener:
    """Opens each shard of a source once per process, under a lock, before the first read of
    it: StoreReader opens shards lazily, and two reader threads must not open the same one at
    once (LMDB refuses a second open). Sources without shards are left alone. It holds names,
    not handles: StoreReader keeps at most ``max_open_shards`` handles open (an LRU) and opens an
    evicted shard again under its own lock, so what this remembers may since have been closed."""

    def __init__(self):
        self._opened: set[str] = set()
        self._pid = None

    def __call__(self, source: RecordSource, video: str) -> None:
        shard = source.shard_of(video)
        if shard is None:
            return
        pid = os.getpid()
        if self._pid != pid:  # forked: this process has opened nothing yet
            self._opened, self._pid = set(), pid
        if shard not in self._opened:
            with _OPEN_LOCK:
                if shard not in self._opened:
                    source.flow_bytes(video, [], source.directions[0])  # opens the shard handle, reads nothing
                    self._opened.add(shard)

    def __getstate__(self):
        return {"_opened": set(), "_pid": None}  # a new process opens its own shards


__all__ = [
    "ShardOpener", "check_stacking", "decode_flow_snippets", "decode_rgb_snippets", "decode_snippets", "open_source",
    "read_records", "read_snippets", "record_indices", "source_name",
]
