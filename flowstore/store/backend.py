"""The small storage interface every backend implements (one conformance suite tests them all).

A :class:`ShardWriter` appends whole videos to one shard file it owns; a :class:`ShardReader`
reads records back. Readers are opened lazily per process: handles are never pickled or shared
across a fork.

:data:`BACKENDS` is the one table of backends (``--format`` of ``flowstore extract``). Its
entries name their classes as ``"module:Class"``, so h5py is imported only by a store that
uses HDF5.
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator

from ..registry import Registry, resolve


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
    with read(2) leave it to the kernel's adaptive read-ahead and ignore it).

    A reader is opened on a file that may be damaged: before the library maps or parses it,
    :meth:`check_file` looks at what the library would trust blindly (LMDB's meta pages, the
    HDF5 superblock) and raises :class:`~flowstore.errors.DamagedStoreError` instead of letting
    the library fault (see :func:`flowstore.store.shards.open_shard`)."""

    def __init__(self, path: str, *, readahead: bool = True):
        self.path = path
        self.readahead = readahead

    @staticmethod
    def check_file(path: str, size: int) -> None:
        """Raise DamagedStoreError if the ``size``-byte file at ``path`` cannot be a valid
        shard of this backend (checked before the library opens it)."""

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


@dataclasses.dataclass(frozen=True)
class BackendSpec:
    """A storage backend: the suffix of its shard files and its writer and reader classes (or
    their ``"module:Class"`` references)."""

    suffix: str
    writer: str | type[ShardWriter]
    reader: str | type[ShardReader]


BACKENDS: Registry[BackendSpec] = Registry("format")


def register_backend(name: str, *, suffix: str, writer: str | type[ShardWriter],
                     reader: str | type[ShardReader]) -> BackendSpec:
    return BACKENDS.register(name, BackendSpec(suffix=suffix, writer=writer, reader=reader))


def list_backends() -> list[str]:
    return BACKENDS.names()


def writer_class(backend: str) -> type[ShardWriter]:
    return resolve(BACKENDS[backend].writer)


def reader_class(backend: str) -> type[ShardReader]:
    return resolve(BACKENDS[backend].reader)


# the built-in backends; docs/FORMAT.md describes each shard layout
register_backend("lmdb", suffix=".lmdb", writer=f"{__package__}.lmdb_backend:LMDBShardWriter",
                 reader=f"{__package__}.lmdb_backend:LMDBShardReader")
register_backend("hdf5", suffix=".h5", writer=f"{__package__}.hdf5_backend:HDF5ShardWriter",
                 reader=f"{__package__}.hdf5_backend:HDF5ShardReader")
