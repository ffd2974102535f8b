"""LMDB shards: one file each (``subdir=False``), no lock file (flowstore has its own writer lock)."""
from __future__ import annotations

import os
import struct
import threading
import zlib
from collections.abc import Iterator

import lmdb

from .backend import ShardReader, ShardWriter
from .format import CRC_HEADER, pack_record, record_key, unpack_record
from ..errors import DamagedStoreError, MissingFileError, MissingRecordError

# Address space only: LMDB files grow as written. 1 TiB fits any shard of whole videos.
MAP_SIZE = 1 << 40
# Records per write transaction: bounds the writer's memory for hour-long videos. Partial
# transactions of a video are harmless: the video is visible only once committed to the log.
RECORDS_PER_TXN = 512
# Within a transaction records are written grouped by kind, in this order. LMDB places large
# values on pages in write order, so a stack of consecutive flows ends up contiguous on disk
# (two runs, x and y) instead of interleaved with the RGB frames: fewer scattered reads cold.
WRITE_ORDER = ("flow_x", "flow_y", "flow_range", "rgb")


class LMDBShardWriter(ShardWriter):
    def __init__(self, path: str):
        super().__init__(path)
        self._env = None
        self._video = None
        self._pending: dict[str, list[tuple[bytes, bytes]]] = {}
        self._count = 0

    def begin_video(self, video_id: str) -> None:
        # Opened per video and closed after it, so no handle outlives a committed video.
        self._env = lmdb.open(
            self.path, subdir=False, lock=False, map_size=MAP_SIZE, sync=True, metasync=True,
            readahead=False, meminit=False, max_dbs=0,
        )
        self._video = video_id
        self._pending, self._count = {}, 0

    def put(self, kind: str, index: int, payload: bytes) -> None:
        self._pending.setdefault(kind, []).append((record_key(self._video, kind, index), pack_record(payload)))
        self._count += 1
        if self._count >= RECORDS_PER_TXN:
            self._write_pending()

    def _write_pending(self) -> None:
        kinds = [k for k in WRITE_ORDER if k in self._pending] + sorted(set(self._pending) - set(WRITE_ORDER))
        with self._env.begin(write=True) as txn:
            for kind in kinds:
                for key, value in self._pending[kind]:
                    txn.put(key, value)
        self._pending, self._count = {}, 0

    def end_video(self) -> None:
        self._write_pending()
        self._env.sync(True)
        self._env.close()
        self._env = None

    def abort_video(self) -> None:
        self._pending, self._count = {}, 0
        if self._env is not None:
            self._env.close()
            self._env = None


# What LMDB trusts without checking when it maps a file: its two meta pages (page 0 and page 1,
# LMDB 0.9 on a 64-bit machine). A meta page is a 16-byte page header, then the meta: magic and
# version (uint32 each), address, map size, two database records of 48 bytes (the free-page DB's
# first field holds the page size), the last used page number and the transaction id (uint64).
# LMDB maps the file and touches pages up to the newest meta's last page: past the end of a
# file cut short that is a bus error, so the file size is checked against both metas first.
_META = struct.Struct("<II8xQ I44x 48x QQ")
_META_OFFSET = 16
LMDB_MAGIC = 0xBEEFC0DE
LMDB_DATA_VERSION = 1
# How far a shard may grow while a reader has it open (a writer still appending videos): the
# reader maps this much beyond the file's size at open (address space only). A writer moves to
# a new shard past --shard-size (default 1 GiB), so a shard grows by at most that plus a video.
READER_GROWTH = 2 << 30


def check_lmdb_file(path: str, size: int) -> None:
    """Raise DamagedStoreError unless the file's meta pages are LMDB's and every page they
    reach lies inside its ``size`` bytes."""
    with open(path, "rb") as f:
        head = f.read(_META_OFFSET + _META.size)
        if len(head) < _META_OFFSET + _META.size:
            raise DamagedStoreError(f"not an LMDB file ({size} bytes, too short for its meta page)")
        magic, version, _, page_size, last_page, _ = _META.unpack_from(head, _META_OFFSET)
        if magic != LMDB_MAGIC or version != LMDB_DATA_VERSION:
            raise DamagedStoreError(f"not an LMDB file (meta page 0: magic {magic:#x}, version {version})")
        if page_size < 512 or page_size & (page_size - 1) or page_size > (1 << 16):
            raise DamagedStoreError(f"LMDB meta page 0 gives a page size of {page_size}")
        f.seek(page_size)
        second = f.read(_META_OFFSET + _META.size)
    if len(second) < _META_OFFSET + _META.size:
        raise DamagedStoreError(f"cut short: {size:,} bytes, less than LMDB's two meta pages of {page_size}")
    for number, meta in enumerate((head, second)):
        magic, version, _, _, last_page, _ = _META.unpack_from(meta, _META_OFFSET)
        if magic != LMDB_MAGIC or version != LMDB_DATA_VERSION:
            raise DamagedStoreError(f"LMDB meta page {number} is damaged (magic {magic:#x}, version {version})")
        if (last_page + 1) * page_size > size:
            raise DamagedStoreError(f"cut short: {size:,} bytes, LMDB meta page {number} uses "
                                    f"{(last_page + 1) * page_size:,} ({last_page + 1} pages of {page_size})")


