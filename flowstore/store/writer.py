"""Write side of a store: the writer lock, the commit protocol and shard allocation.

Protocol (see docs/FORMAT.md, "Commit protocol"):

1. One process per store holds ``writer.lock`` (``flock``; released by the kernel even on
   ``kill -9``). A second writer fails at once with :class:`StoreLockedError`.
2. A worker writes all records of a video into a shard it alone owns, then fsyncs the shard.
3. The main process commits the video by appending its entry to ``commits.jsonl`` (one
   complete line, fsync). Only then is the video visible.
4. Now and then, and at the end of a run, ``manifest.json`` is rewritten with every committed
   video (temporary name + rename) and the log is emptied. A crash between the two leaves
   entries in both; readers take the union by id.

Shards are never reopened by a later run: a run allocates new shard numbers with ``O_EXCL``,
so records an interrupted run wrote but never committed are simply never pointed to.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import re
from pathlib import Path

from .. import __version__
from ..errors import InputError, StoreLockedError, StoreWriteError  # noqa: F401 (the lock and write errors are re-exported)
from .format import (
    COMMIT_LOG, FAILURES, FORMAT_NAME, FORMAT_VERSION, LOCK_FILE, MANIFEST, SETTINGS_KEYS, store_setting,
    SHARD_DIR, SHARD_SUFFIX, VideoEntry, dumps_line, shard_name, shard_path,
)
from ..io import atomic_write_text, fsync_path
from .manifest import append_lines, failures_text, load_failures, load_manifest


class SettingsMismatchError(InputError):
    """The store was made with other settings than the current command asks for."""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the file system holding ``path`` (or its nearest existing parent)."""
    import shutil

    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def describe_storage_error(exc: BaseException, where: str) -> str:
    """One line for any storage failure. LMDB and HDF5 report a full disk as a generic I/O
    error, so the free space is checked too."""
    if isinstance(exc, OSError) and exc.errno not in (None, errno.EIO):
        return describe_os_error(exc, where)
    free = free_bytes(where)
    if free is not None and free < (4 << 20):
        return f"cannot write {where}: the disk is full ({free:,} bytes free; {exc.__class__.__name__}: {exc})"
    return f"cannot write {where}: {exc.__class__.__name__}: {exc}"


def describe_os_error(exc: OSError, where: str) -> str:
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EFBIG: "the file size limit was reached",
    }
    reason = reasons.get(exc.errno, exc.strerror or str(exc))
    return f"cannot write {where}: {reason} ({exc.__class__.__name__}: {exc})"


class StoreLock:
    """Exclusive, non-blocking writer lock on ``STORE/writer.lock``."""

    def __init__(self, root: str | os.PathLike):
        self.path = Path(root) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "StoreLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLockedError(
                f"store {self.path.parent} is locked by another writer ({holder}); "
                "wait for it to finish — only one process may write a store at a time"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} since {now()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def settings_diff(old: dict, new: dict, old_is: str = "store has", new_is: str = "this command asks for") -> list[str]:
    """One line per settings key (:data:`~.format.SETTINGS_KEYS`) on which ``old`` and ``new`` differ."""
    return [
        f"{key}: {old_is} {json.dumps(store_setting(old, key), sort_keys=True)}, "
        f"{new_is} {json.dumps(store_setting(new, key), sort_keys=True)}"
        for key in SETTINGS_KEYS
        if json.loads(json.dumps(store_setting(old, key), sort_keys=True))
        != json.loads(json.dumps(store_setting(new, key), sort_keys=True))
    ]



class StoreWriter:
    """Main-process side: creates or reopens a store and commits videos. Hold the lock first."""

    CHECKPOINT_EVERY = 500  # commits between manifest rewrites (keeps the log short)

    def __init__(self, root: str | os.PathLike, settings: dict):
        self.root = Path(root)
        self.settings = settings
        self._since_checkpoint = 0
        self._open_or_create()

    def _open_or_create(self) -> None:
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        # temporary files of an interrupted run (we hold the lock: nobody else is writing)
        for pattern in (".*.tmp-*", ".write-test-*"):
            for stale in self.root.glob(pattern):
                stale.unlink()
        if (self.root / MANIFEST).exists():
            manifest = load_manifest(self.root)
            diff = settings_diff(manifest, self.settings)
            if diff:
                raise SettingsMismatchError(
                    f"store {self.root} was made with other settings:\n  " + "\n  ".join(diff)
                    + "\nRerun with the store's settings, or write to another --out."
                )
            self.header = {k: v for k, v in manifest.items() if k != "videos"}
            self.videos = {v["id"]: v for v in manifest["videos"]}
        else:
            self.header = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "flowstore_version": __version__,
                "created_at": now(),
                **self.settings,
            }
            self.videos = {}
            self.checkpoint()

    @property
    def committed(self) -> set[str]:
        return set(self.videos)

    def failures(self) -> list[dict]:
        return load_failures(self.root, self.committed)

    def commit(self, entry: VideoEntry) -> None:
        """Make one fully written (and fsync'd) video visible."""
        entry = VideoEntry(**entry, committed_at=now())
        append_lines(self.root / COMMIT_LOG, [dumps_line(entry)])
        self.videos[entry["id"]] = entry
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.CHECKPOINT_EVERY:
            self.checkpoint()

    def record_failure(self, video_id: str, source: str, reason: str) -> None:
        append_lines(self.root / FAILURES, [dumps_line({"id": video_id, "source": source, "reason": reason, "at": now()})])

    def checkpoint(self) -> None:
        """Rewrite manifest.json with every committed video, then empty the commit log."""
        manifest = {**self.header, "updated_at": now(), "videos": [self.videos[k] for k in sorted(self.videos)]}
        atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
        atomic_write_text(self.root / COMMIT_LOG, "")
        # failures.jsonl keeps only the latest reason of videos still failing
        atomic_write_text(self.root / FAILURES, failures_text(self.failures()))
        self._since_checkpoint = 0


_SHARD_RE = re.compile(r"shard-(\d+)\.")


class ShardAllocator:
    """Per worker process: the shard it owns now, rolled over past ``shard_size`` bytes."""

    def __init__(self, root: str | os.PathLike, backend: str, shard_size: int):
        self.root = Path(root)
        self.dir = self.root / SHARD_DIR
        self.backend = backend
        self.shard_size = shard_size
        self.current: Path | None = None

    def shard_for_next_video(self) -> Path:
        """The full path of the shard the next video goes into (its name is ``path.name``)."""
        if self.current is not None and os.path.getsize(self.current) < self.shard_size:
            return self.current
        self.current = shard_path(self.root, self._create_new())
        return self.current

    def _create_new(self) -> str:
        numbers = [int(m.group(1)) for p in os.listdir(self.dir) if (m := _SHARD_RE.match(p))]
        number = max(numbers, default=-1) + 1
        while True:
            name = shard_name(self.backend, number)
            try:
                fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:  # another worker took it: try the next number
                number += 1
                continue
            os.close(fd)
            fsync_path(self.dir)
            return name


def shard_files(root: str | os.PathLike, backend: str) -> list[Path]:
    return sorted((Path(root) / SHARD_DIR).glob(f"shard-*{SHARD_SUFFIX[backend]}"))
