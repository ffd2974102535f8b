"""The frozen v1.0 stores in tests/golden/ (made once by tests/golden/make_golden.py; never
regenerated): this and every later flowstore must read them as they were written, record for
record (docs/FORMAT.md, section 11, "Compatibility promise")."""
from __future__ import annotations

import hashlib
import json
import zlib
from pathlib import Path

import numpy as np
import pytest

import flowstore
from flowstore.store.records import record_counts
from flowstore.store.verify import verify_store
from test_standalone_reader import spec_open, spec_read_video

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text(encoding="utf-8"))


def _sha(arrays) -> str:
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_golden_store_reads_as_written(name):
    root = GOLDEN / name
    before = _snapshot(root)
    want = EXPECTED[name]
    pixels = np.load(GOLDEN / "expected_jpeg.npz")
    with flowstore.open_store(root, check=True) as s:
        assert s.manifest["format_version"] == want["format_version"] == "1.0"
        assert s.videos == sorted(want["videos"])
        lossless = s.frame_codec != "jpeg" and s.flow_codec != "jpeg"
        for vid, w in want["videos"].items():
            assert s.entry(vid) == w["entry"]
            shard = s._shard(vid)
            for kind, n in record_counts(s.entry(vid), s.quant.scheme):  # every record, CRC checked
                assert [zlib.crc32(shard.get(vid, kind, i, check=True)) for i in range(n)] == w["crc32"][kind]
            frames = [s.frame(vid, i) for i in range(s.num_frames(vid))]
            qs = [s.flow_q(vid, i) for i in range(s.num_flows(vid))]
            flows = [s.flow(vid, i) for i in range(s.num_flows(vid))]
            if lossless:  # PNG decodes the same everywhere, and dequantization is exact float32
                assert {"rgb": _sha(frames), "flow_q": _sha(qs), "flow": _sha(flows)} == w["sha256"]
            else:  # JPEG decoders may differ by a level
                assert np.abs(frames[0].astype(int) - pixels[f"{name}|{vid}|rgb0"]).max() <= 2
                assert np.abs(qs[0].astype(int) - pixels[f"{name}|{vid}|q0"]).max() <= 2
                assert np.abs(flows[0] - pixels[f"{name}|{vid}|flow0"]).max() <= 2 * 40 / 255 + 1e-4
    assert verify_store(root, decode=True).ok
    # a reader written from docs/FORMAT.md alone sees the same records
    m, videos = spec_open(root)
    assert sorted(videos) == sorted(want["videos"])
    for vid, entry in videos.items():
        assert spec_read_video(root, m, entry)["bytes"] == want["videos"][vid]["entry"]["bytes"]
    assert _snapshot(root) == before  # reading never writes into a store
