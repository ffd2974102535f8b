"""Make the frozen v1.0 golden stores under tests/golden/ (read by tests/test_golden.py).

RUN ONCE; NEVER REGENERATE FOR A RELEASE. These files are the compatibility promise of
docs/FORMAT.md, section 11: every later flowstore must read them as they are. A change that makes
tests/test_golden.py fail is a format break, not a reason to run this script again. (A new
format version gets a new, additional fixture made by the flowstore of that version.)

Made with flowstore 0.1.0 (format 1.0) from the first 5 frames of the shared clip
``../shared/data/videos/part_0.mp4`` (re-encoded as an MJPEG .avi in a temporary folder, the entries'
``source``), at 32x24, farneback flow, two ids (a plain one and a nested non-ASCII one):

* ``v1.0-lmdb``: LMDB, JPEG frames and flow, ``bound`` 20, stride 1 (the defaults)
* ``v1.0-hdf5``: HDF5, PNG frames and flow, ``minmax``, stride 2

``expected.json`` holds every record's CRC-32 and the SHA-256 of the decoded arrays (exact for
PNG; JPEG decoders may differ by a level, so ``expected_jpeg.npz`` holds the decoded first frame
and flow of each video of the JPEG store, compared with a tolerance).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

IDS = ("part_0", "cls/é clip")
STORES = {
    "v1.0-lmdb": dict(backend="lmdb", scheme="bound", flow_codec="jpeg", frame_codec="jpeg", stride=1),
    "v1.0-hdf5": dict(backend="hdf5", scheme="minmax", flow_codec="png", frame_codec="png", stride=2),
}


def sha(arrays) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def expected_of(root: Path) -> tuple[dict, dict]:
    """What flowstore reads from ``root``: CRCs of every record, hashes of decoded arrays, and
    the decoded first frame / flow of each video."""
    import flowstore
    from flowstore.store.records import record_counts

    out, pixels = {"videos": {}}, {}
    with flowstore.open_store(root, check=True) as s:
        out["format_version"] = s.manifest["format_version"]
        for vid in s.videos:
            shard = s._shard(vid)
            crcs = {kind: [zlib.crc32(shard.get(vid, kind, i, check=True)) for i in range(n)]
                    for kind, n in record_counts(s.entry(vid), s.quant.scheme)}
            frames = [s.frame(vid, i) for i in range(s.num_frames(vid))]
            qs = [s.flow_q(vid, i) for i in range(s.num_flows(vid))]
            flows = [s.flow(vid, i) for i in range(s.num_flows(vid))]
            out["videos"][vid] = {"entry": s.entry(vid), "crc32": crcs, "sha256": {
                "rgb": sha(frames), "flow_q": sha(qs), "flow": sha(flows)}}
            pixels[f"{vid}|rgb0"], pixels[f"{vid}|q0"], pixels[f"{vid}|flow0"] = frames[0], qs[0], flows[0]
    return out, pixels


def main() -> None:
    from flowstore.decode import FrameResize, read_frames
    from flowstore.extract import ExtractConfig, VideoJob, run_extract
    from flowstore.quantize import QuantSpec
    from flowstore.store import hdf5_backend

    # 4 KiB HDF5 chunks instead of the writer's default, so that the fixture stays a few tens of KB
    # (the chunk size is not part of the format: section 6 says only "chunked, no compression")
    hdf5_backend.CHUNK_BYTES = 4096

    clip = HERE.parents[2] / "shared" / "data" / "videos" / "part_0.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "part_0_first5.avi"
        frames = read_frames(clip)[:5]
        h, w = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
        for rgb in frames:
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        writer.release()
        expected, pixels = {}, {}
        for name, case in STORES.items():
            root = HERE / name
            if root.exists():
                shutil.rmtree(root)
            cfg = ExtractConfig(out=str(root), backend=case["backend"], method="farneback",
                                quant=QuantSpec(case["scheme"], 20.0), flow_codec=case["flow_codec"],
                                frame_codec=case["frame_codec"], resize=FrameResize(size=(32, 24)),
                                stride=case["stride"], workers=1)
            summary = run_extract([VideoJob(vid, str(src)) for vid in IDS], cfg, show_progress=False)
            assert summary.ok == len(IDS), summary.failures
            (root / "writer.lock").unlink()  # optional; its text names a pid of this run
            expected[name], store_pixels = expected_of(root)
            if case["frame_codec"] == "jpeg":
                pixels.update({f"{name}|{k}": v for k, v in store_pixels.items()})
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True) + "\n",
                                        encoding="utf-8")
    np.savez_compressed(HERE / "expected_jpeg.npz", **pixels)


if __name__ == "__main__":
    main()
