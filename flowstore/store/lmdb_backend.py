"""LMDB shards: one file each (``subdir=False``), no lock file (flowstore has its own writer lock)."""
from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator

import lmdb

from .backend import ShardReader, ShardWriter
from .format import CRC_HEADER, pack_record, record_key, unpack_record
from ..errors import MissingFileError, MissingRecordError

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
            env = lmdb.open(path, subdir=False, readonly=True, lock=False, readahead=readahead, max_readers=2048)
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

    def get(self, video_id: str, kind: str, index: int, *, check: bool = False) -> bytes:
        with self._env.begin(buffers=False) as txn:
            value = txn.get(record_key(video_id, kind, index))
        if value is None:
            raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
        return unpack_record(value, check=check, what=f"{self.path}: {video_id}/{kind}/{index}")

    def get_many(self, video_id: str, kind: str, indices, *, check: bool = False) -> list[bytes]:
        out = []
        with self._env.begin(buffers=False) as txn:
            for index in indices:
                value = txn.get(record_key(video_id, kind, index))
                if value is None:
                    raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
                out.append(unpack_record(value, check=check, what=f"{self.path}: {video_id}/{kind}/{index}"))
        return out

    def iter_records(self, video_id: str, kind: str, count: int) -> Iterator[tuple[int, bytes, bool]]:
        with self._env.begin(buffers=False) as txn:
            for index in range(count):
                value = txn.get(record_key(video_id, kind, index))
                if value is None:
                    raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
                payload = value[CRC_HEADER.size:]
                ok = len(value) >= CRC_HEADER.size and zlib.crc32(payload) == CRC_HEADER.unpack_from(value)[0]
                yield index, payload, ok

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env = None
            _release_env(self.path)

    # a reader dropped without close() (e.g. a garbage-collected StoreReader) must release the
    # shared map too, or its pages stay mapped (and resident) for the life of the process
    __del__ = close
