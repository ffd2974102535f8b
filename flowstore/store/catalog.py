"""The catalog (format 1.2, docs/FORMAT.md section 13): a derived index of the committed videos
so that opening a store does not parse every entry.

``catalog/`` holds immutable sorted *segments* (LMDB files, ``subdir=False``: video id in UTF-8
-> the entry as compact JSON), each written once under a temporary name and renamed into place,
then only read (``readonly=True, lock=False``: no lock files, fine on NFS/Lustre and read-only
media), and ``catalog.json`` (replaced atomically) listing the live segments oldest -> newest,
the number of distinct committed ids, how far into ``commits.jsonl`` they reach and what
identifies that log and ``manifest.json`` (so a reader can tell a stale catalog). The newest
segment holding an id wins. Everything past the covered offset of the log (at most a
checkpoint's worth of lines) is read as the 1.1 rules say.

A missing, damaged or stale catalog is never an error: :func:`open_catalog` returns None and
the reader takes the 1.1 path (``manifest.json["videos"]`` + the whole log). So is a Python
without the ``lmdb`` package (a core dependency, missing only where flowstore runs from a
source tree, e.g. the GPU check on a bare machine): then :data:`AVAILABLE` is False, readers
take the full read and writers write no catalog (:class:`~flowstore.store.writer.StoreWriter`).
"""
from __future__ import annotations

import errno
import heapq
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

try:
    import lmdb
except ImportError:  # the catalog is an index: without it every store still reads (slower)
    lmdb = None

from ..io import atomic_write, atomic_write_text
from .format import (
    CATALOG_DIR, CATALOG_FILE, CATALOG_NAME, CATALOG_VERSION, COMMIT_LOG, MANIFEST, FormatError,
    check_catalog, check_entry, segment_key,
)
from .manifest import parse_json_lines
from ..errors import DamagedStoreError

#: whether catalogs can be read and written here (the lmdb package imports)
AVAILABLE = lmdb is not None

#: a writer merges this many segments of one level into one of the next level
SEGMENT_FANOUT = 4
#: LMDB write transactions of a segment hold at most this many entries (bounds dirty pages)
_ENTRIES_PER_TXN = 20_000
_WRITE_MAP_SIZE = 1 << 40  # address space only: the file grows as written


def catalog_path(root: str | os.PathLike) -> Path:
    return Path(root) / CATALOG_DIR / CATALOG_FILE


