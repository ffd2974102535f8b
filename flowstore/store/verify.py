"""``flowstore verify``: every committed record is present, its CRC-32 matches, and (optionally)
it decodes to an image of the recorded size."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from .backend import reader_class
from .format import FLOW_RANGE, RGB, shard_path
from .manifest import load_manifest
from .records import decode_flow_component, decode_frame, record_counts


@dataclasses.dataclass
class VerifyReport:
    videos: int = 0
    records: int = 0
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(root: str | Path, *, decode: bool = False, progress: Callable[[int], None] | None = None,
                 max_problems: int = 1000) -> VerifyReport:
    root = Path(root)
    manifest = load_manifest(root)
    backend = manifest["backend"]
    scheme = manifest["quantization"]["scheme"]
    report = VerifyReport()
    readers = {}
    try:
        for entry in manifest["videos"]:
            vid, shard = entry["id"], entry["shard"]
            report.videos += 1
            try:
                if shard not in readers:
                    readers[shard] = reader_class(backend)(str(shard_path(root, shard)))
                reader = readers[shard]
                shape = (entry["height"], entry["width"])
                for kind, count in record_counts(entry, scheme):
                    for index, payload, crc_ok in reader.iter_records(vid, kind, count):
                        report.records += 1
                        where = f"{vid}/{kind}/{index} in shards/{shard}"
                        if not crc_ok:
                            report.problems.append(f"checksum mismatch: {where}")
                        elif decode and kind != FLOW_RANGE:
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
            except (KeyError, FileNotFoundError) as exc:
                report.problems.append(f"missing data for video {vid!r}: {exc.args[0] if exc.args else exc}")
            except Exception as exc:  # a damaged shard file (lmdb.CorruptedError, OSError from h5py, ...)
                report.problems.append(f"unreadable shard shards/{shard} (video {vid!r}): {exc.__class__.__name__}: {exc}")
            if progress is not None:
                progress(1)
    finally:
        for reader in readers.values():
            try:
                reader.close()
            except Exception:
                pass
    return report
