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
from ..errors import DamagedStoreError, FlowstoreError, MissingFileError, MissingRecordError

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


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# where the superblock (at offset 0 in files flowstore writes) keeps the end-of-file address,
# per superblock version, for 8-byte addresses (HDF5 file format specification, "Superblock")
_EOF_ADDRESS_AT = {0: 40, 1: 44, 2: 28, 3: 28}


def check_hdf5_file(path: str, size: int) -> None:
    """Raise DamagedStoreError unless the file starts with an HDF5 superblock whose end of file
    lies inside its ``size`` bytes (h5py trusts what it parses; garbage can crash it)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if not head.startswith(HDF5_SIGNATURE):
        raise DamagedStoreError(f"not an HDF5 file ({size:,} bytes, no HDF5 signature at its start)")
    version, offset_bytes = head[8], head[13] if head[8] < 2 else head[9]
    at = _EOF_ADDRESS_AT.get(version)
    if at is None or offset_bytes != 8:
        raise DamagedStoreError(f"HDF5 superblock version {version} with {offset_bytes}-byte addresses; "
                                "flowstore writes versions 0-3 with 8-byte addresses")
    end = int.from_bytes(head[at:at + 8], "little") if len(head) >= at + 8 else None
    if end is None or end > size:
        raise DamagedStoreError(f"cut short: {size:,} bytes, its HDF5 superblock says {end:,}" if end is not None
                                else f"cut short: {size:,} bytes, less than an HDF5 superblock")


#: what h5py raises on a damaged file (a flowstore error raised inside is passed on as it is)
_H5_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)


class HDF5ShardReader(ShardReader):
    """Opened without HDF5's file locking: a writer may still be appending videos to the shard
    (it never changes the datasets of a committed video), and a reader's lock would stop it."""

    check_file = staticmethod(check_hdf5_file)

    def __init__(self, path: str, *, readahead: bool = True):
        super().__init__(path, readahead=readahead)
        if not os.path.exists(path):
            raise MissingFileError(f"shard {path} is missing")
        self._file = h5py.File(path, "r", locking=False)
        self._index: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, h5py.Dataset]] = {}

    def _lookup(self, video_id: str, kind: str):
        key = (video_id, kind)
        if key not in self._index:
            try:
                self._index[key] = self._read_index(video_id, kind)
            except FlowstoreError:
                raise
            except _H5_ERRORS as exc:
                raise DamagedStoreError(f"{self.path}: video {video_id!r} {kind} records: damaged shard "
                                        f"({exc.__class__.__name__}: {exc})") from None
        return self._index[key]

    def _read_index(self, video_id: str, kind: str):
        name = hdf5_group(video_id)
        if name not in self._file or f"{kind}_offsets" not in self._file[name]:
            raise MissingRecordError(f"{self.path}: no {kind} records for video {video_id!r}")
        group = self._file[name]
        offsets, crcs, data = group[f"{kind}_offsets"][()], group[f"{kind}_crc32"][()], group[f"{kind}_data"]
        n = len(crcs)
        if (offsets.ndim != 1 or crcs.ndim != 1 or len(offsets) != n + 1 or offsets[0] != 0
                or (n and (np.any(np.diff(offsets) < 0) or offsets[-1] > data.shape[0]))):
            raise DamagedStoreError(f"{self.path}: video {video_id!r} {kind} records: offsets do not fit "
                                    f"{n} records in {data.shape[0]:,} bytes")
        return offsets, crcs, data

    def _slice(self, video_id: str, kind: str, data, lo: int, hi: int) -> bytes:
        try:
            return data[lo:hi].tobytes()
        except _H5_ERRORS as exc:
            raise DamagedStoreError(f"{self.path}: video {video_id!r} {kind} records: damaged shard "
                                    f"({exc.__class__.__name__}: {exc})") from None

    def _payload(self, video_id: str, kind: str, index: int, check: bool) -> bytes:
        offsets, crcs, data = self._lookup(video_id, kind)
        if not 0 <= index < len(crcs):
            raise MissingRecordError(f"{self.path}: no record {video_id}/{kind}/{index}")
        payload = self._slice(video_id, kind, data, offsets[index], offsets[index + 1])
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
            blob = self._slice(video_id, kind, data, lo, hi)
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
            blob = self._slice(video_id, kind, data, offsets[start], offsets[end])
            for i in range(start, end):
                payload = blob[offsets[i] - offsets[start]:offsets[i + 1] - offsets[start]]
                yield i, payload, zlib.crc32(payload) == int(crcs[i])
            start = end

    def close(self) -> None:
        self._file.close()
