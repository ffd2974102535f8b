"""Middlebury .flo I/O on written files and on the shared ground truth."""
import cv2
import numpy as np
import pytest

from flowstore.flo import FLO_MAGIC, endpoint_error, mean_epe, read_flo, valid_mask, write_flo


def test_roundtrip(tmp_path):
    flow = np.random.default_rng(1).standard_normal((7, 11, 2)).astype(np.float32)
    path = tmp_path / "a.flo"
    write_flo(path, flow)
    assert path.stat().st_size == 12 + 8 * 7 * 11
    np.testing.assert_array_equal(read_flo(path), flow)
    raw = path.read_bytes()
    assert raw[:4] == b"PIEH" and np.frombuffer(raw[:4], "<f4")[0] == np.float32(FLO_MAGIC)


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.flo"
    bad.write_bytes(b"NOPE" + b"\0" * 20)
    with pytest.raises(ValueError, match="magic"):
        read_flo(bad)
    flow = np.zeros((4, 5, 2), np.float32)
    write_flo(tmp_path / "t.flo", flow)
    (tmp_path / "short.flo").write_bytes((tmp_path / "t.flo").read_bytes()[:-8])
    with pytest.raises(ValueError, match="a 5x4 .flo has"):
        read_flo(tmp_path / "short.flo")
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 5)))


def test_shared_ground_truth_reads(flow_gt_dir):
    pairs = sorted(p for p in flow_gt_dir.iterdir() if p.is_dir())
    assert pairs
    for pair in pairs:
        flow = read_flo(pair / "flow.flo")
        h, w = cv2.imread(str(pair / "frame1.png")).shape[:2]
        assert flow.shape == (h, w, 2)
        unknown = int((np.abs(flow).max(-1) >= 1e9).sum())
        assert int((~valid_mask(flow)).sum()) == unknown
        assert mean_epe(flow, flow) == 0.0


def test_epe_masks_unknown(flow_gt_dir):
    gt = read_flo(flow_gt_dir / "middlebury_rubberwhale" / "flow.flo")
    zero = np.zeros_like(gt)
    epe = endpoint_error(zero, gt)
    ok = valid_mask(gt)
    assert epe.size == ok.sum() and np.isfinite(epe).all()
    assert np.isclose(epe.mean(), np.linalg.norm(gt[ok].astype(np.float64), axis=-1).mean())
