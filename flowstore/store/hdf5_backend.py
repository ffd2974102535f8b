"""HDF5 shards: per video and record kind, one concatenated uint8 dataset plus offsets and CRCs.

Fixed-type chunked datasets instead of variable-length ones: reading record ``i`` is one slice,
and offsets are read once per video and cached.
"""
from __future__ import annotations

import errno
import os
import zlib
from collections.abc import Iterator

import h5py
import numpy as np

from .backend import ShardReader, ShardWriter
from .format import hdf5_group
from ..io import fsync_path
from ..errors import DamagedStoreError, MissingFileError, MissingRecordError

CHUNK_BYTES = 1 << 18
FLUSH_BYTES = 4 << 20  # buffered payload bytes per kind before they are appended to the file
# HDF5 does not survive ENOSPC (h5py can crash while closing a file whose writes failed), so
# the writer refuses to start a write that would leave less than this much room.
SPACE_MARGIN = 2 << 20


def _ensure_space(path: str, needed: int) -> None:
    stats = os.statvfs(path)
    free = stats.f_bavail * stats.f_frsize
    if free < needed + SPACE_MARGIN:
        raise OSError(errno.ENOSPC, f"No space left on device ({free:,} bytes free, need {needed + SPACE_MARGIN:,})", path)


class HDF5ShardWriter(ShardWriter):
    def __init__(self, path: str):
        super().__init__(path)
        self._file = None
        self._group = None
        self._buffers: dict[str, list[bytes]] = {}
        self._offsets: dict[str, list[int]] = {}
        self._crcs: dict[str, list[int]] = {}

    def begin_video(self, video_id: str) -> None:
        _ensure_space(self.path, 0)
        # a shard is created empty (O_EXCL) by the allocator; HDF5 needs "w" to initialise it
        mode = "w" if os.path.getsize(self.path) == 0 else "a"
        self._file = h5py.File(self.path, mode)
        name = hdf5_group(video_id)
        if name in self._file:  # left by an aborted attempt in this shard: never committed
            del self._file[name]
        self._group = self._file.create_group(name)
        self._buffers, self._offsets, self._crcs = {}, {}, {}

    def put(self, kind: str, index: int, payload: bytes) -> None:
        offsets = self._offsets.setdefault(kind, [0])
        if index != len(offsets) - 1:
            raise ValueError(f"{kind} record {index} out of order (expected {len(offsets) - 1})")
        self._buffers.setdefault(kind, []).append(payload)
        self._crcs.setdefault(kind, []).append(zlib.crc32(payload))
        offsets.append(offsets[-1] + len(payload))
        if sum(map(len, self._buffers[kind])) >= FLUSH_BYTES:
            self._flush(kind)

    def _flush(self, kind: str) -> None:
        chunk = b"".join(self._buffers.get(kind, []))
        self._buffers[kind] = []
        _ensure_space(self.path, len(chunk))
        name = f"{kind}_data"
        if name not in self._group:
            self._group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.uint8, chunks=(CHUNK_BYTES,))
        data = self._group[name]
        start = data.shape[0]
        data.resize((start + len(chunk),))
        if chunk:
            data[start:] = np.frombuffer(chunk, np.uint8)

    def end_video(self) -> None:
        pending = sum(len(b) for buffers in self._buffers.values() for b in buffers)
        _ensure_space(self.path, pending + 12 * sum(map(len, self._offsets.values())))
        for kind in self._offsets:
            self._flush(kind)
            self._group.create_dataset(f"{kind}_offsets", data=np.asarray(self._offsets[kind], np.int64))
            self._group.create_dataset(f"{kind}_crc32", data=np.asarray(self._crcs[kind], np.uint32))
        self._file.close()
        self._file = self._group = None
        fsync_path(self.path)

    def abort_video(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._group = None


class HDF5ShardReader(ShardReader):
    def __init__(self, path: str, *, readahead: bool = True):
        super().__init__(path, readahead=readahead)
        if not os.path.exists(path):
            raise MissingFileError(f"shard {path} is missing")
        self._file = h5py.File(path, "r")
        self._index: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, h5py.Dataset]] = {}

    def _lookup(self, video_id: str, kind: str):
        key = (video_id, kind)
        if key not in self._index:
            name = hdf5_group(video_id)
            if name not in self._file or f"{kind}_offsets" not in self._file[name]:
                raise MissingRecordError(f"{self.path}: no {kind} records for video {video_id!r}")
            group = self._file[name]
            self._index[key] = (group[f"{kind}_offsets"][()], group[f"{kind}_crc32"][()], group[f"{kind}_data"])
        return self._index[key]

    def _payload(self, video_id: str, kind: str, index: int, check: bool) -> bytes:
        offsets, crcs, data = self._lookup(video_id, kind)
        if not 0 <= index < len(crcs):
            raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
        payload = data[offsets[index]:offsets[index + 1]].tobytes()
        if check and zlib.crc32(payload) != int(crcs[index]):
            raise DamagedStoreError(f"checksum mismatch in {self.path}: {video_id}/{kind}/{index}")
        return payload

    def get(self, video_id: str, kind: str, index: int, *, check: bool = False) -> bytes:
        return self._payload(video_id, kind, index, check)

    def get_many(self, video_id: str, kind: str, indices, *, check: bool = False) -> list[bytes]:
        indices = list(indices)
        offsets, _, data = self._lookup(video_id, kind)
        if indices and indices == list(range(indices[0], indices[0] + len(indices))) and indices[-1] < len(offsets) - 1:
            # consecutive records (a flow stack): one contiguous read
            lo, hi = offsets[indices[0]], offsets[indices[-1] + 1]
            blob = data[lo:hi].tobytes()
            out = [blob[offsets[i] - lo:offsets[i + 1] - lo] for i in indices]
            if check:
                _, crcs, _ = self._lookup(video_id, kind)
                for i, payload in zip(indices, out):
                    if zlib.crc32(payload) != int(crcs[i]):
                        raise DamagedStoreError(f"checksum mismatch in {self.path}: {video_id}/{kind}/{i}")
            return out
        return [self._payload(video_id, kind, i, check) for i in indices]

    def iter_records(self, video_id: str, kind: str, count: int) -> Iterator[tuple[int, bytes, bool]]:
        offsets, crcs, data = self._lookup(video_id, kind)
        if len(crcs) < count:
            raise MissingRecordError(f"{self.path}: video {video_id!r} has {len(crcs)} {kind} records, manifest says {count}")
        start = 0
        while start < count:  # windows of ~FLUSH_BYTES keep memory bounded on long videos
            end = start + 1
            while end < count and offsets[end + 1] - offsets[start] <= FLUSH_BYTES:
                end += 1
            blob = data[offsets[start]:offsets[end]].tobytes()
            for i in range(start, end):
                payload = blob[offsets[i] - offsets[start]:offsets[i + 1] - offsets[start]]
                yield i, payload, zlib.crc32(payload) == int(crcs[i])
            start = end

    def close(self) -> None:
        self._file.close()
