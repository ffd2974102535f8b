"""``flowstore export --to webdataset``: a store as tar shards that the ``webdataset`` library
reads, one sample per whole video (writing needs only the standard library).

A video's files sit together in one tar, under the sample key ``key = video_key(id)``::

    <key>.entry.json            the video entry (docs/FORMAT.md, section 3)
    <key>.settings.json         the store's settings and header (everything but "videos")
    <key>.rgb.000000.jpg ...    rgb records, the payloads as stored (.jpg / .png / .raw)
    <key>.flow_x.000000.jpg ... flow_x records; likewise flow_y
    <key>.flow_range.000000.f4  (minmax stores) 16 bytes, float32 lo_x, hi_x, lo_y, hi_y

Indices are 0-based store indices, 6 digits. ``webdataset`` splits a name at the first dot of its
last path part, so the key percent-encodes the id (``urllib.parse.quote`` with ``/`` kept) and
also each ``.`` (as ``%2E``); the exact id is in ``entry.json``. A shard is
``OUT/shard-000000.tar``; a new one starts once a shard exceeds ``shard_size`` bytes.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
import urllib.parse
from pathlib import Path

from ..data.source import open_source
from ..store.format import FLOW_RANGE, FLOW_X, FLOW_Y, RGB
from ..store.records import pack_range

EXTENSIONS = {"jpeg": "jpg", "png": "png", "raw": "raw"}
INDEX = "{:06d}"
SHARD = "shard-{:06d}.tar"


def video_key(video_id: str) -> str:
    return urllib.parse.quote(video_id, safe="/").replace(".", "%2E")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def video_files(src, video: str, settings: dict):
    """``(name, bytes)`` of one video's sample, in the order written."""
    key = video_key(video)
    entry = src.entry(video)
    yield f"{key}.entry.json", json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8")
    yield f"{key}.settings.json", json.dumps(settings, sort_keys=True, ensure_ascii=False).encode("utf-8")
    frame_ext, flow_ext = EXTENSIONS[src.frame_codec], EXTENSIONS[src.flow_codec]
    for i in range(src.num_frames(video)):
        yield f"{key}.{RGB}.{INDEX.format(i)}.{frame_ext}", src.frame_bytes(video, i)
    n = src.num_flows(video)
    for i0 in range(0, n, 256):
        idx = list(range(i0, min(n, i0 + 256)))
        xs, ys = src.flow_bytes(video, idx)
        for kind, payloads in ((FLOW_X, xs), (FLOW_Y, ys)):
            for i, data in zip(idx, payloads):
                yield f"{key}.{kind}.{INDEX.format(i)}.{flow_ext}", data
    if src.quant.scheme == "minmax":
        for i in range(n):
            yield f"{key}.{FLOW_RANGE}.{INDEX.format(i)}.f4", pack_range(src.flow_range(video, i))


def export_webdataset(store, out_dir, *, videos=None, shard_size: int = 1 << 30) -> list[Path]:
    """Write the store's videos as tar shards under ``out_dir``; returns the shard paths."""
    src = open_source(store)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(src.header)  # the manifest without its videos (O(1) with a catalog)
    shards: list[Path] = []
    tar = None
    try:
        for video in (src.videos if videos is None else videos):
            if tar is None or tar.fileobj.tell() >= shard_size:
                if tar is not None:
                    tar.close()
                shards.append(out / SHARD.format(len(shards)))
                tar = tarfile.open(shards[-1], "w", format=tarfile.PAX_FORMAT)
            for name, data in video_files(src, video, settings):
                _add(tar, name, data)
    finally:
        if tar is not None:
            tar.close()
    for path in shards:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    return shards


__all__ = ["export_webdataset", "video_files", "video_key"]
