"""The one versioned specification of a flowstore store (mirrored in docs/FORMAT.md).

A store is a directory::

    STORE/
      manifest.json      header (format, version, settings) + videos committed before 1.2 (frozen)
      commits.jsonl      every video entry committed since (append-only from 1.2 on)
      catalog/           (1.2) derived index for a fast open: catalog.json + immutable segments
      failures.jsonl     videos that failed, one JSON object per line
      writer.lock        held (flock) by the one process writing the store
      shards/shard-00000.lmdb | shard-00000.h5 ...   each holds whole videos

The committed videos are the union of ``manifest.json["videos"]`` and the complete lines of
``commits.jsonl`` (one JSON object ending in a newline; a later entry with the same id wins).
Since 1.2 a writer never empties the log nor rewrites the manifest's videos; ``catalog/``
indexes the log (see :func:`check_catalog` and docs/FORMAT.md section 13) so that a reader
need not parse every entry. The catalog is derived: missing or stale, the union above is read.
Anything in a shard that no committed entry points to is garbage left by an interrupted run and
is never read.

Records (indices are 0-based; mmaction2 rawframes are 1-based, converted only at import/export):

* ``rgb``    frame ``i`` (0 <= i < num_frames), an RGB image encoded with ``frames.codec``
* ``flow_x`` / ``flow_y``  flow ``i`` (0 <= i < num_flows) from frame ``i`` to frame
  ``i + stride``, one uint8 component encoded with ``flow.codec``
* ``flow_range``  (``minmax`` quantization only) 16 bytes, float32 little-endian
  ``lo_x, hi_x, lo_y, hi_y`` of flow ``i``
* since 1.2, in stores whose ``directions`` setting holds ``"backward"``: ``flow_bx`` /
  ``flow_by`` (and ``flow_brng`` for minmax) backward flow ``i``, from frame ``i + stride`` to
  frame ``i``, laid out as the forward kinds. A store without ``"forward"`` in ``directions``
  has no ``flow_x`` / ``flow_y`` / ``flow_range`` records.

LMDB shard (a single file, ``subdir=False``): key ``f"{video_id}/{kind}/{index:06d}"`` in
UTF-8; value = 4-byte little-endian CRC-32 (zlib.crc32) of the payload, then the payload.

HDF5 shard: group ``/videos/{quote(video_id)}`` — the id percent-encoded with
``urllib.parse.quote(video_id, safe="")`` (bytes other than ``A-Za-z0-9_.-~`` of the UTF-8 id
become ``%XX``, upper-case), so that groups are siblings that never nest or collide with datasets;
per kind three datasets: ``{kind}_data`` (uint8,
1-D: all payloads concatenated in index order), ``{kind}_offsets`` (int64, n + 1: record ``i``
is ``data[offsets[i]:offsets[i+1]]``) and ``{kind}_crc32`` (uint32, n).
"""
from __future__ import annotations

import json
import os
import re
import struct
import urllib.parse
import zlib
from pathlib import Path
from typing import NotRequired, TypedDict

from ..errors import DamagedStoreError, InputError
from ..registry import FieldView
from .backend import BACKENDS

FORMAT_NAME = "flowstore"
FORMAT_VERSION = "1.2"  # major.minor: readers refuse a newer major, accept any minor

MANIFEST = "manifest.json"
COMMIT_LOG = "commits.jsonl"
FAILURES = "failures.jsonl"
LOCK_FILE = "writer.lock"
SHARD_DIR = "shards"
CATALOG_DIR = "catalog"          # since 1.2 (docs/FORMAT.md section 13)
CATALOG_FILE = "catalog.json"    # under CATALOG_DIR, replaced atomically
CATALOG_NAME = "flowstore-catalog"
CATALOG_VERSION = 1
SEGMENT_SUFFIX = ".lmdb"

#: backend name -> suffix of its shard files (a view of the registry in store/backend.py)
SHARD_SUFFIX = FieldView(BACKENDS, "suffix")

