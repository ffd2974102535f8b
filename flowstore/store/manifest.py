"""Reading and writing the store directory's JSON files: manifest, commit log, failures.

Writes are atomic (temporary name, fsync, rename, fsync of the directory) or append-only
complete lines followed by fsync, so a crash at any moment leaves a readable store.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .format import COMMIT_LOG, FAILURES, MANIFEST, check_version, dumps_line
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


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """Complete, parseable lines only: a torn last line from a crash is ignored."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    out = []
    for line in raw.split(b"\n")[:-1]:  # the part after the last newline is incomplete
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def load_manifest(root: str | os.PathLike) -> dict:
    """The manifest header with ``videos`` = every committed video (checkpoint + commit log)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        if not root.exists():
            raise StoreNotFoundError(f"no store at {root}: the directory does not exist")
        raise StoreNotFoundError(f"{root} is not a flowstore store: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    check_version(manifest, str(path))
    videos = {v["id"]: v for v in manifest.get("videos", [])}
    for entry in read_json_lines(root / COMMIT_LOG):
        if "id" in entry:
            videos[entry["id"]] = entry
    manifest["videos"] = sorted(videos.values(), key=lambda v: v["id"])
    return manifest


def load_failures(root: str | os.PathLike, committed: set[str] | None = None) -> list[dict]:
    """Latest failure per video id, leaving out videos that have since been committed."""
    latest: dict[str, dict] = {}
    for entry in read_json_lines(Path(root) / FAILURES):
        if "id" in entry:
            latest[entry["id"]] = entry
    committed = committed or set()
    return [v for k, v in sorted(latest.items()) if k not in committed]


def failures_text(failures: list[dict]) -> str:
    return "".join(dumps_line(f) for f in failures)