def manifest_identity(path: str | os.PathLike) -> dict:
    """What tells that ``manifest.json`` is the file a catalog was made beside: inode, size and
    modification time (no device number: NFS clients may number the same export differently)."""
    st = os.stat(path)
    return {"inode": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def advance_log_position(log: Path, previous: dict | None) -> dict:
    """Where the complete lines of ``commits.jsonl`` end now, from ``previous`` (a position at a
    line boundary, or None: from the start): ``offset`` (bytes), ``lines`` (newlines before it),
    ``inode``, and ``last_line_start`` / ``last_line_crc32`` (CRC-32 of the bytes of the last
    covered line, its newline included). Reads only what was appended since ``previous``."""
    pos = dict(previous) if previous else {"offset": 0, "lines": 0, "last_line_start": 0, "last_line_crc32": 0}
    with open(log, "rb") as f:
        pos["inode"] = os.fstat(f.fileno()).st_ino
        f.seek(pos["offset"])
        chunk = f.read()
    end = chunk.rfind(b"\n")
    if end < 0:
        return pos
    covered = chunk[:end + 1]
    start_in_chunk = covered.rfind(b"\n", 0, end) + 1  # 0 when the last line starts at the old offset
    pos["last_line_start"] = pos["offset"] + start_in_chunk
    pos["last_line_crc32"] = zlib.crc32(covered[start_in_chunk:])
    pos["lines"] += covered.count(b"\n")
    pos["offset"] += len(covered)
    return pos


def read_log_tail(log: Path, pos: dict) -> bytes | None:
    """The bytes of ``commits.jsonl`` past ``pos["offset"]``, or None when the log is not the one
    ``pos`` describes (another inode, shorter, or its last covered line differs)."""
    try:
        f = open(log, "rb")
    except FileNotFoundError:
        return None
    except OSError:
        return None
    with f:
        st = os.fstat(f.fileno())
        if st.st_ino != pos["inode"] or st.st_size < pos["offset"]:
            return None
        if pos["offset"]:
            f.seek(pos["last_line_start"])
            last = f.read(pos["offset"] - pos["last_line_start"])
            if not last.endswith(b"\n") or zlib.crc32(last) != pos["last_line_crc32"]:
                return None
        f.seek(pos["offset"])
        return f.read()


def level_for(entries: int, checkpoint_every: int) -> int:
    """The level of a segment of ``entries`` entries: the smallest L with
    ``entries <= checkpoint_every * SEGMENT_FANOUT**L``."""
    level, cap = 0, max(1, checkpoint_every)
    while entries > cap:
        level, cap = level + 1, cap * SEGMENT_FANOUT
    return level


def write_segment(path: Path, items: Iterable[tuple[bytes, bytes]]) -> int:
    """Write a segment (keys strictly increasing) under a temporary name, fsync, rename it to
    ``path``; returns the number of entries."""
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        env = lmdb.open(str(tmp), subdir=False, lock=False, map_size=_WRITE_MAP_SIZE, sync=False,
                        metasync=False, readahead=False, meminit=False, max_dbs=0)
        try:
            txn = env.begin(write=True)
            try:
                for key, value in items:
                    if not txn.put(key, value, append=True):
                        raise ValueError(f"catalog segment keys out of order at {key!r}")
                    count += 1
                    if count % _ENTRIES_PER_TXN == 0:
                        txn.commit()
                        txn = env.begin(write=True)
                txn.commit()
            except BaseException:
                txn.abort()
                raise
            env.sync(True)
        finally:
            env.close()

    try:
        atomic_write(path, write)
    except lmdb.Error as exc:  # an OSError to callers, as any other failed store write
        code = errno.ENOSPC if isinstance(exc, lmdb.DiskError) else errno.EIO
        raise OSError(code, f"{os.strerror(code)}: catalog segment {path.name} ({exc.__class__.__name__}: {exc})") from exc
    return count


class Catalog:
    """The segments a ``catalog.json`` lists, open for reading (process-wide shared LMDB maps).
    Pickling keeps what ``catalog.json`` said; the segments are opened again on first use in the
    new process (if a compaction has removed them by then, see :meth:`StoreReader`)."""

    def __init__(self, root: str | os.PathLike, doc: dict):
        self.root = Path(root)
        self.doc = doc
        self._envs: dict[str, object] | None = None
        self._pid = os.getpid()

    @property
    def segments(self) -> list[dict]:
        return self.doc["segments"]

    def segment_path(self, name: str) -> Path:
        return self.root / CATALOG_DIR / name

    def open(self) -> "Catalog":
        """Open every listed segment: FileNotFoundError when one is gone (a compaction removed
        it), DamagedStoreError when one is not a sound LMDB file."""
        if self._envs is not None and self._pid == os.getpid():
            return self
        unpickled = self._pid is None
        self._envs, self._pid = {}, os.getpid()
        try:
            for seg in self.segments:
                self._open_one(seg["name"])
        except FileNotFoundError:
            self.close()
            if not unpickled:
                raise
            # a process this catalog was sent to, after a writer's compaction removed segments:
            # the current catalog holds every id the old one did (ids are never removed)
            fresh = open_catalog(self.root)
            if fresh is None:
                raise DamagedStoreError(f"{self.root}/{CATALOG_DIR}: the catalog this reader was opened with is "
                                        "gone and no fresh one is there; open the store again") from None
            self.doc, self._envs, self._pid = fresh[0].doc, fresh[0]._envs, os.getpid()
            fresh[0]._envs = None
        except BaseException:
            self.close()
            raise
        return self

    def _open_one(self, name: str) -> None:
        path = self.segment_path(name)
        from .lmdb_backend import _acquire_env, check_lmdb_file

        size = os.stat(path).st_size
        check_lmdb_file(str(path), size)  # a damaged segment must not fault the process
        self._envs[name] = _acquire_env(str(path), True)

    def add(self, seg: dict) -> None:
        """Writer side: a new segment, newest, already renamed into place."""
        self.open()
        self._open_one(seg["name"])
        self.doc = {**self.doc, "segments": self.segments + [seg]}

    def replace_tail(self, count: int, seg: dict) -> list[str]:
        """Writer side: the newest ``count`` segments merged into ``seg``; returns their names."""
        gone = [s["name"] for s in self.segments[-count:]]
        self._open_one(seg["name"])
        self.doc = {**self.doc, "segments": self.segments[:-count] + [seg]}
        for name in gone:
            self._release(name)
        return gone

    def _release(self, name: str) -> None:
        if self._envs is not None and self._envs.pop(name, None) is not None and self._pid == os.getpid():
            from .lmdb_backend import _release_env

            _release_env(str(self.segment_path(name)))

    def close(self) -> None:
        for name in list(self._envs or ()):
            self._release(name)
        self._envs = None

    def __del__(self):  # a dropped catalog must release its shared maps (and their fds)
        try:
            self.close()
        except Exception:
            pass

    def __getstate__(self):
        return {"root": self.root, "doc": self.doc, "_envs": None, "_pid": None}

    def _env(self, name: str):
        self.open()
        return self._envs[name]

    # -- lookups ----------------------------------------------------------------------------
    def get(self, key: bytes) -> tuple[bytes, str] | None:
        """``(value, segment name)`` of ``key`` in the newest segment holding it, or None."""
        for seg in reversed(self.segments):
            try:
                with self._env(seg["name"]).begin(buffers=False) as txn:
                    value = txn.get(key)
            except lmdb.Error as exc:
                raise DamagedStoreError(f"{self.segment_path(seg['name'])}: damaged catalog segment "
                                        f"({exc.__class__.__name__}: {exc})") from None
            if value is not None:
                return value, seg["name"]
        return None

    def lookup(self, video) -> tuple[bytes, str] | None:
        """:meth:`get` by video id; None for an id no segment can hold (not a string, or one
        that does not encode to UTF-8)."""
        try:
            key = segment_key(video) if isinstance(video, str) else None
        except UnicodeEncodeError:
            return None
        return None if key is None else self.get(key)

    def count_new(self, ids: Iterable[str]) -> int:
        """How many of ``ids`` (e.g. the log tail's) no segment holds: the store's distinct
        videos are ``doc["videos"]`` plus these."""
        return sum(1 for v in ids if self.lookup(v) is None)

    def items(self, names: list[str] | None = None) -> Iterator[tuple[bytes, bytes, str]]:
        """``(key, value, segment)`` of every distinct key in key order, the newest segment's
        value for a key in several (a k-way merge of the segments' cursors)."""
        names = [s["name"] for s in self.segments] if names is None else names
        streams = [self._cursor(name, -age) for age, name in enumerate(names)]
        last = None
        for key, _, value, name in heapq.merge(*streams):
            if key != last:
                last = key
                yield key, value, name

    def _cursor(self, name: str, rank: int):
        env = self._env(name)
        try:
            with env.begin(buffers=False) as txn:
                for key, value in txn.cursor():
                    yield key, rank, value, name
        except lmdb.Error as exc:
            raise DamagedStoreError(f"{self.segment_path(name)}: damaged catalog segment "
                                    f"({exc.__class__.__name__}: {exc})") from None


def open_catalog(root: str | os.PathLike, attempts: int = 20) -> tuple[Catalog, list[tuple[int, dict]]] | None:
    """A fresh catalog, open, and the lines of ``commits.jsonl`` past what it covers (numbered
    as in the file); None when there is no usable catalog (missing, damaged, or stale: the log
    or the manifest is not the one it was made beside). Segments that vanish while opening (a
    writer's compaction) make it read ``catalog.json`` again."""
    if not AVAILABLE:
        return None
    root = Path(root)
    path = catalog_path(root)
    for _ in range(attempts):
        try:
            raw = path.read_bytes()
            doc = check_catalog(json.loads(raw.decode("utf-8")), str(path))
            if manifest_identity(root / MANIFEST) != doc["manifest"]:
                return None
        except (OSError, ValueError, FormatError):  # ValueError: not UTF-8 JSON
            return None
        tail = read_log_tail(root / COMMIT_LOG, doc["log"])
        if tail is None:
            return None
        catalog = Catalog(root, doc)
        try:
            catalog.open()
        except FileNotFoundError:
            try:
                if path.read_bytes() != raw:
                    continue  # a compaction replaced catalog.json meanwhile: take the new one
            except OSError:
                pass
            return None
        except (OSError, DamagedStoreError, lmdb.Error):
            return None
        return catalog, parse_json_lines(tail, doc["log"]["lines"] + 1)
    return None


def tail_entries(lines: list[tuple[int, dict]], header: dict, log: Path) -> dict[str, dict]:
    """The checked entries of the log lines past the catalog, by id (a later line wins)."""
    out = {}
    for line, entry in lines:
        if "id" in entry:
            entry = check_entry(entry, backend=header["backend"], stride=header["stride"], where=f"{log}:{line}")
            out[entry["id"]] = entry
    return out


_REBUILD_HINT = (f"; the catalog is derived from {COMMIT_LOG}: delete the store's {CATALOG_DIR}/ folder and "
                 "readers read the log instead (the next writer rebuilds the catalog)")


def decode_value(value: bytes, key: str, header: dict, where: str) -> dict:
    """The entry a segment holds for ``key``, checked against the spec."""
    try:
        entry = json.loads(value.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{where}: entry {key!r} is not UTF-8 JSON ({exc}){_REBUILD_HINT}") from None
    try:
        entry = check_entry(entry, backend=header["backend"], stride=header["stride"], where=f"{where}: {key!r}")
    except FormatError as exc:
        raise FormatError(exc.message + _REBUILD_HINT) from None
    if entry["id"] != key:
        raise FormatError(f"{where}: key {key!r} holds the entry of {entry['id']!r}{_REBUILD_HINT}")
    return entry


def publish(root: str | os.PathLike, doc: dict) -> None:
    """Replace ``catalog.json`` atomically."""
    atomic_write_text(catalog_path(root), json.dumps({"format": CATALOG_NAME, "catalog_version": CATALOG_VERSION,
                                                      **doc}, ensure_ascii=False, sort_keys=True) + "\n")
