"""The small storage interface every backend implements (one conformance suite tests them all).

A :class:`ShardWriter` appends whole videos to one shard file it owns; a :class:`ShardReader`
reads records back. Readers are opened lazily per process: handles are never pickled or shared
across a fork.
"""
from __future__ import annotations

import abc
import os
import stat
from collections.abc import Iterator

from ..errors import DamagedStoreError, FlowstoreError, InputError
from .format import BACKENDS, SHARD_DIR, shard_path


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
    the library fault (see :func:`open_shard`)."""

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


def open_shard(backend: str, root, shard: str, *, video: str, min_size: int = 0,
               readahead: bool = True) -> ShardReader:
    """A reader of the committed shard ``shard`` (a name under ``shards/``), opened only after
    checks that keep a damaged file from crashing the process: it must be a regular file of at
    least ``min_size`` bytes (the largest ``shard_size`` its committed entries record; LMDB
    maps the file and would fault on a page past its end) and pass the backend's
    :meth:`ShardReader.check_file`. Every failure is a :class:`DamagedStoreError` naming the
    shard and ``video`` (the video it was opened for)."""
    path = shard_path(root, shard)
    where = f"shard {SHARD_DIR}/{shard} of video {video!r} in {root}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DamagedStoreError(f"{where} is missing") from None
    except OSError as exc:
        raise DamagedStoreError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise DamagedStoreError(f"{where} is not a regular file")
    if st.st_size < min_size:
        raise DamagedStoreError(f"{where} is cut short: {st.st_size:,} bytes, its commits say at least {min_size:,}")
    cls = reader_class(backend)
    try:
        cls.check_file(str(path), st.st_size)
        return cls(str(path), readahead=readahead)
    except DamagedStoreError as exc:
        raise DamagedStoreError(f"{where} is damaged: {exc.message}") from None
    except FlowstoreError:
        raise
    except Exception as exc:  # the library's own refusal (lmdb.InvalidError, OSError from h5py, ...)
        raise DamagedStoreError(f"{where} is damaged: {exc.__class__.__name__}: {exc}") from None
