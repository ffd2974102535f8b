"""Read a flowstore store: committed videos only, handles opened lazily in each process."""
from __future__ import annotations

import heapq
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..quantize import QuantSpec, dequantize
from .backend import ShardReader
from .shards import open_shard
from .catalog import Catalog, decode_value, open_catalog, tail_entries
from .format import CATALOG_DIR, COMMIT_LOG, FORWARD, MANIFEST, RGB, SHARD_DIR, shard_path, store_directions, store_setting
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


class LazyManifest(Mapping):
    """A store's header with a ``videos`` key whose list of entries is built on first access."""

    def __init__(self, header: dict, entries):
        self._header, self._entries, self._videos = header, entries, None

    def __getitem__(self, key):
        if key == "videos":
            if self._videos is None:
                self._videos = list(self._entries())
            return self._videos
        return self._header[key]

    def __iter__(self):
        yield from (k for k in self._header if k != "videos")
        yield "videos"

    def __len__(self) -> int:
        return len([k for k in self._header if k != "videos"]) + 1


class VideoIds(Sequence):
    """The committed video ids of a store opened through its catalog, sorted, read-only and lazy:
    ``len`` and ``in`` cost no more than a lookup, iteration merges the catalog's segments with
    the log tail. Positional indexing (``videos[i]``, slices) reads every id into a list on its
    first use (O(n) once; ``list(reader.videos)`` does the same)."""

    # It holds the catalog and the log tail, not the reader: no reference cycle, so a reader
    # dropped without close() releases its shard maps at once (refcounting, not the cyclic GC).
    def __init__(self, root: Path, catalog: Catalog, tail: dict[str, dict], count: int):
        self._root, self._catalog, self._tail, self._count = root, catalog, tail, count
        self._list: list[str] | None = None

    def __len__(self) -> int:
        return self._count

    def __contains__(self, video) -> bool:
        return video in self._tail or self._catalog.lookup(video) is not None

    def __iter__(self) -> Iterator[str]:
        if self._list is not None:
            return iter(self._list)
        return self._iter_ids()

    def _iter_ids(self) -> Iterator[str]:
        stream = heapq.merge((key.decode("utf-8") for key, _, _ in self._catalog.items()), sorted(self._tail))
        last = None
        for vid in stream:
            if vid != last:
                last = vid
                yield vid

    def __getitem__(self, index):
        if self._list is None:
            self._list = list(self._iter_ids())
        return self._list[index]

    def __eq__(self, other) -> bool:
        if isinstance(other, (Sequence, VideoIds)) and not isinstance(other, str):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"VideoIds({len(self)} videos of {self._root})"

    def __getstate__(self):
        return {**self.__dict__, "_list": None}


