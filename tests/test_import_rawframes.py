"""``flowstore import-rawframes``: real trees (the shared denseflow-style example, trees exported
from a shared clip) into a store byte for byte; every broken video a failure, never padded."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import flowstore
from flowstore.data.rawframes import export_rawframes
from flowstore.extract.import_rawframes import ImportConfig, run_import
from flowstore.quantize import QuantSpec, dequantize, quantize
from flowstore.store.manifest import load_failures
from helpers import all_records, run_cli, small_store

TRUNC = QuantSpec("bound", 20.0, "truncate")
EVEN = QuantSpec("bound", 20.0)


@pytest.fixture(scope="module")
def example(shared_videos) -> Path:
    return shared_videos / "rawframes_mmaction2_imgs"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shared_videos):
    """A store extracted from part_0 (two ids, one nested) and its exported rawframes tree."""
    root = tmp_path_factory.mktemp("exported")
    store = small_store(root / "store", {"part_0": shared_videos / "part_0.mp4",
                                         "cls_a/part_0.copy": shared_videos / "part_0.mp4"})
    tree = export_rawframes(store, root / "tree", labels={"part_0": 3, "cls_a/part_0.copy": 1}, sync=False)
    return store, tree


def _example_tree(example: Path, dst: Path, frames: int = 6) -> Path:
    """The shared example with its first ``frames`` RGB frames (it holds 10 frames, 5 flows)."""
    dst.mkdir(parents=True)
    for f in example.iterdir():
        if not f.name.startswith("img_") or int(f.stem[4:]) <= frames:
            shutil.copy(f, dst / f.name)
    return dst


def test_shared_example_count_mismatch_is_a_failure(example, tmp_path):
    """The example as it is (10 frames, 5 flows: the denseflow count problem) fails, not padded."""
    out = tmp_path / "store"
    r = run_cli("import-rawframes", str(example), "--out", str(out), "--bound", "20", "--rounding", "truncate")
    assert r.returncode == 3, r.stderr
    (failure,) = load_failures(out)
    assert failure["id"] == "rawframes_mmaction2_imgs"
    assert "count mismatch: 10 RGB frames but 5 flows" in failure["reason"]
    assert flowstore.open_store(out).videos == []


def test_shared_example_bytes_kept_and_manifest(example, tmp_path):
    tree = tmp_path / "tree"
    _example_tree(example, tree / "v1")
    out = tmp_path / "store"
    summary = run_import(tree, ImportConfig(out=str(out), quant=TRUNC, tool="mmaction2"))
    assert summary.ok == 1 and not summary.failures
    with flowstore.open_store(out, check=True) as s:
        e = s.entry("v1")
        assert (e["num_frames"], e["num_flows"], e["width"], e["height"]) == (6, 5, 320, 240)
        for i in range(6):
            assert s.frame_bytes("v1", i) == (tree / "v1" / f"img_{i + 1:05d}.jpg").read_bytes()
        xs, ys = s.flow_bytes("v1", range(5))
        assert xs == [(tree / "v1" / f"x_{i + 1:05d}.jpg").read_bytes() for i in range(5)]
        assert ys == [(tree / "v1" / f"y_{i + 1:05d}.jpg").read_bytes() for i in range(5)]
        m = s.manifest
        assert m["quantization"]["rounding"] == "truncate" and m["quantization"]["bound"] == 20.0
        assert m["imported"] == {"from": "rawframes", "tree": str(tree.resolve()), "tool": "mmaction2",
                                 "rgb_template": "img_{:05d}.jpg", "flow_template": "{}_{:05d}.jpg", "labels": None}
        assert m["decoder"] == "imported" and m["flow"]["engine"] == "imported"
        # truncated levels read back at the centre of their level
        q = s.flow_q("v1", 0)
        assert np.allclose(s.flow("v1", 0), (q + 0.5) * 40 / 255 - 20, atol=1e-5)
    # source_sha256 as docs/FORMAT.md section 3 defines it for an imported video
    digest, size = hashlib.sha256(), 0
    for f in sorted((tree / "v1").iterdir(), key=lambda p: p.name.encode()):
        data = f.read_bytes()
        digest.update(f.name.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
        size += len(data)
    assert (e["source_sha256"], e["source_size"]) == (digest.hexdigest(), size)


def test_exported_tree_round_trip_and_labels(exported, tmp_path):
    """export_rawframes then import: the same records, byte for byte; the list's labels kept."""
    store, tree = exported
    out = tmp_path / "store"
    r = run_cli("import-rawframes", str(tree), "--out", str(out), "--bound", "20", "--rounding", "half_to_even",
                "--tool", "flowstore", "--list", str(tree / "rgb_list.txt"), "--format", "hdf5")
    assert r.returncode == 0, r.stdout + r.stderr
    original, imported = all_records(store), all_records(out)
    assert original == imported
    with flowstore.open_store(out) as s, flowstore.open_store(store) as ref:
        assert s.quant == ref.quant and s.manifest["flow"]["codec"] == "jpeg"
        assert s.manifest["imported"]["flow_template"] == "flow_{}_{:05d}.jpg"
    assert (out / "labels.txt").read_text().splitlines() == ["cls_a/part_0.copy 1", "part_0 3"]


