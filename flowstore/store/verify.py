"""``flowstore verify``: every committed record is present, its CRC-32 matches, and (optionally)
it decodes to an image of the recorded size. The records are those of every flow direction the
store holds (``record_counts`` with the header's ``directions``). The catalog (format 1.2)
must agree with the log."""
from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable
from pathlib import Path

from ..errors import FlowstoreError
from .shards import open_shard
from .catalog import decode_value, open_catalog, tail_entries
from .format import CATALOG_DIR, COMMIT_LOG, RGB, SHARD_DIR, store_directions
from .manifest import load_manifest
from .reader import shard_min_sizes
from .records import RANGE_KINDS, decode_flow_component, decode_frame, record_counts, records_crc32


@dataclasses.dataclass
class VerifyReport:
    videos: int = 0
    records: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def catalog_problems(root: Path, manifest: dict) -> list[str]:
    """Where the catalog (format 1.2) disagrees with the full read (``manifest`` from
    :func:`load_manifest`: manifest videos + the whole log). No catalog, or a stale one, is no
    problem: readers then take the full read too and the next writer rebuilds it."""
    opened = open_catalog(root)
    if opened is None:
        return []
    catalog, lines = opened
    try:
        header = catalog.doc["header"]
        tail = tail_entries(lines, header, root / COMMIT_LOG)
        want = {e["id"]: e for e in manifest["videos"]}
        got = {}
        for key, value, segment in catalog.items():
            vid = key.decode("utf-8", errors="replace")
            got[vid] = decode_value(value, vid, header, f"{root}/{CATALOG_DIR}/{segment}")
        got.update(tail)
        problems = [f"catalog: video {vid!r} is committed in {COMMIT_LOG} but not in the catalog"
                    for vid in sorted(set(want) - set(got))[:20]]
        problems += [f"catalog: video {vid!r} is in the catalog but not committed" for vid in sorted(set(got) - set(want))[:20]]
        problems += [f"catalog: video {vid!r} differs from its latest entry in {COMMIT_LOG}"
                     for vid in sorted(set(got) & set(want)) if got[vid] != want[vid]][:20]
        distinct = catalog.doc["videos"] + catalog.count_new(tail)
        if distinct != len(want):
            problems.append(f"catalog: {CATALOG_DIR}/catalog.json counts {distinct} videos, the log has {len(want)}")
        return problems
    except FlowstoreError as exc:
        return [f"catalog: {exc.message}"]
    finally:
        catalog.close()


def verify_store(root: str | Path, *, decode: bool = False, progress: Callable[[int], None] | None = None,
                 max_problems: int = 1000) -> VerifyReport:
    root = Path(root)
    manifest = load_manifest(root)
    backend = manifest["backend"]
    scheme = manifest["quantization"]["scheme"]
    directions = store_directions(manifest)
    report = VerifyReport()
    report.problems.extend(catalog_problems(root, manifest))
    readers = {}
    min_sizes = shard_min_sizes(manifest["videos"])
    try:
        for entry in manifest["videos"]:
            vid, shard = entry["id"], entry["shard"]
            report.videos += 1
            try:
                if shard not in readers:
                    readers[shard] = open_shard(backend, root, shard, video=vid, min_size=min_sizes[shard])
                reader = readers[shard]
                shape = (entry["height"], entry["width"])
                crcs: dict[str, list[int]] = {}
                problems_before = len(report.problems)
                for kind, count in record_counts(entry, scheme, directions):
                    kind_crcs = crcs[kind] = []
                    for index, payload, crc_ok in reader.iter_records(vid, kind, count):
                        report.records += 1
                        kind_crcs.append(zlib.crc32(payload))
                        where = f"{vid}/{kind}/{index} in {SHARD_DIR}/{shard}"
                        if not crc_ok:
                            report.problems.append(f"checksum mismatch: {where}")
                        elif decode and kind not in RANGE_KINDS:
                            try:
                                if kind == RGB:
                                    img = decode_frame(payload, manifest["frames"]["codec"], shape)
                                else:
                                    img = decode_flow_component(payload, manifest["flow"]["codec"], shape)
                                if img.shape[:2] != shape:
                                    report.problems.append(f"wrong size {img.shape[:2]} (expected {shape}): {where}")
                            except ValueError as exc:  # incl. a raw record of the wrong size
                                report.problems.append(f"does not decode ({exc}): {where}")
                        if len(report.problems) >= max_problems:
                            report.problems.append(f"... stopped after {max_problems} problems")
                            return report
                if ("records_crc32" in entry and len(report.problems) == problems_before
                        and records_crc32(crcs) != entry["records_crc32"]):
                    # every record matches its own CRC, yet not the ones committed: e.g. a shard
                    # of the same name copied from another store
                    report.problems.append(f"records differ from the committed ones (records_crc32): video {vid!r} "
                                           f"in {SHARD_DIR}/{shard}")
            except (KeyError, FileNotFoundError) as exc:
                report.problems.append(f"missing data for video {vid!r} in {SHARD_DIR}/{shard}: "
                                       f"{exc.args[0] if exc.args else exc}")
            except FlowstoreError as exc:  # a damaged shard file (open_shard, the backends' read errors)
                report.problems.append(f"unreadable shard {SHARD_DIR}/{shard} (video {vid!r}): {exc.message}")
            except Exception as exc:  # anything else a library raises on a damaged file
                report.problems.append(f"unreadable shard {SHARD_DIR}/{shard} (video {vid!r}): {exc.__class__.__name__}: {exc}")
            if progress is not None:
                progress(1)
    finally:
        for reader in readers.values():
            try:
                reader.close()
            except Exception:
                pass
    return report