class StoreReader:
    """``open_store(path)``: the committed videos of a store (a
    :class:`~flowstore.store.source.RecordSource`).

    ``check=True`` verifies the CRC-32 of every record read (cheap next to decoding).
    ``readahead=False`` turns the OS read-ahead off for LMDB shards (see
    :class:`~flowstore.store.lmdb_backend.LMDBShardReader`: for stores much larger than RAM on
    disks with a large read_ahead_kb). Safe to hand to DataLoader workers: shard handles are
    dropped when pickled or forked and reopened on first use in the new process.

    Opening reads the catalog (format 1.2) and the log lines past it: no work that grows with
    the store. ``videos`` is then a lazy :class:`VideoIds`; stores without a usable catalog
    (written by flowstore before 1.2, or a catalog that is stale) are read whole, the 1.1 way,
    and ``videos`` is a list. ``manifest`` (header + every entry) is built on first use: O(n);
    ``header`` is the header alone. At most ``max_open_shards`` shard handles are kept open
    (least recently used closed first; a handle a reader thread is using is never closed under
    it), so a loader worker stays within a low file-descriptor limit.
    """

    DEFAULT_MAX_OPEN_SHARDS = 64
    _ENTRY_CACHE = 4096  # decoded catalog entries kept per reader

    def __init__(self, path: str | os.PathLike, *, check: bool = False, readahead: bool = True,
                 max_open_shards: int = DEFAULT_MAX_OPEN_SHARDS):
        self.root = Path(path)
        self.check = check
        self.readahead = readahead
        if int(max_open_shards) < 1:
            raise InputError(f"max_open_shards must be at least 1, got {max_open_shards}")
        self.max_open_shards = int(max_open_shards)
        self._open_index()
        self.backend: str = self.header["backend"]
        self.quant = QuantSpec.from_manifest(self.header["quantization"])
        self.flow_codec: str = self.header["flow"]["codec"]
        self.frame_codec: str = self.header["frames"]["codec"]
        self.stride: int = int(self.header.get("stride", 1))
        #: the flow directions the store holds (format 1.2 ``directions``; forward before 1.2)
        self.directions: tuple[str, ...] = store_directions(self.header)
        self._handles: OrderedDict[str, list] = OrderedDict()  # shard -> [handle, users, size at open]
        self._pid = os.getpid()
        self._lock = threading.Lock()  # reader threads (loader read-ahead) may open shards at once

    def _open_index(self) -> None:
        path = self.root / MANIFEST
        if not path.exists():  # the same message as the full read
            load_manifest(self.root)
        opened = open_catalog(self.root)
        self._entry_cache: OrderedDict[str, dict] = OrderedDict()
        if opened is None:  # the 1.1 way: every entry of manifest.json and commits.jsonl
            manifest = load_manifest(self.root)
            self.header = {k: v for k, v in manifest.items() if k != "videos"}
            self._catalog = None
            self._entries = {v["id"]: v for v in manifest["videos"]}
            self._min_sizes = shard_min_sizes(manifest["videos"])
            self._count = len(self._entries)
            self.videos: Sequence[str] = sorted(self._entries)
            self._manifest = manifest
            return
        self._catalog, lines = opened
        self.header = self._catalog.doc["header"]
        self._entries = tail_entries(lines, self.header, self.root / COMMIT_LOG)
        self._min_sizes = dict(self._catalog.doc["shard_sizes"])
        for shard, size in shard_min_sizes(self._entries.values()).items():
            self._min_sizes[shard] = max(size, self._min_sizes.get(shard, 0))
        self._count = self._catalog.doc["videos"] + self._catalog.count_new(self._entries)
        self.videos = VideoIds(self.root, self._catalog, self._entries, self._count)
        self._manifest = None

    @property
    def manifest(self) -> Mapping:
        """The header plus ``videos`` = every committed entry sorted by id, as
        :func:`~flowstore.store.manifest.load_manifest` gives it (a read-only mapping). The
        header keys cost nothing; ``manifest["videos"]`` is built on first use: O(n)."""
        if self._manifest is not None:  # read whole at open (no catalog)
            return self._manifest
        return LazyManifest(self.header, self.iter_entries)  # not kept: no reader <-> manifest cycle

    def iter_entries(self) -> Iterator[dict]:
        """Every committed entry in id order (a merge of the catalog's segments and the log
        tail; no list of them all is held)."""
        if self._catalog is None:
            for v in self.videos:
                yield self._entries[v]
            return
        yield from (self.entry(v) for v in self.videos)

    def _has(self, video: str) -> bool:
        return video in self._entries if self._catalog is None else video in self.videos

    # -- bookkeeping -----------------------------------------------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_entry_cache"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._count

    def __contains__(self, video: str) -> bool:
        return self._has(video)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._pid == os.getpid():
            for handle, _, _ in self._handles.values():
                handle.close()
        self._handles = OrderedDict()
        if self._catalog is not None:
            self._catalog.close()

    def entry(self, video: str) -> dict:
        e = self._entries.get(video)
        if e is not None:
            return e
        if self._catalog is not None:
            with self._lock:
                e = self._entry_cache.get(video)
                if e is not None:
                    self._entry_cache.move_to_end(video)
                    return e
            hit = self._catalog.lookup(video)
            if hit is not None:
                e = decode_value(hit[0], video, self.header, f"{self.root}/{CATALOG_DIR}/{hit[1]}")
                with self._lock:
                    self._entry_cache[video] = e
                    if len(self._entry_cache) > self._ENTRY_CACHE:
                        self._entry_cache.popitem(last=False)
                return e
        some = list(itertools.islice(iter(self.videos), 3))
        hint = f"; e.g. {some}" if some else " (the store has no committed videos)"
        raise UnknownNameError(f"video {video!r} is not in store {self.root}{hint}")

    def shard_of(self, video: str) -> str:
        """The shard file name holding ``video`` (see :class:`~flowstore.store.source.RecordSource`)."""
        return str(self.entry(video)["shard"])

    def failures(self) -> list[dict]:
        return load_failures(self.root, self)

    # -- shard handles: a bounded LRU, counted while in use ----------------------------------
    @contextmanager
    def _using(self, video: str) -> Iterator[ShardReader]:
        """The open shard of ``video`` for the duration of a read: counted as in use, so that
        no other thread's eviction closes it meanwhile."""
        slot = self._acquire(video)
        try:
            yield slot[0]
        finally:
            with self._lock:
                slot[1] -= 1
                self._evict()

    def _acquire(self, video: str) -> list:
        if self._pid != os.getpid():  # forked: the parent's handles must not be used here
            self._handles, self._pid, self._lock = OrderedDict(), os.getpid(), threading.Lock()
        entry = self.entry(video)
        shard = entry["shard"]
        with self._lock:
            slot = self._handles.get(shard)
            if slot is None:
                # opened under the lock: two threads must not open one LMDB file at once
                path = shard_path(self.root, shard)
                handle = open_shard(self.backend, self.root, shard, video=video,
                                    min_size=self._min_sizes.get(shard, 0), readahead=self.readahead)
                try:
                    size = os.stat(path).st_size
                except OSError:
                    size = 0
                slot = self._handles[shard] = [handle, 0, size]
            else:
                self._handles.move_to_end(shard)
            if int(entry.get("shard_size", 0)) > slot[2]:
                raise DamagedStoreError(f"shard {SHARD_DIR}/{shard} of video {video!r} in {self.root} is cut short: "
                                        f"{slot[2]:,} bytes, its commit says at least {int(entry['shard_size']):,}")
            slot[1] += 1
            self._evict()
            return slot

    def _evict(self) -> None:
        """Close least recently used handles no thread is using, down to max_open_shards."""
        if len(self._handles) <= self.max_open_shards:
            return
        for shard in [s for s, slot in self._handles.items() if slot[1] == 0]:
            if len(self._handles) <= self.max_open_shards:
                break
            self._handles.pop(shard)[0].close()

    def _shard(self, video: str) -> ShardReader:
        """The open handle of ``video``'s shard (tests and tools; reads go through ``_using``)."""
        with self._using(video) as handle:
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
        with self._using(video) as shard:
            return shard.get(video, RGB, index, check=self.check)

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
        with self._using(video) as shard:
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
        with self._using(video) as shard:
            raw = shard.get(video, kind, index, check=self.check)
        return unpack_range(raw, f"{video}/{kind}/{index}")

    def flow(self, video: str, index: int, direction: str = FORWARD) -> np.ndarray:
        """Dequantized flow, float32 ``(H, W, 2)`` in pixels; ``direction="backward"``: backward
        flow ``index``, from frame ``index + stride`` to frame ``index``."""
        return dequantize(self.flow_q(video, index, direction), self.quant, self.flow_range(video, index, direction))

    def info(self) -> dict:
        m = self.header
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
                for v in self.iter_entries()
            ],
            "failures": self.failures(),
        }
