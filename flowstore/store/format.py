"""The one versioned specification of a flowstore store (mirrored in docs/FORMAT.md).

A store is a directory::

    STORE/
      manifest.json      header (format, version, settings) + committed videos (checkpoint)
      commits.jsonl      video entries committed since manifest.json was last rewritten
      failures.jsonl     videos that failed, one JSON object per line
      writer.lock        held (flock) by the one process writing the store
      shards/shard-00000.lmdb | shard-00000.h5 ...   each holds whole videos

The committed videos are the union of ``manifest.json["videos"]`` and the complete lines of
``commits.jsonl`` (one JSON object ending in a newline; a later entry with the same id wins).
Anything in a shard that no committed entry points to is garbage left by an interrupted run and
is never read.

Records (indices are 0-based; mmaction2 rawframes are 1-based, converted only at export):

* ``rgb``    frame ``i`` (0 <= i < num_frames), an RGB image encoded with ``frames.codec``
* ``flow_x`` / ``flow_y``  flow ``i`` (0 <= i < num_flows) from frame ``i`` to frame
  ``i + stride``, one uint8 component encoded with ``flow.codec``
* ``flow_range``  (``minmax`` quantization only) 16 bytes, float32 little-endian
  ``lo_x, hi_x, lo_y, hi_y`` of flow ``i``

LMDB shard (a single file, ``subdir=False``): key ``f"{video_id}/{kind}/{index:06d}"`` in
UTF-8; value = 4-byte little-endian CRC-32 (zlib.crc32) of the payload, then the payload.

HDF5 shard: group ``/videos/{quote(video_id)}`` — the id percent-encoded with
``urllib.parse.quote(video_id, safe="")`` so that ids never nest or collide with dataset names;
per kind three datasets: ``{kind}_data`` (uint8,
1-D: all payloads concatenated in index order), ``{kind}_offsets`` (int64, n + 1: record ``i``
is ``data[offsets[i]:offsets[i+1]]``) and ``{kind}_crc32`` (uint32, n).
"""
from __future__ import annotations

import json
import struct
import urllib.parse
import zlib
from ..errors import DamagedStoreError, InputError
from ..registry import FieldView
from .backend import BACKENDS

FORMAT_NAME = "flowstore"
FORMAT_VERSION = "1.0"  # major.minor: readers refuse a newer major, accept any minor

MANIFEST = "manifest.json"
COMMIT_LOG = "commits.jsonl"
FAILURES = "failures.jsonl"
LOCK_FILE = "writer.lock"
SHARD_DIR = "shards"

#: backend name -> suffix of its shard files (a view of the registry in store/backend.py)
SHARD_SUFFIX = FieldView(BACKENDS, "suffix")

RGB = "rgb"
FLOW_X = "flow_x"
FLOW_Y = "flow_y"
FLOW_RANGE = "flow_range"
KINDS = (RGB, FLOW_X, FLOW_Y, FLOW_RANGE)

INDEX_DIGITS = 6
MAX_LMDB_KEY_BYTES = 511  # LMDB's default maximum key size
_KEY_SUFFIX_BYTES = len(f"/{FLOW_RANGE}/") + INDEX_DIGITS
MAX_VIDEO_ID_BYTES = MAX_LMDB_KEY_BYTES - _KEY_SUFFIX_BYTES
MAX_RECORDS_PER_VIDEO = 10**INDEX_DIGITS  # 9.2 hours at 30 fps; keys keep a fixed width

CRC_HEADER = struct.Struct("<I")

#: keys of a manifest video entry (docs/FORMAT.md describes each)
VIDEO_ENTRY_KEYS = (
    "id", "source", "source_size", "source_sha256", "num_frames", "num_flows",
    "width", "height", "shard", "bytes", "committed_at",
)
#: header keys whose values must match when a store is extended by another run
SETTINGS_KEYS = ("backend", "frames", "resize", "decoder", "stride", "flow", "quantization")


class FormatError(InputError):
    """A store that is not a flowstore store, or one written by a newer major version."""


def parse_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")
    return int(major), int(minor)


def check_version(header: dict, where: str) -> None:
    if header.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: not a flowstore store (format={header.get('format')!r})")
    found = header.get("format_version", "?")
    try:
        major = parse_version(found)[0]
    except (ValueError, AttributeError):
        raise FormatError(f"{where}: unreadable format_version {found!r}") from None
    ours = parse_version(FORMAT_VERSION)[0]
    if major > ours:
        raise FormatError(
            f"{where}: written with format {found}, newer than this flowstore understands "
            f"({FORMAT_VERSION}); upgrade flowstore (pip install -U flowstore)"
        )


def shard_name(backend: str, number: int) -> str:
    return f"shard-{number:05d}{SHARD_SUFFIX[backend]}"


def record_key(video_id: str, kind: str, index: int) -> bytes:
    return f"{video_id}/{kind}/{index:0{INDEX_DIGITS}d}".encode("utf-8")


def pack_record(payload: bytes) -> bytes:
    """LMDB value: crc32 header + payload."""
    return CRC_HEADER.pack(zlib.crc32(payload)) + payload


def unpack_record(value: bytes, *, check: bool = False, what: str = "record") -> bytes:
    """Strip (and optionally check) the crc32 header; raises ValueError on a mismatch."""
    payload = value[CRC_HEADER.size:]
    if check:
        (stored,) = CRC_HEADER.unpack_from(value)
        if zlib.crc32(payload) != stored:
            raise DamagedStoreError(f"checksum mismatch in {what}")
    return bytes(payload)


def hdf5_group(video_id: str) -> str:
    # one flat level: "a/b" must not live inside video "a"'s group
    return f"videos/{urllib.parse.quote(video_id, safe='')}"


def check_video_id(video_id: str) -> None:
    if not video_id or video_id.startswith("/") or any(part in ("", ".", "..") for part in video_id.split("/")):
        raise InputError(f"bad video id {video_id!r}: ids are relative paths without empty, '.' or '..' parts")
    if len(video_id.encode("utf-8")) > MAX_VIDEO_ID_BYTES:
        raise InputError(
            f"video id {video_id[:60]!r}... is {len(video_id.encode())} bytes; at most "
            f"{MAX_VIDEO_ID_BYTES} fit in an LMDB key. Use a shorter path or a --list with a closer --root"
        )


def dumps_line(obj: dict) -> str:
    """One JSON-lines record: a complete line ending in a newline, never split."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"