RGB = "rgb"
FLOW_X = "flow_x"
FLOW_Y = "flow_y"
FLOW_RANGE = "flow_range"
# since 1.2: backward flow (frame i + stride -> frame i); "flow_brng", not "flow_brange", keeps
# the longest kind at 10 bytes, so the 493-byte id limit of 1.0/1.1 stores stays as it was
FLOW_BX = "flow_bx"
FLOW_BY = "flow_by"
FLOW_BRANGE = "flow_brng"
#: every record kind, in the order records_crc32 takes them (store/records.py)
KINDS = (RGB, FLOW_X, FLOW_Y, FLOW_RANGE, FLOW_BX, FLOW_BY, FLOW_BRANGE)

#: flow directions a store may hold (the header's ``directions`` setting, since 1.2), in the
#: order the setting lists them; a store without the key holds forward flow only
FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)
#: ``extract --direction`` (and ``direction = ...`` in recipes) -> the directions stored
DIRECTION_OPTIONS = {"forward": (FORWARD,), "backward": (BACKWARD,), "both": DIRECTIONS}
#: per direction: the (x, y, minmax range) record kinds of one flow
DIRECTION_KINDS = {FORWARD: (FLOW_X, FLOW_Y, FLOW_RANGE), BACKWARD: (FLOW_BX, FLOW_BY, FLOW_BRANGE)}

INDEX_DIGITS = 6
MAX_LMDB_KEY_BYTES = 511  # LMDB's default maximum key size
_KEY_SUFFIX_BYTES = len(f"/{max(KINDS, key=len)}/") + INDEX_DIGITS
MAX_VIDEO_ID_BYTES = MAX_LMDB_KEY_BYTES - _KEY_SUFFIX_BYTES
MAX_RECORDS_PER_VIDEO = 10**INDEX_DIGITS  # 9.2 hours at 30 fps; keys keep a fixed width

CRC_HEADER = struct.Struct("<I")

class VideoEntry(TypedDict):
    """One committed video, as a line of ``commits.jsonl`` or an item of ``manifest["videos"]``
    (docs/FORMAT.md describes each key)."""

    id: str
    source: str
    source_size: int
    source_sha256: str
    num_frames: int
    num_flows: int
    width: int
    height: int
    shard: str           # file name under shards/
    bytes: int           # payload bytes of all its records
    # since 1.1 (absent in 1.0 stores): the shard's size in bytes once this video was durable,
    # and the CRC-32 of its records' CRC-32s (flowstore.store.records.records_crc32)
    shard_size: NotRequired[int]
    records_crc32: NotRequired[int]
    committed_at: NotRequired[str]  # set by the writer when it commits the video
    # since 1.2, only in stores extracted with --fps: which decoded source frames were kept
    # (0-based, run-length: [first, step, count] runs, see encode_runs) and their decoded
    # timestamps in seconds (rounded to microseconds), one per stored frame
    source_frames: NotRequired[list]
    source_times: NotRequired[list]


#: entry keys added in format 1.1, written by the extraction: optional (absent in 1.0 stores)
ENTRY_KEYS_1_1 = ("shard_size", "records_crc32")
#: entry keys added in format 1.2, written by an extraction with --fps only
ENTRY_KEYS_1_2 = ("source_frames", "source_times")
#: keys of a manifest video entry (format 1.0)
VIDEO_ENTRY_KEYS = tuple(k for k in VideoEntry.__annotations__ if k not in ENTRY_KEYS_1_1 + ENTRY_KEYS_1_2)
#: header keys whose values must match when a store is extended by another run
SETTINGS_KEYS = ("backend", "frames", "resize", "decoder", "stride", "flow", "quantization", "directions", "fps")
#: the value a settings key added after 1.0 has in a store whose header lacks it (fps: null, every
#: decoded frame kept)
SETTING_DEFAULTS = {"directions": [FORWARD], "fps": None}


def store_setting(header: dict, key: str):
    """A settings key of a store's header, its default where an older store lacks it."""
    return header.get(key, SETTING_DEFAULTS.get(key))


