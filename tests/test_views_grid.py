"""evaluate's clip- vs video-level accuracy and --views-grid on a tiny hand-made feature store
whose accuracies are derived by hand: an identity linear head, views that are strong one-hots
of the true class (correct) or weak one-hots of another class (wrong; near-uniform softmax), so
a view alone is right iff it is a correct view, and the views' average is right iff any view
of the subset is correct."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features.store import FeatureStore
from flowstore.heads.views import subset_positions, view_subset, views_grid

C = 4
CORRECT = {0, 5}    # of the 6 views (N_t = 2, N_s = 3): t0 s0 and t1 s2


def test_subset_positions_and_views():
    assert subset_positions(3, 1) == [1] and subset_positions(3, 2) == [0, 2] and subset_positions(2, 1) == [1]
    assert subset_positions(16, 4) == [2, 6, 10, 14] and subset_positions(10, 10) == list(range(10))
    assert view_subset(2, 3, 2, 1) == [1, 4] and view_subset(2, 3, 1, 2) == [3, 5]


@pytest.fixture
def model_dir(tmp_path):
    from flowstore.heads.io import save_head
    from flowstore.heads.models import build_head
    from flowstore.heads.streams import open_streams

    videos = [f"v{i}" for i in range(12)]             # v8 .. v11 are training videos
    y = np.arange(12) % C
    feats = np.zeros((12, 6, 1, C), np.float32)
    for i, c in enumerate(y):
        for v in range(6):
            feats[i, v, 0, c if v in CORRECT else (c + 1) % C] = 8.0 if v in CORRECT else 0.1
    path = tmp_path / "clips.h5"
    prov = {"stream": "rgb", "views": {"temporal": 2, "spatial": 3, "total": 6}, "timing": {"seconds_per_clip": 0.5}}
    fs = FeatureStore.create_or_resume(path, prov, num_views=6, num_segments=1, feature_dim=C, temporal_views=2)
    fs.append(videos, feats, np.zeros((12, 2, 1), np.int32), [10] * 12, ["0" * 64] * 12)
    fs.close()
    head = build_head("linear", in_dim=C, num_classes=C, num_segments=1, l2_normalize=False)
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(C))
        head.fc.bias.zero_()
    out = tmp_path / "model"
    out.mkdir()
    save_head(head, out / "head_rgb")
    labels = tmp_path / "labels.csv"
    labels.write_text("video_id,label,class_name,split\n" + "".join(
        f"{v},{c},c{c},{'test' if i < 8 else 'train'}\n" for i, (v, c) in enumerate(zip(videos, y))),
        encoding="utf-8")
    [stream] = open_streams([path])
    cfg = {"format": "flowstore-train-head", "classes": [f"c{c}" for c in range(C)], "head": "linear",
           "fusion": "none", "streams": [{"name": "rgb", "features": str(path), "head": "head_rgb",
                                          "settings": stream.digest()}],
           "labels": {"labels": str(labels)},
           "splits": {"train": videos[8:], "val": [], "test": videos[:8]}}  # as train-head records them
    stream.store.close()
    (out / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return out


# (n_t, n_s) -> views kept, clip-level (correct views / views), video-level (any correct view)
EXPECTED = {(1, 1): ([4], 0.0, 0.0), (1, 2): ([3, 5], 0.5, 1.0), (1, 3): ([3, 4, 5], 1 / 3, 1.0),
            (2, 1): ([1, 4], 0.0, 0.0), (2, 2): ([0, 2, 3, 5], 0.5, 1.0), (2, 3): (list(range(6)), 1 / 3, 1.0)}


def test_views_grid_accuracies_by_hand(model_dir):
    res = views_grid(model_dir)
    assert res["n"] == 8 and res["grid"] == [2, 3] and res["timed_backbone"]
    got = {(r["n_t"], r["n_s"]): r for r in res["rows"]}
    assert set(got) == set(EXPECTED)
    for key, (views, clip, video) in EXPECTED.items():
        r = got[key]
        assert r["views"] == len(views)
        assert r["clip_top1"] == pytest.approx(clip) and r["video_top1"] == pytest.approx(video), key
        assert r["backbone_seconds_per_video"] == pytest.approx(0.5 * len(views))
        assert r["seconds_per_video"] >= r["backbone_seconds_per_video"]


def test_evaluate_prints_clip_vs_video_and_the_grid(model_dir, tmp_path):
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(model_dir), "--views-grid", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0, res.output
    assert "| model | 6 | 33.3% | 100.0% |" in res.output          # clip-level vs video-level, all views
    assert "| 1 | 2 | 2 | 50.0% | 100.0% |" in res.output
    assert (tmp_path / "e" / "model" / "views_grid.png").stat().st_size > 0
    saved = json.loads((tmp_path / "e" / "model" / "views_grid.json").read_text())
    assert len(saved["rows"]) == 6
