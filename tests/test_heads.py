"""Tests for flowstore.heads: heads, training, fusion, metrics, plots, checkpoints.

All data is synthetic and generated with seeded RNGs; the whole module runs in seconds
on one CPU thread.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from flowstore.heads.evaluate import metrics, predict_scores, write_predictions_csv
from flowstore.heads.fusion import (
    FUSIONS, SVMFusion, build_fusion, early_concat, fit_late_weights, late_average,
    late_weighted,
)
from flowstore.heads.io import load_head, read_head_config, save_head
from flowstore.heads.models import HEADS, build_head
from flowstore.heads.plots import plot_confusion, plot_curves
from flowstore.heads.train import class_weights_from_labels, train_head

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL_TRANSFORMER = {"dim": 32, "layers": 1, "heads": 2, "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ----------------------------------------------------------------------------- data

def separable(n, seed, *, C=5, D=64, S=3, V=None, noise=2.0):
    """Class means in D dims (fixed across calls) plus Gaussian noise per view/segment."""
    means = np.random.default_rng(1234).normal(size=(C, D))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    shape = (n, S, D) if V is None else (n, V, S, D)
    x = rng.normal(scale=noise, size=shape)
    x += means[y].reshape((n,) + (1,) * (len(shape) - 2) + (D,))
    return x.astype(np.float32), y


def ordered(n, seed, *, D=16, S=3, noise=0.3):
    """Class c = index of the segment holding pattern p; the other segments hold q.

    Every class has the same multiset of segments, so the segment AVERAGE is identical in
    distribution for all classes: only an order-aware head can beat chance (1/S)."""
    p = np.random.default_rng(7).normal(size=D)
    q = np.random.default_rng(8).normal(size=D)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, S, n)
    x = np.tile(q, (n, S, 1))
    x[np.arange(n), y] = p
    x += rng.normal(scale=noise, size=x.shape)
    return x.astype(np.float32), y


def softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def stream_scores(y, C, seed, strength):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), C))
    logits[np.arange(len(y)), y] += strength
    return softmax(logits)


def acc(scores, y):
    return float((np.asarray(scores).argmax(1) == y).mean())


# ----------------------------------------------------------------------------- heads

@pytest.mark.parametrize("head,kw", [
    ("linear", {}),
    ("mlp", {"hidden": 64, "dropout": 0.2}),
    ("transformer", SMALL_TRANSFORMER),
    ("transformer", {**SMALL_TRANSFORMER, "pooling": "mean"}),
])
def test_each_head_learns_separable_features(head, kw):
    xtr, ytr = separable(300, seed=1)
    xte, yte = separable(300, seed=2)
    res = train_head(xtr, ytr, val_feats=xte[:100], val_labels=yte[:100], head=head,
                     head_kwargs=kw, epochs=12, lr=3e-3, weight_decay=1e-4, batch_size=32,
                     seed=0)
    m = metrics(predict_scores(res.model, xte[100:]), yte[100:])
    assert m["top1"] >= 0.95, (head, m["top1"])
    assert len(res.history["train_loss"]) == 12
    assert res.history["train_loss"][-1] < res.history["train_loss"][0]
    assert 1 <= res.best_epoch <= 12


def test_multiview_training_and_testing():
    xtr, ytr = separable(200, seed=3, V=3)
    xte, yte = separable(100, seed=4, V=3)
    for views in ("random", "all", "first"):
        res = train_head(xtr, ytr, head="linear", epochs=10, lr=3e-3, batch_size=32,
                         train_views=views, seed=0)
        assert acc(predict_scores(res.model, xte), yte) >= 0.95, views
    # multi-view testing == mean over views of single-view softmax scores
    per_view = [predict_scores(res.model, xte[:, v]) for v in range(3)]
    np.testing.assert_allclose(predict_scores(res.model, xte), np.mean(per_view, axis=0),
                               rtol=1e-5, atol=1e-7)


def test_transformer_uses_segment_order_where_average_cannot():
    xtr, ytr = ordered(600, seed=5)
    xte, yte = ordered(300, seed=6)
    common = dict(epochs=15, lr=3e-3, batch_size=32, seed=0)
    lin = train_head(xtr, ytr, head="linear", **common)
    mlp = train_head(xtr, ytr, head="mlp", head_kwargs={"hidden": 64}, **common)
    tf = train_head(xtr, ytr, head="transformer", head_kwargs=SMALL_TRANSFORMER, **common)
    assert acc(predict_scores(lin.model, xte), yte) < 0.5   # chance is 1/3
    assert acc(predict_scores(mlp.model, xte), yte) < 0.5
    assert acc(predict_scores(tf.model, xte), yte) >= 0.95


def test_training_is_deterministic_with_seed():
    xtr, ytr = separable(120, seed=7)
    kw = dict(head="mlp", head_kwargs={"hidden": 32, "dropout": 0.5}, epochs=4, lr=1e-3,
              batch_size=16, val_feats=xtr[:30], val_labels=ytr[:30])
    a = train_head(xtr, ytr, seed=3, **kw)
    b = train_head(xtr, ytr, seed=3, **kw)
    c = train_head(xtr, ytr, seed=4, **kw)
    assert a.history == b.history
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])
    assert a.history["train_loss"] != c.history["train_loss"]


def test_l2_normalize_is_part_of_the_head():
    x, y = separable(60, seed=8)
    res = train_head(x, y, head="linear", epochs=2, lr=1e-3, batch_size=16, seed=0)
    assert res.model.config["l2_normalize"] is True
    # scaling the input features (e.g. faster motion) does not change the scores
    np.testing.assert_allclose(predict_scores(res.model, x), predict_scores(res.model, 7.5 * x),
                               rtol=1e-5, atol=1e-6)
    raw = train_head(x, y, head="linear", epochs=2, lr=1e-3, batch_size=16, seed=0,
                     l2_normalize=False)
    assert raw.model.config["l2_normalize"] is False


def test_schedules_and_early_stopping():
    x, y = separable(64, seed=9, noise=0.5)
    common = dict(head="linear", lr=1e-2, batch_size=16, seed=0)   # 4 steps per epoch
    cos = train_head(x, y, epochs=6, schedule="cosine", **common)
    lrs = cos.history["lr"]
    assert lrs[0] == pytest.approx(1e-2) and all(a > b for a, b in zip(lrs, lrs[1:]))
    cyc = train_head(x, y, epochs=8, schedule="cyclic", cycle_epochs=4, **common)
    lrs = cyc.history["lr"]   # epoch starts: low, mid, high, mid, low, ...
    assert lrs[0] == pytest.approx(1e-3) and lrs[2] == pytest.approx(1e-2)
    assert lrs[4] == pytest.approx(1e-3) and lrs[6] == pytest.approx(1e-2)
    # val accuracy saturates at 1.0 immediately and can no longer improve -> stop
    es = train_head(x, y, val_feats=x, val_labels=y, epochs=50, monitor="val_acc",
                    early_stopping_patience=3, **common)
    assert es.stopped_early
    n_run = len(es.history["epoch"])
    assert n_run == es.best_epoch + 3 < 50
    assert es.history["val_acc"][es.best_epoch - 1] == max(es.history["val_acc"])
    with pytest.raises(ValueError, match="unknown schedule"):
        train_head(x, y, schedule="step", **common)


def test_class_weighted_loss():
    w = class_weights_from_labels(np.r_[np.zeros(90, int), np.ones(10, int)], 3)
    # balanced weights N / (C * n_c): 100/(3*90), 100/(3*10), absent class -> 0
    np.testing.assert_allclose(w.numpy(), [100 / 270, 100 / 30, 0.0], rtol=1e-6)
    np.testing.assert_allclose(class_weights_from_labels([0, 1, 2, 0, 1, 2], 3).numpy(), 1.0)

    # imbalanced, overlapping 2-class problem: weighting raises minority-class recall
    def data(n0, n1, seed, D=8):
        rng = np.random.default_rng(seed)
        y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
        x = rng.normal(size=(len(y), 2, D))
        x[y == 1, :, 0] += 1.0
        return x.astype(np.float32), y

    xtr, ytr = data(270, 30, seed=10)
    xte, yte = data(200, 200, seed=11)
    kw = dict(head="linear", epochs=20, lr=1e-2, batch_size=32, seed=0, l2_normalize=False)
    plain = train_head(xtr, ytr, **kw)
    weighted = train_head(xtr, ytr, class_weighted=True, **kw)
    assert plain.class_weights == [1.0, 1.0]
    assert weighted.class_weights == pytest.approx([300 / 540, 300 / 60])
    rec_plain = metrics(predict_scores(plain.model, xte), yte)["per_class_accuracy"]["1"]
    rec_weighted = metrics(predict_scores(weighted.model, xte), yte)["per_class_accuracy"]["1"]
    assert rec_weighted > rec_plain + 0.2


# ----------------------------------------------------------------------------- fusion

def test_late_average_and_weighted_by_hand():
    la = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]
    lb = [[3.0, 1.0, 0.0], [2.0, 2.0, 2.0]]

    def hand_softmax(row):
        z = sum(math.exp(v) for v in row)
        return [math.exp(v) / z for v in row]

    pa = [hand_softmax(r) for r in la]
    pb = [hand_softmax(r) for r in lb]
    expected_avg = [[(pa[i][j] + pb[i][j]) / 2 for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(late_average([np.array(pa), np.array(pb)]), expected_avg, rtol=1e-12)
    # weights (1, 3) are normalised to (0.25, 0.75)
    expected_w = [[0.25 * pa[i][j] + 0.75 * pb[i][j] for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(late_weighted([pa, pb], [1, 3]), expected_w, rtol=1e-12)
    np.testing.assert_allclose(late_weighted([pa, pb], [0.25, 0.75]), expected_w, rtol=1e-12)
    np.testing.assert_allclose(late_weighted([pa, pb], [1, 0]), pa, rtol=1e-12)
    # registry objects compute the same
    np.testing.assert_allclose(build_fusion("late-avg").predict([pa, pb]), expected_avg)
    np.testing.assert_allclose(build_fusion("late-weighted", weights=[1, 3]).predict([pa, pb]), expected_w)
    np.testing.assert_allclose(build_fusion("none").predict([pa]), pa)
    np.testing.assert_allclose(build_fusion("none", stream=1).predict([pa, pb]), pb)
    with pytest.raises(ValueError, match="stream"):
        build_fusion("none").predict([pa, pb])
    with pytest.raises(ValueError, match="shape"):
        late_average([pa, [[0.5, 0.5]]])
    with pytest.raises(ValueError, match="weights"):
        late_weighted([pa, pb], [0, 0])


def test_late_weighted_fit_ignores_noise_stream():
    y = np.random.default_rng(12).integers(0, 5, 400)
    good = stream_scores(y, 5, seed=13, strength=2.0)
    noise = stream_scores(y, 5, seed=14, strength=0.0)
    w = fit_late_weights([good, noise], y, step=0.05)
    assert w.sum() == pytest.approx(1.0) and w[0] >= 0.8
    w_swapped = fit_late_weights([noise, good], y, step=0.05)
    assert w_swapped[1] >= 0.8
    f = build_fusion("late-weighted").fit([good, noise], y)
    np.testing.assert_allclose(f.weights, w)
    assert acc(f.predict([good, noise]), y) >= acc(late_average([good, noise]), y)
    # three streams: simplex grid, noise streams get (almost) no weight
    w3 = fit_late_weights([noise, good, stream_scores(y, 5, seed=15, strength=0.0)], y, step=0.1)
    assert w3.sum() == pytest.approx(1.0) and w3[1] >= 0.7


def test_svm_fusion_beats_single_streams():
    C = 4

    def two_streams(n, seed):
        # stream a only knows classes 0-1, stream b only classes 2-3
        rng = np.random.default_rng(seed)
        y = rng.integers(0, C, n)
        la, lb = rng.normal(size=(n, C)), rng.normal(size=(n, C))
        ia = y < 2
        la[ia, y[ia]] += 3.0
        lb[~ia, y[~ia]] += 3.0
        return softmax(la), softmax(lb), y

    va, vb, vy = two_streams(400, seed=16)
    ta, tb, ty = two_streams(400, seed=17)
    svm = build_fusion("svm").fit([va, vb], vy)
    assert isinstance(svm, SVMFusion)
    fused = svm.predict([ta, tb])
    assert fused.shape == (400, C)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    assert acc(fused, ty) >= max(acc(ta, ty), acc(tb, ty)) + 0.1
    # input of the SVM: per-stream L2-normalised scores, stacked
    stacked = SVMFusion.stack([ta[:2], tb[:2]])
    np.testing.assert_allclose(stacked[:, :C], ta[:2] / np.linalg.norm(ta[:2], axis=1, keepdims=True))
    np.testing.assert_allclose(stacked[:, C:], tb[:2] / np.linalg.norm(tb[:2], axis=1, keepdims=True))


def test_early_concat_by_hand_and_trains():
    a = np.array([[[3.0, 4.0]], [[0.0, 2.0]]])             # (N=2, S=1, D=2)
    b = np.array([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 5.0]]])   # (N=2, S=1, D=3)
    np.testing.assert_allclose(early_concat([a, b], normalize_each=False),
                               [[[3, 4, 1, 0, 0]], [[0, 2, 0, 0, 5]]])
    np.testing.assert_allclose(early_concat([a, b]),
                               [[[0.6, 0.8, 1, 0, 0]], [[0, 1, 0, 0, 1]]], rtol=1e-6)
    with pytest.raises(ValueError, match="leading shape"):
        early_concat([a, b[:1]])
    # fused features train one head; one informative stream is enough
    x1, y = separable(200, seed=18, D=32, noise=1.0)
    x2 = np.random.default_rng(19).normal(size=x1.shape).astype(np.float32) * 50
    fusion = build_fusion("early-concat")
    assert fusion.level == "features"
    fused = fusion.combine_features([x1, x2])
    assert fused.shape == (200, 3, 64)
    res = train_head(fused[:150], y[:150], head="linear", epochs=20, lr=3e-3, batch_size=32, seed=0)
    assert acc(fusion.predict([predict_scores(res.model, fused[150:])]), y[150:]) >= 0.95


def test_unknown_names_give_documented_errors():
    with pytest.raises(ValueError) as e:
        build_head("resnet", in_dim=4, num_classes=2, num_segments=3)
    assert str(e.value) == f"unknown head 'resnet'; choose from {sorted(HEADS)}"
    assert sorted(HEADS) == ["linear", "mlp", "multitask", "transformer"]
    with pytest.raises(ValueError) as e:
        build_fusion("mid")
    assert str(e.value) == f"unknown fusion 'mid'; choose from {sorted(FUSIONS)}"
    assert sorted(FUSIONS) == ["early-concat", "late-avg", "late-perclass", "late-weighted", "logits-mlp", "mid-conv", "none", "svm", "token-transformer"]
    with pytest.raises(ValueError, match="unknown head 'x'"):
        train_head(np.zeros((4, 3, 2), np.float32), [0, 1, 0, 1], head="x", epochs=1)


# ----------------------------------------------------------------------------- metrics

def test_metrics_by_hand(tmp_path):
    names = ["a", "b", "c", "d", "e", "f"]
    scores = np.array([
        [0.90, 0.05, 0.01, 0.01, 0.01, 0.02],   # y=a, pred a
        [0.30, 0.40, 0.10, 0.10, 0.05, 0.05],   # y=a, pred b, a at rank 2
        [0.10, 0.60, 0.10, 0.10, 0.05, 0.05],   # y=b, pred b
        [0.50, 0.20, 0.00, 0.10, 0.10, 0.10],   # y=c, pred a, c at rank 6 -> not in top-5
        [0.05, 0.70, 0.05, 0.10, 0.05, 0.05],   # y=b, pred b
    ])
    labels = np.array([0, 0, 1, 2, 1])
    m = metrics(scores, labels, names)
    assert m["n"] == 5
    assert m["top1"] == pytest.approx(3 / 5)
    assert m["top5"] == pytest.approx(4 / 5) and m["top5_k"] == 5
    assert m["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": 0.0, "d": None, "e": None, "f": None}
    assert m["mean_class_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["confusion_matrix"] == [
        [1, 1, 0, 0, 0, 0],
        [0, 2, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0],
        [0] * 6, [0] * 6, [0] * 6,
    ]
    json.dumps(m)  # JSON-serialisable
    # fewer than 5 classes: k = C, so every label is in the top-k
    m3 = metrics([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]], [0, 0], ["x", "y", "z"])
    assert (m3["top1"], m3["top5"], m3["top5_k"]) == (0.5, 1.0, 3)
    with pytest.raises(ValueError, match="class names"):
        metrics(scores, labels, names[:3])

    path = tmp_path / "out" / "pred.csv"
    write_predictions_csv(path, [f"v{i}" for i in range(5)], scores, labels, names)
    rows = list(csv.DictReader(path.open()))
    assert [r["video_id"] for r in rows] == ["v0", "v1", "v2", "v3", "v4"]
    assert [r["pred_name"] for r in rows] == ["a", "b", "b", "a", "b"]
    assert [r["correct"] for r in rows] == ["1", "0", "1", "0", "1"]
    assert float(rows[3]["score_a"]) == pytest.approx(0.5)
    write_predictions_csv(path, ["u"], scores[:1], None, names)  # unlabelled
    (row,) = csv.DictReader(path.open())
    assert row["label"] == "" and row["pred_name"] == "a"


# ----------------------------------------------------------------------------- io, plots

def test_checkpoint_roundtrip_identical_predictions(tmp_path):
    x, y = separable(80, seed=20, V=2)
    res = train_head(x, y, head="transformer", head_kwargs=SMALL_TRANSFORMER, epochs=2,
                     lr=1e-3, batch_size=16, seed=0)
    before = predict_scores(res.model, x)
    wpath, cpath = save_head(res.model, tmp_path / "ckpt" / "rgb_head.pt",
                             extra={"class_names": list("abcde"), "train": res.config})
    assert wpath.name == "rgb_head.pt" and cpath.name == "rgb_head.json"
    # the weights file is a plain tensor dict, loadable with weights_only=True
    state = torch.load(wpath, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    doc = read_head_config(tmp_path / "ckpt" / "rgb_head")
    assert doc["head"]["name"] == "transformer" and doc["head"]["l2_normalize"] is True
    assert doc["extra"]["class_names"] == list("abcde")
    loaded = load_head(tmp_path / "ckpt" / "rgb_head")
    assert not loaded.training
    assert np.array_equal(predict_scores(loaded, x), before)
    for name in ("linear", "mlp"):
        m = build_head(name, in_dim=64, num_classes=5, num_segments=3)
        save_head(m, tmp_path / name)
        assert np.array_equal(predict_scores(load_head(tmp_path / name), x), predict_scores(m, x))


def test_plots_write_png(tmp_path):
    cm = [[5, 1, 0], [2, 7, 1], [0, 0, 9]]
    p = plot_confusion(cm, ["walk", "run", "jump"], tmp_path / "plots" / "cm.png")
    assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000
    history = {"epoch": [1, 2, 3, 4], "train_loss": [1.2, 0.8, 0.5, 0.4],
               "val_loss": [1.3, 0.9, 0.7, 0.75], "val_acc": [0.4, 0.6, 0.75, 0.72],
               "lr": [1e-3] * 4}
    p = plot_curves(history, tmp_path / "curves.png", best_epoch=3)
    assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000
    no_val = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "val_loss": [None, None],
              "val_acc": [None, None]}
    p = plot_curves(no_val, tmp_path / "curves_noval.png")
    assert p.read_bytes()[:8] == PNG_MAGIC
