"""Read a flowstore store: committed videos only, handles opened lazily in each process."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..quantize import QuantSpec, dequantize
from .backend import ShardReader
from .shards import open_shard
from .format import FORWARD, RGB, store_directions, store_setting
from .records import decode_flow_q, decode_frame, flow_components, range_kind, unpack_range
from .manifest import load_failures, load_manifest
from ..errors import DamagedStoreError, InputError, OutOfRangeError, UnknownNameError


def shard_min_sizes(entries) -> dict[str, int]:
    """Per shard, the largest ``shard_size`` its committed entries record (format 1.1): the
    shard can be no shorter. Entries of 1.0 stores have none (0: no size check)."""
    sizes: dict[str, int] = {}
    for e in entries:
        sizes[e["shard"]] = max(sizes.get(e["shard"], 0), int(e.get("shard_size", 0)))
    return sizes


class StoreReader:
    """``open_store(path)``: the committed videos of a store (a
    :class:`~flowstore.store.source.RecordSource`).

    ``check=True`` verifies the CRC-32 of every record read (cheap next to decoding).
    ``readahead=False`` turns the OS read-ahead off for LMDB shards (see
    :class:`~flowstore.store.lmdb_backend.LMDBShardReader`: for stores much larger than RAM on
    disks with a large read_ahead_kb). Safe to hand to DataLoader workers: shard handles are
    dropped when pickled or forked and reopened on first use in the new process.
    """

    def __init__(self, path: str | os.PathLike, *, check: bool = False, readahead: bool = True):
        self.root = Path(path)
        self.check = check
        self.readahead = readahead
        self.manifest = load_manifest(self.root)
        self._entries = {v["id"]: v for v in self.manifest["videos"]}
        self._min_sizes = shard_min_sizes(self.manifest["videos"])
        self.videos: list[str] = sorted(self._entries)
        self.backend: str = self.manifest["backend"]
        self.quant = QuantSpec.from_manifest(self.manifest["quantization"])
        self.flow_codec: str = self.manifest["flow"]["codec"]
        self.frame_codec: str = self.manifest["frames"]["codec"]
        self.stride: int = int(self.manifest.get("stride", 1))
        #: the flow directions the store holds (format 1.2 ``directions``; forward before 1.2)
        self.directions: tuple[str, ...] = store_directions(self.manifest)
        self._handles: dict[str, ShardReader] = {}
        self._pid = os.getpid()
        self._lock = threading.Lock()  # reader threads (loader read-ahead) may open shards at once

    # -- bookkeeping -----------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.videos)

    def __contains__(self, video: str) -> bool:
        return video in self._entries

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle in self._handles.values():
                handle.close()
        self._handles = {}

    def entry(self, video: str) -> dict:
        try:
            return self._entries[video]
        except KeyError:
            hint = f"; e.g. {self.videos[:3]}" if self.videos else " (the store has no committed videos)"
            raise UnknownNameError(f"video {video!r} is not in store {self.root}{hint}") from None

    def shard_of(self, video: str) -> str:
        """The shard file name holding ``video`` (see :class:`~flowstore.store.source.RecordSource`)."""
        return str(self.entry(video)["shard"])

    def failures(self) -> list[dict]:
        return load_failures(self.root, set(self._entries))

    def _shard(self, video: str) -> ShardReader:
        if self._pid != os.getpid():  # forked: the parent's handles must not be used here
            self._handles, self._pid, self._lock = {}, os.getpid(), threading.Lock()
        shard = self.entry(video)["shard"]
        handle = self._handles.get(shard)
        if handle is None:
            with self._lock:
                handle = self._handles.get(shard)
                if handle is None:
                    handle = open_shard(self.backend, self.root, shard, video=video,
                                        min_size=self._min_sizes.get(shard, 0), readahead=self.readahead)
                    self._handles[shard] = handle
        return handle

    # -- sizes -----------------------------------------------------------------------------
    def num_frames(self, video: str) -> int:
        return int(self.entry(video)["num_frames"])

    def num_flows(self, video: str) -> int:
        return int(self.entry(video)["num_flows"])

    def frame_size(self, video: str) -> tuple[int, int]:
        """``(width, height)`` of the stored frames and flows of ``video``."""
        e = self.entry(video)
        return int(e["width"]), int(e["height"])

    def _check_index(self, video: str, index: int, count: int, what: str) -> int:
        if not -count <= index < count:
            raise OutOfRangeError(f"{what} index {index} out of range for video {video!r} (0..{count - 1})")
        return index % count

    # -- encoded bytes (for loaders that decode themselves) ---------------------------------
    def frame_bytes(self, video: str, index: int) -> bytes:
        index = self._check_index(video, index, self.num_frames(video), "frame")
        return self._shard(video).get(video, RGB, index, check=self.check)

    def check_direction(self, direction: str) -> str:
        """``direction`` if the store holds flow of it, else an InputError saying how to get it."""
        if direction not in self.directions:
            flow_components(direction)  # an unknown name: ValueError naming the choices
            raise InputError(f"store {self.root} holds no {direction} flow (its directions: {list(self.directions)}); "
                             f"extract it with --direction both (or --direction {direction})")
        return direction

    def flow_bytes(self, video: str, indices, direction: str = FORWARD) -> tuple[list[bytes], list[bytes]]:
        """Encoded x and y components of several flows in one go (e.g. a stack of L flows);
        ``direction="backward"``: backward flow i, from frame i + stride to frame i."""
        kind_x, kind_y = flow_components(self.check_direction(direction))
        n = self.num_flows(video)
        indices = [self._check_index(video, i, n, "flow") for i in indices]
        shard = self._shard(video)
        return (shard.get_many(video, kind_x, indices, check=self.check),
                shard.get_many(video, kind_y, indices, check=self.check))

    # -- decoded ---------------------------------------------------------------------------
    def frame(self, video: str, index: int) -> np.ndarray:
        """RGB uint8 ``(H, W, 3)``."""
        w, h = self.frame_size(video)
        payload = self.frame_bytes(video, index)
        return self._decoded(video, f"frame {index}", decode_frame, payload, self.frame_codec, (h, w))

    def flow_q(self, video: str, index: int, direction: str = FORWARD) -> np.ndarray:
        """Stored uint8 flow ``(H, W, 2)`` (x, y), as quantized."""
        w, h = self.frame_size(video)
        (bx,), (by,) = self.flow_bytes(video, [index], direction)
        return self._decoded(video, f"{direction} flow {index}", decode_flow_q, bx, by, self.flow_codec, (h, w))

    def _decoded(self, video: str, what: str, decode, *args) -> np.ndarray:
        try:
            return decode(*args)
        except (InputError, DamagedStoreError) as exc:  # a record that does not decode: damage
            raise DamagedStoreError(f"{self.root}: video {video!r} {what} in shard {self.shard_of(video)} "
                                    f"does not decode: {exc.message}") from None

    def flow_range(self, video: str, index: int, direction: str = FORWARD) -> np.ndarray | None:
        """``(lo_x, hi_x, lo_y, hi_y)`` float32 for minmax stores, None for bound stores."""
        kind = range_kind(self.check_direction(direction))
        if self.quant.scheme != "minmax":
            return None
        index = self._check_index(video, index, self.num_flows(video), "flow")
        raw = self._shard(video).get(video, kind, index, check=self.check)
        return unpack_range(raw, f"{video}/{kind}/{index}")

    def flow(self, video: str, index: int, direction: str = FORWARD) -> np.ndarray:
        """Dequantized flow, float32 ``(H, W, 2)`` in pixels; ``direction="backward"``: backward
        flow ``index``, from frame ``index + stride`` to frame ``index``."""
        return dequantize(self.flow_q(video, index, direction), self.quant, self.flow_range(video, index, direction))

    def info(self) -> dict:
        m = self.manifest
        return {
            "path": str(self.root),
            "format": m["format"],
            "version": m["format_version"],
            "flowstore_version": m.get("flowstore_version"),
            "backend": self.backend,
            "method": m["flow"].get("method"),
            "engine": m["flow"].get("engine"),
            "flow": m["flow"],
            "frames": m["frames"],
            "quantization": m["quantization"],
            "resize": m.get("resize"),
            "stride": self.stride,
            "directions": list(self.directions),
            "fps": store_setting(m, "fps"),
            "videos": [
                {"id": v["id"], "num_frames": v["num_frames"], "num_flows": v["num_flows"],
                 "width": v["width"], "height": v["height"], "shard": v["shard"], "bytes": v.get("bytes")}
                for v in m["videos"]
            ],
            "failures": self.failures(),
        }
