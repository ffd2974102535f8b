"""`flowstore train-head` and `flowstore evaluate` through the command line: heads on separable
feature stores, fusions (fitted parameters re-applied by hand), multi-view evaluation,
provenance checks, and a tiny end-to-end run (demo data -> extract -> features -> heads).

The head library itself (accuracy of every head, fusion arithmetic, metrics, plots) is tested
in tests/test_heads.py; here the data goes through the feature-store files and the CLI.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features.store import FeatureStore
from flowstore.heads.modeldir import METRICS_KEYS, apply_fusion
from flowstore.heads.splits import split_validation, stratified_folds, video_groups

CLASSES = ["a", "b", "c", "d", "e", "f"]
PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _write_store(path, stream, videos, feats, settings_extra=None):
    prov = {"stream": stream, "backbone": {"name": "synthetic", "weights": {"source": "random", "seed": 0}},
            "sampling": {"num_segments": feats.shape[2]}, "views": {"total": feats.shape[1]},
            "input": {}, "dtype": "float32", "store": {"header_sha256": "x", "manifest_sha256": "y"}}
    prov.update(settings_extra or {})
    fs = FeatureStore.create_or_resume(path, prov, num_views=feats.shape[1], num_segments=feats.shape[2],
                                       feature_dim=feats.shape[3], temporal_views=1)
    fs.append(videos, feats, np.zeros((len(videos), 1, feats.shape[2]), np.int32), [1] * len(videos),
              ["0" * 64] * len(videos))
    fs.close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """labels.csv (demo format) + a separable 'flow' store + a pure-noise 'rgb' store."""
    root = tmp_path_factory.mktemp("heads")
    rng = np.random.default_rng(0)
    C, V, S, D = len(CLASSES), 2, 3, 32
    rows, videos, labels = [], [], []
    for c, name in enumerate(CLASSES):
        for k in range(30):
            vid = f"{name}/{name}_{k:03d}"
            split = "test" if k % 3 == 0 else "train"
            rows.append([vid, c, name, split])
            videos.append(vid)
            labels.append(c)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "class_name", "split"])
        w.writerows(rows)
    (root / "classInd.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(CLASSES)))
    means = rng.normal(0, 1, (C, D)).astype(np.float32)
    y = np.array(labels)
    flow = means[y][:, None, None, :] + rng.normal(0, 1.0, (len(y), V, S, D)).astype(np.float32)
    flow *= rng.uniform(0.5, 5.0, (len(y), 1, 1, 1)).astype(np.float32)  # scale varies per clip (L2-norm)
    rgb = rng.normal(0, 1, (len(y), V, S, D)).astype(np.float32)
    _write_store(root / "flow.h5", "flow", videos, flow)
    _write_store(root / "rgb.h5", "rgb", videos, rgb)
    return root


def _invoke(args):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output + (repr(res.exception) if res.exception else "")
    return res


def _scores(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [r["video_id"] for r in rows], np.array([[float(r[f"score_{c}"]) for c in CLASSES] for r in rows])


def test_single_stream_head_via_cli(synthetic, tmp_path):
    out = tmp_path / "flow"
    res = _invoke(["train-head", "--features", synthetic / "flow.h5", "--labels", synthetic / "labels.csv",
                   "--head", "mlp", "--hidden", 64, "--epochs", 40, "--lr", 3e-3, "--early-stopping", 10,
                   "--out", out])
    assert "top-1" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert tuple(m) == METRICS_KEYS
    assert m["split"] == "test" and m["n"] == 60 and m["top1"] >= 0.95 and m["top5_k"] == 5
    assert set(m["per_class_accuracy"]) == set(CLASSES) and len(m["confusion_matrix"]) == 6
    assert m["counts"] == {"train": 96, "val": 24, "test": 60}
    for name in ("head.pt", "head.json", "config.json", "predictions.csv"):
        assert (out / name).stat().st_size > 0
    for name in ("confusion.png", "curves.png"):
        assert (out / name).read_bytes()[:8] == PNG
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["streams"][0]["name"] == "flow" and cfg["head"] == "mlp"
    assert cfg["training"]["head"]["head_kwargs"]["hidden"] == 64
    vids, scores = _scores(out / "predictions.csv")
    assert len(vids) == 60 and np.allclose(scores.sum(1), 1, atol=1e-4)


def test_fusions_via_cli_and_reapplied_by_hand(synthetic, tmp_path):
    out = tmp_path / "fused"
    _invoke(["train-head", "--features", synthetic / "rgb.h5", "--features", synthetic / "flow.h5",
             "--labels", synthetic / "labels.csv", "--fusion", "svm", "--epochs", 30, "--lr", 1e-2,
             "--val-fraction", 0, "--fusion-folds", 3, "--group-pattern", r"_(\d+)$", "--out", out])
    m = json.loads((out / "metrics.json").read_text())
    assert m["fusion"] == "svm" and m["streams"] == ["rgb", "flow"]
    assert m["per_stream"]["flow"]["top1"] >= 0.95 and m["per_stream"]["rgb"]["top1"] < 0.5
    assert set(m["per_fusion"]) == {"late-avg", "late-weighted", "svm", "late-perclass", "logits-mlp", "token-transformer"}
    assert m["per_fusion"]["svm"]["top1"] >= 0.95 and m["top1"] == m["per_fusion"]["svm"]["top1"]
    fusion = json.loads((out / "fusion.json").read_text())["fusions"]
    assert "out-of-fold" in fusion["svm"]["fitted_on"]
    w = fusion["late-weighted"]["weights"]
    assert w[1] >= 0.5  # the flow stream dominates
    vids, p_rgb = _scores(out / "predictions_rgb.csv")
    vids2, p_flow = _scores(out / "predictions_flow.csv")
    assert vids == vids2
    # late fusions by hand (scores in the CSV carry 6 significant digits)
    np.testing.assert_allclose(apply_fusion(fusion["late-avg"], [p_rgb, p_flow]), (p_rgb + p_flow) / 2, atol=1e-12)
    np.testing.assert_allclose(apply_fusion(fusion["late-weighted"], [p_rgb, p_flow]),
                               (w[0] * p_rgb + w[1] * p_flow) / (w[0] + w[1]), atol=1e-12)
    # the SVM from its saved coefficients == a freshly fitted sklearn SVM's decision on the same scores
    from flowstore.heads.fusion import SVMFusion

    y = np.arange(len(vids)) % 6
    svm = SVMFusion().fit([p_rgb, p_flow], y)
    np.testing.assert_allclose(apply_fusion(svm.state(), [p_rgb, p_flow]), svm.predict([p_rgb, p_flow]), atol=1e-9)
    x = np.concatenate([p_rgb / np.linalg.norm(p_rgb, axis=1, keepdims=True),
                        p_flow / np.linalg.norm(p_flow, axis=1, keepdims=True)], axis=1)
    d = x @ np.array(svm.state()["coef"]).T + np.array(svm.state()["intercept"])
    np.testing.assert_array_equal(apply_fusion(svm.state(), [p_rgb, p_flow]).argmax(1), d.argmax(1))
    # the fused predictions.csv is the chosen fusion of the per-stream scores
    _, fused = _scores(out / "predictions.csv")
    np.testing.assert_allclose(fused, apply_fusion(fusion["svm"], [p_rgb, p_flow]), atol=2e-5)


def test_early_concat_and_transformer_via_cli(synthetic, tmp_path):
    _invoke(["train-head", "--features", synthetic / "rgb.h5", "--features", synthetic / "flow.h5",
             "--labels", synthetic / "labels.csv", "--fusion", "early-concat", "--epochs", 40, "--lr", 1e-2,
             "--out", tmp_path / "early"])
    m = json.loads((tmp_path / "early" / "metrics.json").read_text())
    assert m["fusion"] == "early-concat" and m["top1"] >= 0.9 and (tmp_path / "early" / "head.pt").exists()
    _invoke(["train-head", "--features", synthetic / "flow.h5", "--labels", synthetic / "labels.csv",
             "--head", "transformer", "--dim", 32, "--layers", 1, "--attention-heads", 2, "--pooling", "mean",
             "--epochs", 30, "--lr", 3e-3, "--schedule", "cyclic", "--class-weighted", "--out", tmp_path / "t"])
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["head"] == "transformer" and m["top1"] >= 0.95


def test_evaluate_multi_view_and_provenance_check(synthetic, tmp_path):
    flow_dir, fused_dir = tmp_path / "flow", tmp_path / "fused"
    common = ["--labels", synthetic / "labels.csv", "--epochs", 30, "--lr", 1e-2]
    _invoke(["train-head", "--features", synthetic / "flow.h5", *common, "--out", flow_dir])
    _invoke(["train-head", "--features", synthetic / "rgb.h5", "--features", synthetic / "flow.h5", *common,
             "--fusion", "late-weighted", "--out", fused_dir])
    res = _invoke(["evaluate", "--model", flow_dir, "--model", fused_dir, "--out", tmp_path / "eval"])
    assert "| flow | flow | linear | none |" in res.output and "late-weighted *" in res.output
    trained = json.loads((flow_dir / "metrics.json").read_text())
    ev = json.loads((tmp_path / "eval" / "flow" / "metrics.json").read_text())
    assert ev["top1"] == trained["top1"] and ev["views"] == 2 and ev["n"] == 60
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert [r["fusion"] for r in summary["rows"]] == ["none", "late-avg", "late-weighted", "svm", "late-perclass", "logits-mlp",
                                                   "token-transformer"]
    assert (tmp_path / "eval" / "table.md").read_text().startswith("| model |")
    # multi-view: the score of a video is the mean of its per-view softmax scores
    from flowstore.features.store import open_features
    from flowstore.heads.evaluate import predict_scores
    from flowstore.heads.io import load_head

    head = load_head(flow_dir / "head")
    vids, scores = _scores(tmp_path / "eval" / "flow" / "predictions.csv")
    with open_features(synthetic / "flow.h5") as fs:
        x = fs.features(vids)
    per_view = [predict_scores(head, x[:, v]) for v in range(2)]
    np.testing.assert_allclose(scores, (per_view[0] + per_view[1]) / 2, atol=2e-5)
    one = _invoke(["evaluate", "--model", flow_dir, "--views", 1, "--subset", "val", "--out", tmp_path / "e1"])
    assert "| 1 |" in one.output
    # features made differently from the training ones are refused
    other = tmp_path / "other.h5"
    with open_features(synthetic / "flow.h5") as fs:
        _write_store(other, "flow", fs.videos, fs.features(), {"sampling": {"num_segments": 99}})
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(flow_dir), "--features", str(other)])
    assert res.exit_code == 2 and "was not made like" in res.output and "num_segments" in res.output


def test_cli_errors(synthetic, tmp_path):
    runner = CliRunner()
    base = ["train-head", "--labels", str(synthetic / "labels.csv"), "--out", str(tmp_path / "x")]
    res = runner.invoke(cli, base + ["--features", str(synthetic / "flow.h5"), "--fusion", "svm"])
    assert res.exit_code == 2 and "needs two or more" in res.output
    res = runner.invoke(cli, base + ["--features", str(synthetic / "flow.h5"), "--features", str(synthetic / "rgb.h5")])
    assert res.exit_code == 2 and "--fusion none takes exactly one" in res.output
    res = runner.invoke(cli, base + ["--features", str(synthetic / "flow.h5"), "--hidden", "8"])
    assert res.exit_code == 2 and "--hidden applies to the mlp/multitask head" in res.output
    res = runner.invoke(cli, base + ["--features", str(tmp_path / "missing.h5")])
    assert res.exit_code == 2 and "not found" in res.output
    res = runner.invoke(cli, ["evaluate", "--model", str(tmp_path)])
    assert res.exit_code == 2 and "no config.json" in res.output


def test_splits_and_groups():
    y = np.repeat(np.arange(3), 10)
    tr, val = split_validation(y, 0.2, 0)
    assert len(val) == 6 and np.bincount(y[val]).tolist() == [2, 2, 2] and not set(tr) & set(val)
    videos = [f"c{c}/v_g{k // 2:02d}_c{k % 2}" for c in range(3) for k in range(10)]
    groups = video_groups(videos, r"_g(\d+)_")
    tr, val = split_validation(y, 0.2, 0, groups)
    assert not {groups[i] for i in tr} & {groups[i] for i in val} and len({groups[i] for i in val}) == 1
    folds = stratified_folds(y, 5, 0, groups)
    for g in set(groups):
        assert len({folds[i] for i, h in enumerate(groups) if h == g}) == 1
    folds = stratified_folds(y, 5, 0)
    assert all(np.bincount(folds[y == c]).tolist() == [2] * 5 for c in range(3))


def test_end_to_end_tiny_demo(tmp_path):
    """make-demo-data -> extract (farneback) -> features rgb/flow (random resnet18) -> train-head -> evaluate."""
    data, store = tmp_path / "data", tmp_path / "store"
    _invoke(["make-demo-data", data, "--clips-per-class", 6, "--frames", 8, "--size", "64x48"])
    _invoke(["extract", data / "videos", "--out", store, "--method", "farneback", "--workers", 1, "--no-progress"])
    for stream, extra in (("rgb", []), ("flow", ["--length", 4])):
        _invoke(["features", "--store", store, "--stream", stream, "--backbone", "resnet18", "--weights", "random",
                 "--out", tmp_path / f"{stream}.h5", "--no-progress", *extra])
    out = tmp_path / "fused"
    _invoke(["train-head", "--features", tmp_path / "rgb.h5", "--features", tmp_path / "flow.h5",
             "--labels", data / "labels.csv", "--fusion", "late-weighted", "--epochs", 20, "--lr", 1e-2,
             "--val-fraction", 0.25, "--out", out])
    m = json.loads((out / "metrics.json").read_text())
    assert tuple(m) == METRICS_KEYS and m["split"] == "test" and m["n"] > 0
    assert 0.0 <= m["top1"] <= 1.0 and set(m["per_stream"]) == {"rgb", "flow"}
    for name in ("head_rgb.pt", "head_flow.pt", "fusion.json", "config.json", "predictions.csv",
                 "confusion.png", "curves_rgb.png", "curves_flow.png"):
        assert (out / name).exists(), name
    cfg = json.loads((out / "config.json").read_text())
    prov_flow = cfg["streams"][1]["settings"]
    assert prov_flow["backbone"]["in_chans"] == 8 and prov_flow["backbone"]["zero_init_last"] is False
    res = _invoke(["evaluate", "--model", out, "--table", tmp_path / "table.md"])
    assert "late-weighted *" in Path(tmp_path / "table.md").read_text() and "top-1" in res.output
