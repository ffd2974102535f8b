"""Write side of a store: the writer lock, the commit protocol and shard allocation.

Protocol (see docs/FORMAT.md, "Commit protocol"):

1. One process per store holds ``writer.lock`` (``flock``; released by the kernel even on
   ``kill -9``). A second writer fails at once with :class:`StoreLockedError`.
2. A worker writes all records of a video into a shard it alone owns, then fsyncs the shard.
3. The main process commits the video by appending its entry to ``commits.jsonl`` (one
   complete line, fsync). Only then is the video visible.
4. Every ``CHECKPOINT_EVERY`` commits, and at the end of a run, the entries committed since
   are indexed into the catalog (format 1.2: a new immutable segment, size-tiered compaction,
   then ``catalog/catalog.json`` replaced atomically). The log is never emptied and the
   manifest's videos are never rewritten, so the 1.1 rule (manifest videos + log) stays true;
   a crash at any step leaves the old catalog.json, which still covers a prefix of the log.

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
from .catalog import AVAILABLE as CATALOG_AVAILABLE
from .catalog import (
    SEGMENT_FANOUT, Catalog, advance_log_position, decode_value, level_for, manifest_identity,
    open_catalog, publish, tail_entries, write_segment,
)
from .format import (
    CATALOG_DIR, COMMIT_LOG, FAILURES, FORMAT_NAME, FORMAT_VERSION, LOCK_FILE, MANIFEST, SETTINGS_KEYS,
    SHARD_DIR, SHARD_SUFFIX, VideoEntry, dumps_line, parse_version, SEGMENT_NAME_RE, segment_key, segment_name,
    segment_value, shard_name, shard_path, store_setting,
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
    """Main-process side: creates or reopens a store and commits videos. Hold the lock first.

    It holds only the entries committed since the last checkpoint; the others are looked up in
    the catalog (``vid in writer``, :meth:`entry`), so its memory does not grow with the store.
    Where the lmdb package is missing (``catalog.AVAILABLE`` False) it keeps every entry in
    memory instead and writes no catalog: the store is then read the 1.1 way (still correct)."""

    CHECKPOINT_EVERY = 500  # commits between catalog checkpoints (bounds the log tail readers parse)

    def __init__(self, root: str | os.PathLike, settings: dict):
        self.root = Path(root)
        self.settings = settings
        self._pending: dict[str, VideoEntry] = {}
        self._catalog = None
        self._open_or_create()

    def _open_or_create(self) -> None:
        (self.root / SHARD_DIR).mkdir(parents=True, exist_ok=True)
        (self.root / CATALOG_DIR).mkdir(exist_ok=True)
        # temporary files of an interrupted run (we hold the lock: nobody else is writing)
        for folder in (self.root, self.root / CATALOG_DIR):
            for pattern in (".*.tmp-*", ".write-test-*"):
                for stale in folder.glob(pattern):
                    stale.unlink()
        if not CATALOG_AVAILABLE:
            return self._open_unindexed()
        if (self.root / MANIFEST).exists():
            opened = open_catalog(self.root)
            if opened is not None:
                self._catalog, lines = opened
                header = self._catalog.doc["header"]
            else:
                manifest = load_manifest(self.root)
                header = {k: v for k, v in manifest.items() if k != "videos"}
            try:
                self._check_settings(header)
            except SettingsMismatchError:
                if opened is not None:
                    self._catalog.close()
                raise
            self.header = header
            if opened is not None:
                self._resume(tail_entries(lines, header, self.root / COMMIT_LOG))
            else:
                self._rebuild_catalog(manifest["videos"])
        else:
            self.header = self._new_header()
            atomic_write_text(self.root / MANIFEST, _manifest_text({**self.header, "videos": []}))
            self._rebuild_catalog([])

    def _new_header(self) -> dict:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "flowstore_version": __version__,
            "created_at": now(),
            "updated_at": now(),
            **self.settings,
        }

    def _open_unindexed(self) -> None:
        """No lmdb here: every committed entry in memory (the full read), no catalog written. An
        existing catalog.json is left as it is: the lines appended past what it covers are read
        as its tail, so it stays correct."""
        self._shard_sizes = {}
        if (self.root / MANIFEST).exists():
            manifest = load_manifest(self.root)
            self.header = {k: v for k, v in manifest.items() if k != "videos"}
            self._check_settings(self.header)
            for entry in manifest["videos"]:
                self._pending[entry["id"]] = entry
        else:
            self.header = self._new_header()
            atomic_write_text(self.root / MANIFEST, _manifest_text({**self.header, "videos": []}))
        self._videos = len(self._pending)

    def _check_settings(self, header: dict) -> None:
        diff = settings_diff(header, self.settings)
        if diff:
            raise SettingsMismatchError(
                f"store {self.root} was made with other settings:\n  " + "\n  ".join(diff)
                + "\nRerun with the store's settings, or write to another --out."
            )

    # -- the catalog ----------------------------------------------------------------------------
    def _resume(self, tail: dict[str, dict]) -> None:
        """A fresh catalog: the log lines past it become this writer's pending entries."""
        doc = self._catalog.doc
        self._videos = doc["videos"]
        self._shard_sizes = dict(doc["shard_sizes"])
        self._log_pos = doc["log"]
        for entry in tail.values():
            self._add_pending(entry)
        self._delete_unlisted_segments()

    def _rebuild_catalog(self, entries: list[dict]) -> None:
        """No usable catalog (a new store, one written before 1.2, or a catalog that is stale or
        was deleted): index every committed entry into one segment. Each step leaves a store
        that reads correctly: the manifest keeps its videos; catalog.json is replaced last."""
        if parse_version(self.header["format_version"]) < parse_version(FORMAT_VERSION):
            # mark the store 1.2; manifest["videos"] stays as it is (frozen, read by 1.1 readers)
            raw = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
            raw["format_version"] = self.header["format_version"] = FORMAT_VERSION
            atomic_write_text(self.root / MANIFEST, _manifest_text(raw))
        log = self.root / COMMIT_LOG
        if not log.exists():
            atomic_write_text(log, "")  # its inode identifies the log the catalog covers
        self._catalog = Catalog(self.root, {"segments": []}).open()
        self._videos, self._shard_sizes, self._log_pos = 0, {}, None
        entries = sorted(entries, key=lambda e: e["id"])
        if entries:
            name = self._next_segment_name()
            count = write_segment(self._catalog.segment_path(name),
                                  ((segment_key(e["id"]), segment_value(e)) for e in entries))
            self._catalog.add({"name": name, "level": level_for(count, self.CHECKPOINT_EVERY), "entries": count})
        self._videos = len(entries)
        for e in entries:
            self._note_shard_size(e)
        self._publish()
        self._delete_unlisted_segments()

    def _next_segment_name(self) -> str:
        numbers = [int(m.group(1)) for p in os.listdir(self.root / CATALOG_DIR) if (m := SEGMENT_NAME_RE.fullmatch(p))]
        numbers += [int(SEGMENT_NAME_RE.fullmatch(s["name"]).group(1)) for s in self._catalog.segments]
        return segment_name(max(numbers, default=-1) + 1)

    def _publish(self) -> None:
        self._log_pos = advance_log_position(self.root / COMMIT_LOG, self._log_pos)
        doc = {"segments": self._catalog.segments, "videos": self._videos, "log": self._log_pos,
               "manifest": manifest_identity(self.root / MANIFEST), "header": self.header,
               "shard_sizes": self._shard_sizes}
        publish(self.root, doc)
        self._catalog.doc = doc

    def _delete_unlisted_segments(self) -> None:
        listed = {s["name"] for s in self._catalog.segments}
        for path in (self.root / CATALOG_DIR).iterdir():
            if SEGMENT_NAME_RE.fullmatch(path.name) and path.name not in listed:
                path.unlink()

    def _compact(self) -> None:
        """Size-tiered: while the newest SEGMENT_FANOUT segments have one level, merge them into
        one of the next level (every entry is rewritten O(log n) times in all)."""
        segs = self._catalog.segments
        while len(segs) >= SEGMENT_FANOUT and len({s["level"] for s in segs[-SEGMENT_FANOUT:]}) == 1:
            group = [s["name"] for s in segs[-SEGMENT_FANOUT:]]
            name = self._next_segment_name()
            count = write_segment(self._catalog.segment_path(name),
                                  ((k, v) for k, v, _ in self._catalog.items(group)))
            self._catalog.replace_tail(SEGMENT_FANOUT, {"name": name, "level": segs[-1]["level"] + 1, "entries": count})
            segs = self._catalog.segments

    def _note_shard_size(self, entry: dict) -> None:
        size = int(entry.get("shard_size", 0))
        if size > self._shard_sizes.get(entry["shard"], -1):
            self._shard_sizes[entry["shard"]] = size

    def _add_pending(self, entry: dict) -> None:
        if entry["id"] not in self:
            self._videos += 1
        self._pending[entry["id"]] = entry
        self._note_shard_size(entry)

    # -- committed videos -----------------------------------------------------------------------
    def __contains__(self, video_id: str) -> bool:
        return video_id in self._pending or (
            self._catalog is not None and self._catalog.lookup(video_id) is not None)

    def __len__(self) -> int:
        """The number of distinct committed videos."""
        return self._videos

    def entry(self, video_id: str) -> dict:
        """The committed entry of ``video_id`` (KeyError when none)."""
        if video_id in self._pending:
            return self._pending[video_id]
        hit = None if self._catalog is None else self._catalog.lookup(video_id)
        if hit is None:
            raise KeyError(video_id)
        return decode_value(hit[0], video_id, self.header, str(self._catalog.segment_path(hit[1])))

    def failures(self) -> list[dict]:
        return load_failures(self.root, self)

    def commit(self, entry: VideoEntry) -> None:
        """Make one fully written (and fsync'd) video visible."""
        entry = VideoEntry(**entry, committed_at=now())
        append_lines(self.root / COMMIT_LOG, [dumps_line(entry)])
        self._add_pending(entry)
        if self._catalog is not None and len(self._pending) >= self.CHECKPOINT_EVERY:
            self.checkpoint()

    def record_failure(self, video_id: str, source: str, reason: str) -> None:
        append_lines(self.root / FAILURES, [dumps_line({"id": video_id, "source": source, "reason": reason, "at": now()})])

    def checkpoint(self) -> None:
        """Index the entries committed since the last checkpoint: a new segment, compaction,
        then catalog.json (the commit point), then the segments no longer listed are deleted.
        The log and manifest.json are left as they are (format 1.2). Without lmdb: only the
        failures are compacted."""
        if self._catalog is None:
            atomic_write_text(self.root / FAILURES, failures_text(self.failures()))
            return
        if self._pending:
            name = self._next_segment_name()
            count = write_segment(self._catalog.segment_path(name),
                                  ((segment_key(k), segment_value(self._pending[k])) for k in sorted(self._pending)))
            self._catalog.add({"name": name, "level": level_for(count, self.CHECKPOINT_EVERY), "entries": count})
            self._compact()
        self._publish()
        self._pending = {}
        self._delete_unlisted_segments()
        # failures.jsonl keeps only the latest reason of videos still failing
        atomic_write_text(self.root / FAILURES, failures_text(self.failures()))

    def close(self) -> None:
        """Release the catalog's segments (the run's last checkpoint is the caller's)."""
        if self._catalog is not None:
            self._catalog.close()


def _manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"




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
