"""Spatial feature maps (``flowstore features --pool none``) and the ``mid-conv`` fusion on them.

The map store is checked against the backbone itself: a small random resnet18, saved as a
state dict and loaded through the real weights path, maps the same prepared input to the
stored map (float16, one HDF5 chunk per video, resumable). mid-conv is checked on synthetic
map stores whose answer is derivable (see :func:`_hot_spot_maps`), with the two streams'
maps of different sizes resized as the seed project did.
"""
from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features import backbones as B
from flowstore.features import extract as E
from flowstore.features.store import FeatureStore, FeatureStoreError, open_features

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract
    from flowstore.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("maps")
    ds = make_demo_dataset(root / "data", clips_per_class=1, num_frames=6, size=(64, 48))
    cfg = ExtractConfig(out=str(root / "store"), method="farneback", workers=1)
    summary = run_extract(plan_jobs([str(ds.videos_dir)]), cfg, show_progress=False, log=lambda m: None)
    assert not summary.failures
    return root / "store"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    model, _ = B.build_backbone("resnet18", in_chans=3, weights="random", seed=5)
    path = tmp_path_factory.mktemp("w") / "r18.pth"
    torch.save(model.state_dict(), path)
    return path


def _cfg(weights, **kw):
    return E.FeatureConfig(**{"stream": "rgb", "backbone": "resnet18", "weights": str(weights), "num_segments": 2,
                              "spatial_views": 2, "batch_size": 8, "pool": "none", **kw})


def test_stored_map_is_the_backbones_conv_output(tiny_store, tmp_path, weights):
    import flowstore

    out = tmp_path / "maps.h5"
    summary = E.extract_features(tiny_store, out, _cfg(weights), show_progress=False)
    reader = flowstore.open_store(tiny_store)
    n = len(reader.videos)
    # resnet18 downsamples by 32: 64x48 frames -> a (512, 2, 2) map; V = 2 views, S = 2 segments
    assert summary.kind == "maps" and summary.shape == (n, 2, 2, 512, 2, 2)
    assert summary.bytes_per_video == 2 * 2 * 512 * 2 * 2 * 2  # float16
    assert summary.file_bytes >= n * summary.bytes_per_video
    assert "per video" in summary.lines()[1]
    with h5py.File(out) as f:
        assert f["features"].dtype == np.float16 and f["features"].chunks == (1, 2, 2, 512, 2, 2)
    cfg = _cfg(weights)
    cfg.check()
    model, info = B.build_backbone("resnet18", weights=str(weights))
    assert info["weights"]["source"] == "file"
    preparer = E._Preparer(reader, cfg, *E.rgb_normalisation(model))
    video = reader.videos[3]
    _, x, _, _ = preparer(video)                                   # (V * S, 3, 48, 64), view-major
    with torch.no_grad():
        conv = model.forward_features(x)                           # the last conv stage, before pooling
        pooled = model(x)
    with open_features(out) as fs:
        assert fs.kind == "maps" and fs.provenance["pool"] == "none"
        assert fs.provenance["map"]["shape"] == [512, 2, 2] and fs.provenance["dtype"] == "float16"
        stored = fs.features([video])[0]                           # (V, S, C, h, w)
    expected = conv.reshape(2, 2, 512, 2, 2).numpy().astype(np.float16)
    np.testing.assert_array_equal(stored, expected)
    # and it is the map the pooled features pool: its spatial mean is the backbone's vector
    np.testing.assert_allclose(stored.astype(np.float32).mean(axis=(3, 4)).reshape(4, 512), pooled.numpy(),
                               rtol=2e-3, atol=2e-3)


