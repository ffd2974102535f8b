"""Reading and writing the store directory's JSON files: manifest, commit log, failures.

Writes are atomic (:func:`flowstore.io.atomic_write_text`: temporary name, fsync, rename, fsync of
the directory) or append-only complete lines followed by fsync, so a crash at any moment leaves a
readable store. What is read is checked against the spec (``format.check_*``) before use.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .format import COMMIT_LOG, FAILURES, MANIFEST, FormatError, check_entry, check_failure, check_header, dumps_line
from ..errors import InputError


class StoreNotFoundError(InputError, FileNotFoundError):
    """No store (or no manifest) at the given path."""


def append_lines(path: str | os.PathLike, lines: list[str]) -> None:
    """Append complete JSON lines with one write and fsync them.

    If an earlier writer died mid-line (or the disk filled), the torn tail is first closed
    with a newline so that it stays one unreadable line instead of corrupting the next.
    """
    data = "".join(lines).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with open(path, "rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    data = b"\n" + data
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json_lines(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """``(line number, object)`` of each complete line that is a UTF-8 JSON object (docs/FORMAT.md,
    section 9): a torn last line from a crash, and a torn line a later writer closed, are skipped."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:  # a directory where the file belongs, no permission, an I/O error
        raise FormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return parse_json_lines(raw)


def parse_json_lines(raw: bytes, first_number: int = 1) -> list[tuple[int, dict]]:
    """:func:`read_json_lines` of bytes already read (``first_number``: the number of their
    first line in the file, e.g. for the tail of ``commits.jsonl`` past the catalog)."""
    out = []
    for number, line in enumerate(raw.split(b"\n")[:-1], first_number):  # after the last newline: incomplete
        try:
            obj = json.loads(line.decode("utf-8"))  # UTF-8 only: json.loads(bytes) would take UTF-16/32
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict):
            out.append((number, obj))
    return out


def load_manifest(root: str | os.PathLike) -> dict:
    """The manifest header with ``videos`` = every committed video (checkpoint + commit log),
    each entry checked against the spec; a store that breaks it raises FormatError naming the
    file, the line (or item) and the key."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        if not root.exists():
            raise StoreNotFoundError(f"no store at {root}: the directory does not exist")
        raise StoreNotFoundError(f"{root} is not a flowstore store: {MANIFEST} is missing")
    log = root / COMMIT_LOG
    raw, lines = _read_snapshot(path, log)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"{path}: not valid UTF-8 JSON ({exc})") from None
    check_header(manifest, str(path))
    backend, stride = manifest["backend"], manifest["stride"]
    videos = {}
    for n, entry in enumerate(manifest["videos"]):
        entry = check_entry(entry, backend=backend, stride=stride, where=f"{path}: videos[{n}]")
        videos[entry["id"]] = entry
    for line, entry in lines:
        if "id" in entry:
            entry = check_entry(entry, backend=backend, stride=stride, where=f"{log}:{line}")
            videos[entry["id"]] = entry
    manifest["videos"] = sorted(videos.values(), key=lambda v: v["id"])
    return manifest


def _read_snapshot(path: Path, log: Path, attempts: int = 20) -> tuple[bytes, list[tuple[int, dict]]]:
    """The bytes of ``manifest.json`` and the lines of ``commits.jsonl`` as of one moment, while a
    writer may be running. A checkpoint replaces the manifest (rename) and then empties the log:
    a manifest read before it and a log read after it would lose the videos moved between the
    two. So the manifest is read, then the log, and the pair is kept only if the manifest is
    still the same file (same inode, size and mtime) after the log was read."""
    def identity(st):
        return st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns

    for _ in range(attempts):
        try:
            with open(path, "rb") as f:
                raw, before = f.read(), identity(os.fstat(f.fileno()))
        except OSError as exc:  # a directory where the file belongs, no permission, an I/O error
            raise FormatError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        lines = read_json_lines(log)
        try:
            if identity(os.stat(path)) == before:
                break
        except FileNotFoundError:
            pass
    return raw, lines


def load_failures(root: str | os.PathLike, committed=None) -> list[dict]:
    """Latest failure per video id, leaving out videos that have since been committed
    (``committed``: anything with ``in``, e.g. a set, a StoreReader or a StoreWriter)."""
    path = Path(root) / FAILURES
    latest: dict[str, dict] = {}
    for line, entry in read_json_lines(path):
        if "id" in entry:
            latest[entry["id"]] = check_failure(entry, f"{path}:{line}")
    committed = set() if committed is None else committed
    return [v for k, v in sorted(latest.items()) if k not in committed]


def failures_text(failures: list[dict]) -> str:
    return "".join(dumps_line(f) for f in failures)