def _damaged(path: str, what: str, exc: lmdb.Error) -> DamagedStoreError:
    if isinstance(exc, lmdb.MapResizedError):
        return DamagedStoreError(f"{path}: {what}: the shard grew by more than {READER_GROWTH >> 30} GiB "
                                 "since this reader opened it; open the store again")
    return DamagedStoreError(f"{path}: {what}: damaged shard ({exc.__class__.__name__}: {exc})")


# LMDB forbids opening one environment twice in a process, so readers of the same shard (two
# open_store() calls, reader threads) share one handle, counted. A forked child inherits the
# parent's open handles (py-lmdb refuses to open the file again there) and reuses them: they are
# read-only maps with lock=False, so there is no lock table or reader slot to corrupt.
_SHARED_ENVS: dict[str, list] = {}
_SHARED_LOCK = threading.Lock()


def _acquire_env(path: str, readahead: bool):
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        slot = _SHARED_ENVS.get(key)
        if slot is None:
            env = lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=readahead, max_readers=2048,
                            map_size=os.path.getsize(path) + READER_GROWTH)
            slot = _SHARED_ENVS[key] = [env, 0]
        slot[1] += 1
        return slot[0]


def _release_env(path: str) -> None:
    key = os.path.realpath(path)
    with _SHARED_LOCK:
        slot = _SHARED_ENVS.get(key)
        if slot is None:
            return
        slot[1] -= 1
        if slot[1] <= 0:
            del _SHARED_ENVS[key]
            slot[0].close()


class LMDBShardReader(ShardReader):
    """``readahead=True`` (default) keeps the OS read-ahead on for the shard's map: records are
    written grouped by kind, so a stack's flow_x records (and its flow_y records) are neighbours
    in the file and the first page fault brings in the rest. With ``False`` (MADV_RANDOM) every
    4 KB page is its own disk read: ~3x slower cold here, but nothing is read that was not asked
    for, which matters for stores much larger than RAM on disks with a large read_ahead_kb
    (the read-around per fault is that size; see docs/benchmarks.md). The first reader of a
    shard in a process decides: the environment is shared."""

    def __init__(self, path: str, *, readahead: bool = True):
        super().__init__(path, readahead=readahead)
        if not os.path.exists(path):
            raise MissingFileError(f"shard {path} is missing")
        self._env = _acquire_env(path, readahead)

    check_file = staticmethod(check_lmdb_file)

    def get(self, video_id: str, kind: str, index: int, *, check: bool = False) -> bytes:
        return self.get_many(video_id, kind, (index,), check=check)[0]

    def get_many(self, video_id: str, kind: str, indices, *, check: bool = False) -> list[bytes]:
        out = []
        try:
            with self._env.begin(buffers=False) as txn:
                for index in indices:
                    value = txn.get(record_key(video_id, kind, index))
                    if value is None:
                        raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
                    out.append(unpack_record(value, check=check, what=f"{self.path}: {video_id}/{kind}/{index}"))
        except lmdb.Error as exc:
            raise _damaged(self.path, f"video {video_id!r} {kind} records", exc) from None
        return out

    def iter_records(self, video_id: str, kind: str, count: int) -> Iterator[tuple[int, bytes, bool]]:
        try:
            with self._env.begin(buffers=False) as txn:
                for index in range(count):
                    value = txn.get(record_key(video_id, kind, index))
                    if value is None:
                        raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
                    payload = value[CRC_HEADER.size:]
                    ok = len(value) >= CRC_HEADER.size and zlib.crc32(payload) == CRC_HEADER.unpack_from(value)[0]
                    yield index, payload, ok
        except lmdb.Error as exc:
            raise _damaged(self.path, f"video {video_id!r} {kind} records", exc) from None

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env = None
            _release_env(self.path)

    # a reader dropped without close() (e.g. a garbage-collected StoreReader) must release the
    # shared map too, or its pages stay mapped (and resident) for the life of the process
    __del__ = close
