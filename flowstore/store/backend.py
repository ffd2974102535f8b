"""The small storage interface every backend implements (one conformance suite tests them all).

A :class:`ShardWriter` appends whole videos to one shard file it owns; a :class:`ShardReader`
reads records back. Readers are opened lazily per process: handles are never pickled or shared
across a fork.
"""
from __future__ import annotations
from ..errors import InputError

import abc
from collections.abc import Iterator

from .format import BACKENDS


class ShardWriter(abc.ABC):
    """Writes whole videos into one shard file; not thread-safe, one process only."""

    def __init__(self, path: str):
        self.path = path

    @abc.abstractmethod
    def begin_video(self, video_id: str) -> None: ...

    @abc.abstractmethod
    def put(self, kind: str, index: int, payload: bytes) -> None:
        """Add one record of the current video; records of a kind arrive in index order."""

    @abc.abstractmethod
    def end_video(self) -> None:
        """Make the current video durable on disk (fsync) before it may be committed."""

    @abc.abstractmethod
    def abort_video(self) -> None:
        """Stop writing the current video; what was written stays uncommitted garbage."""


class ShardReader(abc.ABC):
    """``readahead``: whether the OS may read ahead of what is asked (a hint; backends that read
    with read(2) leave it to the kernel's adaptive read-ahead and ignore it)."""

    def __init__(self, path: str, *, readahead: bool = True):
        self.path = path
        self.readahead = readahead

    @abc.abstractmethod
    def get(self, video_id: str, kind: str, index: int, *, check: bool = False) -> bytes:
        """Payload of one record; KeyError if absent, ValueError on a checksum mismatch."""

    @abc.abstractmethod
    def get_many(self, video_id: str, kind: str, indices, *, check: bool = False) -> list[bytes]: ...

    @abc.abstractmethod
    def iter_records(self, video_id: str, kind: str, count: int) -> Iterator[tuple[int, bytes, bool]]:
        """``(index, payload, checksum_ok)`` for indices 0..count-1; KeyError on a missing record."""

    @abc.abstractmethod
    def close(self) -> None: ...


def writer_class(backend: str) -> type[ShardWriter]:
    if backend == "lmdb":
        from .lmdb_backend import LMDBShardWriter

        return LMDBShardWriter
    if backend == "hdf5":
        from .hdf5_backend import HDF5ShardWriter

        return HDF5ShardWriter
    raise InputError(f"unknown format {backend!r}; choose from {sorted(BACKENDS)}")


def reader_class(backend: str) -> type[ShardReader]:
    if backend == "lmdb":
        from .lmdb_backend import LMDBShardReader

        return LMDBShardReader
    if backend == "hdf5":
        from .hdf5_backend import HDF5ShardReader

        return HDF5ShardReader
    raise InputError(f"unknown format {backend!r}; choose from {sorted(BACKENDS)}")