def test_map_store_resumes_and_readers_refuse_the_other_kind(tiny_store, tmp_path, weights, monkeypatch):
    import flowstore.features.store as S

    out = tmp_path / "maps.h5"
    real_append = S.FeatureStore.append

    def dying_append(self, vids, *a, **k):  # the run dies after its first 2 videos
        if self.count >= 2:
            raise KeyboardInterrupt
        return real_append(self, vids[:2], *[x[:2] for x in a], **k)

    monkeypatch.setattr(S.FeatureStore, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        E.extract_features(tiny_store, out, _cfg(weights, batch_size=2), show_progress=False)
    monkeypatch.setattr(S.FeatureStore, "append", real_append)
    with open_features(out) as fs:
        assert fs.count == 2
        first = fs.features()
    summary = E.extract_features(tiny_store, out, _cfg(weights), show_progress=False)
    assert summary.skipped == 2 and summary.computed == summary.total - 2
    full = tmp_path / "full.h5"
    E.extract_features(tiny_store, full, _cfg(weights), show_progress=False)
    with open_features(out) as fs, open_features(full) as ref:
        np.testing.assert_array_equal(fs.features()[:2], first)
        np.testing.assert_array_equal(fs.features(), ref.features())
    # a pooled store's settings digest is what it was before --pool existed (old files resume)
    from flowstore.features.store import settings_of

    with open_features(full) as fs:
        prov = fs.provenance
    assert settings_of(prov)["pool"] == "none"
    assert settings_of({**prov, "pool": "avg"}) == settings_of({k: v for k, v in prov.items() if k != "pool"})
    assert "pool" not in settings_of({**prov, "pool": "avg"})
    # pooled settings on a map store: refused, naming the difference
    with pytest.raises(FeatureStoreError, match="pool"):
        E.extract_features(tiny_store, out, _cfg(weights, pool="avg"), show_progress=False)
    # train-head needs vectors: a map store is refused with a message that says what to do
    labels = tmp_path / "labels.csv"
    from flowstore import open_store

    vids = open_store(tiny_store).videos
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "class_name", "split"])
        w.writerows([v, i % 2, "ab"[i % 2], "train"] for i, v in enumerate(vids))
    res = CliRunner().invoke(cli, ["train-head", "--features", str(out), "--labels", str(labels),
                                   "--out", str(tmp_path / "h"), "--epochs", "1"])
    assert res.exit_code != 0 and "spatial feature maps" in res.output and "--fusion mid-conv" in res.output
    # and mid-conv needs maps: a vector store is refused
    vec = tmp_path / "vec.h5"
    E.extract_features(tiny_store, vec, _cfg(weights, pool="avg"), show_progress=False)
    res = CliRunner().invoke(cli, ["train-head", "--features", str(vec), "--features", str(out), "--labels",
                                   str(labels), "--fusion", "mid-conv", "--out", str(tmp_path / "h2")])
    assert res.exit_code != 0 and "pooled feature vectors" in res.output and "--pool none" in res.output


