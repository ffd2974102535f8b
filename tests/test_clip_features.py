"""`flowstore clip-features` on a tiny store: (N, V = N_t x N_s, 1, D) features with their
provenance, resumed without recomputation, equal to the backbone run by hand on the dataset's
clips; train-head and fusion on them unchanged, mixing a 3D RGB stream with a 2D flow stream."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features.clip_extract import ClipFeatureConfig, extract_clip_features
from flowstore.features.store import FeatureStoreError, open_features


@pytest.fixture(autouse=True, scope="module")
def _two_threads(torch_two_threads):
    yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract
    from flowstore.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("clipfeat")
    ds = make_demo_dataset(root / "data", clips_per_class=2, num_frames=8, size=(40, 32))
    cfg = ExtractConfig(out=str(root / "store"), method="farneback", workers=1)
    summary = run_extract(plan_jobs([str(ds.videos_dir)]), cfg, show_progress=False, log=lambda m: None)
    assert not summary.failures
    return root, ds


CFG = dict(stream="rgb", backbone="mc3_18", clip_len=4, frame_interval=2, temporal_views=2, spatial_views=3,
           resize=32, crop=24, batch_size=4)


def test_clip_features_shape_provenance_and_values(tiny, tmp_path):
    from flowstore import open_store
    from flowstore.features.clip_extract import _dataset
    from flowstore.features.video_backbones import build_video_backbone

    root, _ = tiny
    out = tmp_path / "rgb3d.h5"
    summary = extract_clip_features(root / "store", out, ClipFeatureConfig(**CFG), show_progress=False)
    reader = open_store(root / "store")
    n = len(reader.videos)
    assert summary.computed == n and summary.clips == 6 * n and summary.clips_per_second > 0
    with open_features(out) as fs:
        p = fs.provenance
        assert fs.shape == (n, 6, 1, 512) == summary.shape
        feats, starts = fs.features(), fs.starts()
    b = p["backbone"]
    assert b["clip_shape"] == [3, 4, 24, 24] and b["frame_interval"] == 2 and b["parameters"] > 1e7
    assert b["gflops_per_clip"] > 0 and b["weights"]["source"] == "random" and len(b["weights"]["sha256"]) == 64
    assert p["sampling"]["mode"] == "clip" and p["views"]["total"] == 6 and p["timing"]["seconds_per_clip"] > 0
    # 8 frames, 4 x 2: extent 7, max_offset 1, 2 clips -> offsets 0, 1
    np.testing.assert_array_equal(starts[0, :, 0], [0, 1])
    # the stored rows are the backbone run by hand on the dataset's views (t * N_s + s)
    cfg = ClipFeatureConfig(**CFG)
    cfg.check()
    model, info = build_video_backbone("mc3_18", clip_len=4, crop=24, count_flops=False)
    x = _dataset(reader, cfg, info["mean"], info["std"])[0]["rgb"].permute(0, 2, 1, 3, 4)
    with torch.no_grad():
        np.testing.assert_allclose(feats[0, :, 0], model(x).numpy(), rtol=1e-4, atol=1e-4)
    # resumed: nothing recomputed; other settings refused
    again = extract_clip_features(root / "store", out, ClipFeatureConfig(**CFG), show_progress=False)
    assert again.computed == 0 and again.skipped == n
    with pytest.raises(FeatureStoreError, match="clip_len"):
        extract_clip_features(root / "store", out, ClipFeatureConfig(**{**CFG, "clip_len": 2}), show_progress=False)


def test_two_streams_3d_rgb_beside_2d_flow_through_train_head_and_evaluate(tiny, tmp_path):
    root, ds = tiny
    runner = CliRunner()
    rgb, flow = tmp_path / "rgb3d.h5", tmp_path / "flow2d.h5"
    res = runner.invoke(cli, ["clip-features", "--store", str(root / "store"), "--stream", "rgb", "--backbone",
                              "mc3_18", "--clip-len", "4", "--frame-interval", "1", "--temporal-views", "2",
                              "--resize", "32", "--crop", "24", "--out", str(rgb), "--no-progress",
                              "--summary-json", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s.json").read_text())["shape"] == [12, 2, 1, 512]
    res = runner.invoke(cli, ["features", "--store", str(root / "store"), "--stream", "flow", "--length", "2",
                              "--segments", "2", "--temporal-views", "2", "--out", str(flow), "--no-progress"])
    assert res.exit_code == 0, res.output
    heads = tmp_path / "fused"
    res = runner.invoke(cli, ["train-head", "--features", str(rgb), "--features", str(flow), "--labels",
                              str(ds.labels_path), "--fusion", "late-avg", "--epochs", "3", "--val-fraction", "0",
                              "--out", str(heads)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["evaluate", "--model", str(heads), "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    assert "late-avg" in res.output
    res = runner.invoke(cli, ["clip-features", "--store", str(root / "store"), "--stream", "rgb", "--backbone",
                              "no_such_net", "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "x3d_xs" in res.output