def store_directions(header: dict) -> tuple[str, ...]:
    """The flow directions a store holds (``("forward",)`` for stores older than 1.2)."""
    return tuple(store_setting(header, "directions"))


class FormatError(InputError):
    """A store that is not a flowstore store, or one written by a newer major version."""


#: "MAJOR.MINOR", two ASCII decimal integers (no signs, spaces or other digits)
_VERSION_RE = re.compile(r"([0-9]+)\.([0-9]+)", re.ASCII)


def parse_version(text: str) -> tuple[int, int]:
    m = _VERSION_RE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"not MAJOR.MINOR: {text!r}")
    return int(m.group(1)), int(m.group(2))


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


def shard_path(root: str | os.PathLike, name: str) -> Path:
    """Where the shard an entry names (``entry["shard"]``) lives in the store ``root``."""
    return Path(root) / SHARD_DIR / name


def record_key(video_id: str, kind: str, index: int) -> bytes:
    return f"{video_id}/{kind}/{index:0{INDEX_DIGITS}d}".encode("utf-8")


def pack_record(payload: bytes) -> bytes:
    """LMDB value: crc32 header + payload."""
    return CRC_HEADER.pack(zlib.crc32(payload)) + payload


def unpack_record(value: bytes, *, check: bool = False, what: str = "record") -> bytes:
    """Strip (and optionally check) the crc32 header; raises DamagedStoreError on a mismatch
    (and, when checking, on a value too short to hold the header)."""
    payload = value[CRC_HEADER.size:]
    if check:
        if len(value) < CRC_HEADER.size:
            raise DamagedStoreError(f"{what}: {len(value)} bytes, shorter than its CRC-32 header")
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


def encode_runs(indices) -> list[list[int]]:
    """Increasing indices as ``[first, step, count]`` runs (``step`` >= 1): ``0, 3, 6, 8`` ->
    ``[[0, 3, 3], [8, 1, 1]]``; a video entry's ``source_frames``."""
    runs: list[list[int]] = []
    for i in map(int, indices):
        if runs:
            first, step, count = runs[-1]
            last = first + step * (count - 1)
            if count == 1 and i > first:
                runs[-1] = [first, i - first, 2]
                continue
            if i - last == step:
                runs[-1][2] += 1
                continue
        runs.append([i, 1, 1])
    return runs


def decode_runs(runs) -> list[int]:
    """The indices of :func:`encode_runs`'s runs."""
    return [first + step * k for first, step, count in runs for k in range(count)]


