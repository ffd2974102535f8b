"""Opening a committed shard safely: the file is checked before LMDB or h5py sees it, so a
damaged store raises :class:`~flowstore.errors.DamagedStoreError` instead of crashing."""
from __future__ import annotations

import os
import stat

from ..errors import DamagedStoreError, FlowstoreError
from .backend import ShardReader, reader_class
from .format import SHARD_DIR, shard_path


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