def test_features_cli_pool_none(tiny_store, tmp_path):
    out, js = tmp_path / "m.h5", tmp_path / "s.json"
    res = CliRunner().invoke(cli, ["features", "--store", str(tiny_store), "--stream", "flow", "--length", "2",
                                   "--segments", "1", "--pool", "none", "--crop", "32", "--out", str(out),
                                   "--no-progress", "--summary-json", str(js)])
    assert res.exit_code == 0, res.output
    summary = json.loads(js.read_text())
    # a 32x32 crop -> a 1x1 map of 512 channels, float16: 1 view x 1 segment x 512 x 2 bytes
    assert summary["kind"] == "maps" and summary["bytes_per_video"] == 512 * 2
    assert "1.0 KiB per video as stored" in res.output
    res = CliRunner().invoke(cli, ["features", "--store", str(tiny_store), "--stream", "rgb", "--pool", "none",
                                   "--dtype", "float32", "--out", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "float16" in res.output
    assert "--pool" in CliRunner().invoke(cli, ["features", "--help"]).output


# ------------------------------------------------------------------------------ mid-conv

def test_midconv_resizes_as_the_seed_did():
    from flowstore.heads.midconv import MidConvNet, common_shape

    # the seed's example: (64, 56, 56) and (1024, 7, 7) -> (128, 7, 7)
    assert common_shape([(64, 56, 56), (1024, 7, 7)]) == (64, 7, 7)
    net = MidConvNet([(64, 56, 56), (1024, 7, 7)], 5, normalize=False)
    a, b = torch.randn(2, 64, 56, 56), torch.randn(2, 1024, 7, 7)
    with torch.no_grad():
        z = net.common([a, b])
        assert z.shape == (2, 128, 7, 7)
        # stream A: resized spatially by 8x8 block means, depth kept (no conv: it is the smaller depth)
        np.testing.assert_allclose(z[:, :64].numpy(), a.reshape(2, 64, 7, 8, 7, 8).mean((3, 5)).numpy(),
                                   rtol=1e-5, atol=1e-6)
        # stream B: its size kept, a 1x1 conv down to depth 64
        conv = net.project[1]
        ref = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], b) + conv.bias[None, :, None, None]
        np.testing.assert_allclose(z[:, 64:].numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
        assert net([a[:, None], b[:, None]]).shape == (2, 5)


def _hot_spot_maps(n, rng):
    """Two streams' maps and labels: A is (4, 4, 4) with one hot 2x2 block (value 1 in channel 0) at
    one of the four quadrants; B is (8, 2, 2) with one hot cell (channel 0) at one of the four
    cells. Class 1 iff B's hot cell is A's hot quadrant (half the videos), else class 0.

    Why neither stream's pooled vector can solve it: averaging A over space gives channel 0 =
    4 / 16 and the rest 0 for every video; B's pooled vector is channel 0 = 1 / 4 for every video.
    The pooled inputs are identical for both classes, so any classifier on them is at the
    majority rate (0.5). Neither map alone solves it either (B's cell is uniform given the
    class). mid-conv can: after resizing A to 2x2 (quadrant means: 1 at the hot quadrant), the
    concatenated map has both hot at one cell exactly for class 1; a 1x1 conv with weights 1, 1
    and bias -1 then a ReLU is 1 there and 0 everywhere for class 0."""
    qa = rng.integers(0, 4, n)
    same = np.arange(n) % 2 == 1
    qb = np.where(same, qa, (qa + rng.integers(1, 4, n)) % 4)
    a = np.zeros((n, 1, 1, 4, 4, 4), np.float16)
    b = np.zeros((n, 1, 1, 8, 2, 2), np.float16)
    for i in range(n):
        ra, ca = divmod(int(qa[i]), 2)
        a[i, 0, 0, 0, 2 * ra:2 * ra + 2, 2 * ca:2 * ca + 2] = 1
        rb, cb = divmod(int(qb[i]), 2)
        b[i, 0, 0, 0, rb, cb] = 1
    return a, b, same.astype(np.int64)


def _map_store(path, stream, videos, maps):
    prov = {"stream": stream, "backbone": {"name": "synthetic", "weights": {"source": "random", "seed": 0}},
            "sampling": {"num_segments": 1}, "views": {"total": 1}, "input": {}, "dtype": "float16",
            "pool": "none", "store": {"header_sha256": "x", "manifest_sha256": "y"}}
    fs = FeatureStore.create_or_resume(path, prov, num_views=1, num_segments=1, feature_dim=maps.shape[3],
                                       temporal_views=1, dtype="float16", map_shape=maps.shape[3:])
    fs.append(videos, maps, np.zeros((len(videos), 1, 1), np.int32), [1] * len(videos), ["0" * 64] * len(videos))
    fs.close()


def test_midconv_solves_what_pooled_vectors_cannot(tmp_path):
    rng = np.random.default_rng(0)
    n = 240
    a, b, y = _hot_spot_maps(n, rng)
    # the derivation's premise, checked: every video's pooled vectors are the same
    for m in (a, b):
        pooled = m.astype(np.float32).mean(axis=(4, 5))
        assert np.all(pooled == pooled[:1])
    videos = [f"v{i:03d}" for i in range(n)]
    _map_store(tmp_path / "a.h5", "rgb", videos, a)
    _map_store(tmp_path / "b.h5", "flow", videos, b)
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "class_name", "split"])
        w.writerows([v, int(c), ["other", "same"][int(c)], "test" if i % 8 in (0, 1) else "train"]
                    for i, (v, c) in enumerate(zip(videos, y)))
    out = tmp_path / "mc"
    res = CliRunner().invoke(cli, ["train-head", "--features", tmp_path / "a.h5", "--features", tmp_path / "b.h5",
                                   "--labels", tmp_path / "labels.csv", "--fusion", "mid-conv", "--epochs", "40",
                                   "--lr", "3e-3", "--batch-size", "32", "--out", out])
    assert res.exit_code == 0, res.output + repr(res.exception)
    m = json.loads((out / "metrics.json").read_text())
    assert m["fusion"] == "mid-conv" and m["n"] == n // 4
    assert m["top1"] >= 0.9  # pooled vectors: 0.5 at best (see _hot_spot_maps)
    # the test split holds both classes equally (videos i % 8 in {0, 1}: one of each), and both are
    # recognised -- not one class predicted throughout
    assert np.array(m["confusion_matrix"]).sum(axis=1).tolist() == [n // 8, n // 8]
    assert min(m["per_class_accuracy"].values()) >= 0.8
    sel = m["per_fusion"]["mid-conv"]["selected"]
    doc = json.loads((out / "fusion.json").read_text())["fusions"]["mid-conv"]
    assert doc["selected"] == sel and doc["common"] == [4, 2, 2] and len(doc["val_top1"]) == 2
    assert doc["selected_by"].startswith("the validation split")
    assert (out / "fusion_mid-conv.pt").is_file()
    res = CliRunner().invoke(cli, ["train-head", "--features", tmp_path / "a.h5", "--features", tmp_path / "b.h5",
                                   "--labels", tmp_path / "labels.csv", "--fusion", "mid-conv", "--head", "mlp", "--hidden", "8",
                                   "--out", tmp_path / "bad"])
    assert res.exit_code == 2 and "do not apply to mid-conv" in res.output
    # evaluate re-applies it from the model directory: the same test accuracy
    ev = CliRunner().invoke(cli, ["evaluate", "--model", out, "--out", tmp_path / "ev"])
    assert ev.exit_code == 0, ev.output + repr(ev.exception)
    again = json.loads((tmp_path / "ev" / "mc" / "metrics.json").read_text())
    assert again["fusion"] == "mid-conv" and abs(again["top1"] - m["top1"]) < 1e-9