def dumps_line(obj: dict) -> str:
    """One JSON-lines record: a complete line ending in a newline, never split."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True) + "\n"


# -- checking what a store's JSON files say (a store from elsewhere is untrusted input) ------
_SHA256_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_SHARD_NAME_RE = re.compile(r"shard-[0-9]{5,}(\.[a-z0-9]+)", re.ASCII)


def _field(obj: dict, key: str, kind: type | tuple, where: str):
    if key not in obj:
        raise FormatError(f"{where}: key {key!r} is missing")
    value = obj[key]
    # bool is an int in Python, never in the spec
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))):
        raise FormatError(f"{where}: key {key!r} must be {_type_name(kind)}, got {json.dumps(value)[:80]}")
    return value


def _type_name(kind) -> str:
    names = {str: "a string", int: "an integer", dict: "an object", list: "an array", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _count(obj: dict, key: str, lo: int, hi: int, where: str) -> int:
    value = _field(obj, key, int, where)
    if not lo <= value <= hi:
        raise FormatError(f"{where}: key {key!r} is {value}, outside {lo}..{hi}")
    return value


def check_header(manifest, where: str) -> dict:
    """The header of ``manifest.json`` against the spec (docs/FORMAT.md, section 2); returns it.
    Checks what a reader uses: format and version, backend, stride, codecs, quantization."""
    from ..codec import CODECS
    from ..quantize import QuantSpec

    if not isinstance(manifest, dict):
        raise FormatError(f"{where}: must be a JSON object, got {type(manifest).__name__}")
    check_version(manifest, where)
    backend = _field(manifest, "backend", str, where)
    if backend not in BACKENDS:
        raise FormatError(f"{where}: key 'backend' is {backend!r}; this flowstore reads {sorted(BACKENDS)}")
    _count(manifest, "stride", 1, MAX_RECORDS_PER_VIDEO, where)
    for section in ("frames", "flow"):
        codec = _field(_field(manifest, section, dict, where), "codec", str, f"{where}: {section}")
        if codec not in CODECS:
            raise FormatError(f"{where}: key '{section}.codec' is {codec!r}; choose from {sorted(CODECS)}")
    quant = _field(manifest, "quantization", dict, where)
    try:
        QuantSpec.from_manifest(quant)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: key 'quantization' is not a valid quantization ({exc})") from None
    if "directions" in manifest:
        directions = _field(manifest, "directions", list, where)
        if not directions or directions != [d for d in DIRECTIONS if d in directions]:
            raise FormatError(f"{where}: key 'directions' is {json.dumps(directions)[:80]}; it lists "
                              f"one or both of {list(DIRECTIONS)} in that order")
    _field(manifest, "videos", list, where)
    return manifest


def check_entry(entry, *, backend: str, stride: int, where: str) -> VideoEntry:
    """One video entry (section 3) against the spec; returns it. ``where`` names the file and
    line or item, e.g. ``"STORE/commits.jsonl:12"``."""
    if not isinstance(entry, dict):
        raise FormatError(f"{where}: a video entry must be a JSON object, got {type(entry).__name__}")
    video_id = _field(entry, "id", str, where)
    try:
        check_video_id(video_id)
    except InputError as exc:
        raise FormatError(f"{where}: key 'id': {exc}") from None
    where = f"{where} (video {video_id!r})"
    _field(entry, "source", str, where)
    _count(entry, "source_size", 0, 1 << 62, where)
    if not _SHA256_RE.fullmatch(_field(entry, "source_sha256", str, where)):
        raise FormatError(f"{where}: key 'source_sha256' is not 64 lower-case hex digits")
    num_frames = _count(entry, "num_frames", stride + 1, MAX_RECORDS_PER_VIDEO, where)
    num_flows = _count(entry, "num_flows", 1, MAX_RECORDS_PER_VIDEO, where)
    if num_flows != num_frames - stride:
        raise FormatError(f"{where}: num_flows {num_flows} must be num_frames - stride = {num_frames - stride}")
    _count(entry, "width", 1, 1 << 16, where)
    _count(entry, "height", 1, 1 << 16, where)
    shard = _field(entry, "shard", str, where)
    m = _SHARD_NAME_RE.fullmatch(shard)
    if m is None or m.group(1) != SHARD_SUFFIX[backend]:
        raise FormatError(f"{where}: key 'shard' is {shard!r}, not a {backend} shard name like "
                          f"{shard_name(backend, 0)!r} (a file name under {SHARD_DIR}/)")
    _count(entry, "bytes", 0, 1 << 62, where)
    if "shard_size" in entry:
        _count(entry, "shard_size", 0, 1 << 62, where)
    if "records_crc32" in entry:
        _count(entry, "records_crc32", 0, 0xFFFFFFFF, where)
    if "committed_at" in entry:
        _field(entry, "committed_at", str, where)
    if "source_frames" in entry or "source_times" in entry:
        _check_source_frames(entry, num_frames, where)
    return entry


#: a catalog segment's file name; group 1 is its number
SEGMENT_NAME_RE = re.compile(r"segment-([0-9]{8,})\.lmdb", re.ASCII)


def segment_name(number: int) -> str:
    """File name (under ``catalog/``) of catalog segment ``number``."""
    return f"segment-{number:08d}{SEGMENT_SUFFIX}"


def segment_key(video_id: str) -> bytes:
    """Key of a video in a catalog segment: its id in UTF-8 (LMDB sorts keys bytewise, which is
    the code-point order of the ids)."""
    return video_id.encode("utf-8")


def segment_value(entry: dict) -> bytes:
    """Value of a video in a catalog segment: its entry as compact UTF-8 JSON, keys sorted."""
    return json.dumps(entry, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_catalog(doc, where: str) -> dict:
    """``catalog/catalog.json`` (docs/FORMAT.md section 13) against the spec; returns it.
    Raises FormatError; a reader treats any error here as "no catalog" (it is derived data)."""
    if not isinstance(doc, dict):
        raise FormatError(f"{where}: must be a JSON object, got {type(doc).__name__}")
    if doc.get("format") != CATALOG_NAME:
        raise FormatError(f"{where}: key 'format' must be {CATALOG_NAME!r}")
    version = _count(doc, "catalog_version", 1, 1 << 31, where)
    if version > CATALOG_VERSION:
        raise FormatError(f"{where}: catalog_version {version} is newer than {CATALOG_VERSION}")
    segments = _field(doc, "segments", list, where)
    for n, seg in enumerate(segments):
        at = f"{where}: segments[{n}]"
        if not isinstance(seg, dict):
            raise FormatError(f"{at}: must be an object")
        if not SEGMENT_NAME_RE.fullmatch(_field(seg, "name", str, at)):
            raise FormatError(f"{at}: key 'name' is not a segment name like {segment_name(0)!r}")
        _count(seg, "level", 0, 64, at)
        _count(seg, "entries", 0, 1 << 62, at)
    if len({s["name"] for s in segments}) != len(segments):
        raise FormatError(f"{where}: a segment is listed twice")
    _count(doc, "videos", 0, 1 << 62, where)
    log = _field(doc, "log", dict, where)
    for key in ("offset", "lines", "inode", "last_line_start", "last_line_crc32"):
        _count(log, key, 0, 1 << 63, f"{where}: log")
    if log["last_line_start"] > log["offset"]:
        raise FormatError(f"{where}: log.last_line_start is past log.offset")
    manifest = _field(doc, "manifest", dict, where)
    for key in ("inode", "size", "mtime_ns"):
        _count(manifest, key, 0, 1 << 63, f"{where}: manifest")
    check_header({**_field(doc, "header", dict, where), "videos": []}, f"{where}: header")
    sizes = _field(doc, "shard_sizes", dict, where)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in sizes.values()):
        raise FormatError(f"{where}: shard_sizes must map shard names to byte counts")
    return doc


def _check_source_frames(entry: dict, num_frames: int, where: str) -> None:
    runs = _field(entry, "source_frames", list, where)
    times = _field(entry, "source_times", list, where)
    if not all(isinstance(r, list) and len(r) == 3 and all(isinstance(v, int) and not isinstance(v, bool) for v in r)
               and r[0] >= 0 and r[1] >= 1 and r[2] >= 1 for r in runs):
        raise FormatError(f"{where}: key 'source_frames' must be [first, step, count] runs of whole numbers "
                          f"(first >= 0, step >= 1, count >= 1)")
    indices = decode_runs(runs) if sum(r[2] for r in runs) == num_frames else None
    if indices is None or any(b <= a for a, b in zip(indices, indices[1:])):
        raise FormatError(f"{where}: key 'source_frames' must list {num_frames} increasing frame indices (num_frames)")
    if (len(times) != num_frames or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in times)
            or any(b < a for a, b in zip(times, times[1:]))):
        raise FormatError(f"{where}: key 'source_times' must be {num_frames} non-decreasing numbers (seconds)")


def check_failure(failure, where: str) -> dict:
    """One line of ``failures.jsonl`` (section 9); returns it."""
    if not isinstance(failure, dict):
        raise FormatError(f"{where}: a failure must be a JSON object, got {type(failure).__name__}")
    for key in ("id", "source", "reason"):
        _field(failure, key, str, where)
    return failure