def test_broken_videos_fail_one_by_one_then_resume(exported, tmp_path):
    """Each problem fails its own video; the others commit; a rerun skips committed videos and
    --retry-failed imports a repaired one."""
    _, src = exported
    tree = tmp_path / "tree"
    good = src / "part_0"
    for name in ("ok", "gap", "missing_y", "unreadable", "starts_at_2", "odd_size"):
        shutil.copytree(good, tree / name)
    (tree / "gap" / "img_00007.jpg").unlink()
    (tree / "missing_y" / "flow_y_00031.jpg").unlink()
    (tree / "unreadable" / "flow_x_00004.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50)
    (tree / "starts_at_2" / "img_00001.jpg").unlink()
    (tree / "starts_at_2" / "flow_x_00001.jpg").unlink()
    (tree / "starts_at_2" / "flow_y_00001.jpg").unlink()
    import cv2
    cv2.imwrite(str(tree / "odd_size" / "img_00009.jpg"), np.zeros((10, 10, 3), np.uint8))
    out = tmp_path / "store"
    cfg = ImportConfig(out=str(out), quant=EVEN)
    summary = run_import(tree, cfg)
    assert summary.ok == 1
    reasons = {f["id"]: f["reason"] for f in summary.failures}
    assert sorted(reasons) == ["gap", "missing_y", "odd_size", "starts_at_2", "unreadable"]
    assert "missing number(s) [7]" in reasons["gap"]
    assert "31 flow x files but 30 flow y files" in reasons["missing_y"]
    assert "flow_x_00004.jpg: unreadable image" in reasons["unreadable"]
    assert "first RGB frame is number 2" in reasons["starts_at_2"]
    assert "img_00009.jpg is 10x10" in reasons["odd_size"]
    assert flowstore.open_store(out).videos == ["ok"]
    committed = flowstore.open_store(out).entry("ok")["committed_at"]
    # rerun: nothing new; repair one video and retry the failed ones
    shutil.copy(good / "img_00007.jpg", tree / "gap" / "img_00007.jpg")
    again = run_import(tree, cfg)
    assert (again.ok, again.skipped_committed, again.skipped_failed) == (0, 1, 5)
    retried = run_import(tree, cfg, retry_failed=True)
    assert retried.ok == 1 and len(retried.failures) == 4
    with flowstore.open_store(out) as s:
        assert s.videos == ["gap", "ok"] and s.entry("ok")["committed_at"] == committed
        assert [s.frame_bytes("gap", i) for i in range(3)] == [(good / f"img_{i + 1:05d}.jpg").read_bytes() for i in range(3)]


def test_denseflow_zero_based_names(exported, tmp_path):
    """open-mmlab/denseflow since 2019 numbers files from 0 (img_00000.jpg, flow_x_00000.jpg)."""
    store, src = exported
    d = tmp_path / "tree" / "v"
    d.mkdir(parents=True)
    for f in (src / "part_0").glob("*.jpg"):
        prefix, number = f.stem.rsplit("_", 1)
        shutil.copy(f, d / f"{prefix}_{int(number) - 1:05d}.jpg")
    run_import(tmp_path / "tree", ImportConfig(out=str(tmp_path / "s"), quant=EVEN, tool="denseflow"))
    with flowstore.open_store(tmp_path / "s") as s, flowstore.open_store(store) as ref:
        assert s.frame_bytes("v", 0) == ref.frame_bytes("part_0", 0)
        assert s.flow_bytes("v", [30]) == ref.flow_bytes("part_0", [30])


def test_declared_roundings_match_denseflow_and_mmaction2():
    """The two roundings docs/FORMAT.md section 7 describes, against the tools' own arithmetic:
    denseflow's CAST (double, cvRound = half to even) and mmaction2's flow_to_img (float32,
    astype(uint8) truncates)."""
    rng = np.random.default_rng(0)
    flow = (rng.normal(0, 12, (64, 64, 2)) .astype(np.float32))
    flow[0, :8, 0] = [-25, -20, -19.999, 0, 19.999, 20, 25, 20 / 255 * 3 - 20]
    b = 20
    v = flow.astype(np.float64)
    denseflow = np.where(v > b, 255, np.where(v < -b, 0, np.rint(255 * (v + b) / (2 * b)))).astype(np.uint8)
    ours = quantize(flow, EVEN)[0]
    assert np.abs(ours.astype(int) - denseflow).max() <= 1 and (ours == denseflow).mean() > 0.999
    mm = np.clip(flow, -b, b)
    mm += b
    mm *= 255 / float(2 * b)
    mm = mm.astype(np.uint8)
    assert np.array_equal(quantize(flow, TRUNC)[0], mm)
    # truncated levels read back at their centre: error at most half a step inside the bound
    inside = np.abs(flow) < b
    err = np.abs(dequantize(mm, TRUNC) - flow)[inside]
    assert err.max() <= 20 / 255 + 1e-5
    assert json.dumps(TRUNC.to_manifest())  # recorded, with its formula


def test_flip_of_a_truncating_store_negates_u(example, tmp_path):
    """A truncating store reads level q at (q + 0.5)·step − bound, so −u lies at level 254 − q, not
    255 − q: the loader's flip (through the real dataset, uint8 values) must use that, or every
    flipped u is off by one level (2·20/255 = 0.157 px)."""
    from flowstore.data import StoreClipDataset
    from flowstore.data.transforms import RandomHorizontalFlip
    from flowstore.quantize import dequantize

    tree = tmp_path / "tree"
    _example_tree(example, tree / "v1")
    out = tmp_path / "store"
    run_import(tree, ImportConfig(out=str(out), quant=TRUNC, tool="mmaction2"))
    kw = dict(modality="flow", sampling="stack", length=5, train=False, flow_values="uint8", num_segments=1)
    plain = StoreClipDataset(out, {"v1": 0}, **kw)[0]["flow"].numpy()
    flipped = StoreClipDataset(out, {"v1": 0}, transform=RandomHorizontalFlip(p=1.0), **kw)[0]["flow"].numpy()
    u, u_flipped = plain[0, 0::2], flipped[0, 0::2]
    inside = u < 255  # level 255 is +bound itself: its mirror is clipped to -bound's level 0
    assert inside.mean() > 0.99
    mirrored = u_flipped[..., ::-1]
    as_flow = lambda q: dequantize(np.dstack([q, q]), TRUNC)[..., 0]  # noqa: E731 (u only)
    np.testing.assert_allclose(as_flow(mirrored[inside]), -as_flow(u[inside]), atol=1e-5)
    assert np.all(mirrored[~inside] == 0)
