"""flowstore.features: backbones (random init, weights files, cross-modality init), the HDF5
feature store (provenance, resume without recomputation) and `flowstore features`.

A tiny store (6 motion classes x 2 clips, 8 frames at 64x48, Farneback) is built once per
module; backbones are resnet18 at that size, so the module runs in well under a minute.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features import backbones as B
from flowstore.features.extract import FeatureConfig, extract_features, manifest_hashes, snippet_starts
from flowstore.features.store import FeatureStoreError, open_features


@pytest.fixture(autouse=True, scope="module")
def _two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract
    from flowstore.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("feat")
    ds = make_demo_dataset(root / "data", clips_per_class=2, num_frames=8, size=(64, 48))
    cfg = ExtractConfig(out=str(root / "store"), method="farneback", workers=1)
    summary = run_extract(plan_jobs([str(ds.videos_dir)]), cfg, show_progress=False, log=lambda m: None)
    assert not summary.failures
    return root / "store"


# ------------------------------------------------------------------------------ backbones

def test_random_backbone_has_no_zero_initialised_residual_branches():
    model, info = B.build_backbone("resnet18", in_chans=3, weights="random", seed=0)
    assert info["zero_init_last"] is False and info["weights"]["source"] == "random"
    zero = [k for k, v in model.state_dict().items() if k.endswith(".weight") and v.dim() == 1 and not v.any()]
    assert zero == []  # timm's default (zero_init_last=True) zeroes every block's last BN weight
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    # same seed, same net (and the same digest); another seed, another net
    _, again = B.build_backbone("resnet18", weights="random", seed=0)
    _, other = B.build_backbone("resnet18", weights="random", seed=1)
    assert again["weights"]["sha256"] == info["weights"]["sha256"] != other["weights"]["sha256"]


def test_cross_modality_init_numerically(tmp_path):
    rgb, _ = B.build_backbone("resnet18", in_chans=3, weights="random", seed=3)
    state = rgb.state_dict()
    path = tmp_path / "rgb.pth"
    torch.save(state, path)
    flow, info = B.build_backbone("resnet18", in_chans=10, weights=str(path))
    assert info["first_layer"] == "cross-modality" and info["in_chans"] == 10
    w_rgb = state["conv1.weight"]                      # (64, 3, 7, 7)
    w_flow = flow.state_dict()["conv1.weight"]         # (64, 10, 7, 7)
    assert w_flow.shape == (64, 10, 7, 7)
    for c in range(10):  # every new channel is the mean of the three RGB filters
        expected = (w_rgb[:, 0] + w_rgb[:, 1] + w_rgb[:, 2]) / 3.0
        torch.testing.assert_close(w_flow[:, c], expected, rtol=0, atol=1e-7)
    # a single filter checked by hand
    assert abs(float(w_flow[5, 7, 2, 4]) - float(w_rgb[5, :, 2, 4].sum()) / 3.0) < 1e-7
    # every other tensor is loaded unchanged
    for k, v in flow.state_dict().items():
        if k != "conv1.weight":
            torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_local_weights_file_loads_through_the_real_code(tmp_path):
    src, _ = B.build_backbone("resnet18", weights="random", seed=7)
    state = src.state_dict()
    # a checkpoint wrapped like a training script saves it, with a classifier and DataParallel prefix
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    wrapped["state_dict"]["module.fc.weight"] = torch.zeros(1000, 512)
    wrapped["state_dict"]["module.fc.bias"] = torch.zeros(1000)
    pt = tmp_path / "ckpt.pth"
    torch.save(wrapped, pt)
    from safetensors.torch import save_file

    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        ref = src(x)
        for path in (pt, st):
            model, info = B.build_backbone("resnet18", weights=str(path))
            assert info["weights"]["source"] == "file" and info["first_layer"] == "loaded"
            assert info["weights"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            torch.testing.assert_close(model(x), ref)


def test_weights_errors(tmp_path):
    with pytest.raises(B.WeightsError, match="weights file not found"):
        B.build_backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(B.WeightsError, match="cannot read"):
        B.build_backbone("resnet18", weights=str(bad))
    other, _ = B.build_backbone("resnet34", weights="random")
    torch.save(other.state_dict(), tmp_path / "r34.pth")
    with pytest.raises(B.WeightsError, match="does not fit"):
        B.build_backbone("resnet18", weights=str(tmp_path / "r34.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        B.build_backbone("no_such_net", weights="random")


def test_snippet_starts_match_tsn_test_sampling():
    from flowstore.data.sampling import tsn_starts

    for count in (5, 7, 11, 40):
        np.testing.assert_array_equal(snippet_starts(count, 3, 5, 1)[0], tsn_starts(count, 3, 5, train=False))
    s = snippet_starts(11, 3, 5, 2)  # A = 7: (k + (t + 1/2)/2) * 7/3
    np.testing.assert_array_equal(s, [[0, 2, 5], [1, 4, 6]])


# ------------------------------------------------------------------------------ feature store

def _counting_build(monkeypatch):
    """Wrap build_backbone so every forward call and every image is counted."""
    import flowstore.features.extract as E

    counts = {"calls": 0, "images": 0}
    real = E.build_backbone

    def build(*args, **kwargs):
        model, info = real(*args, **kwargs)
        model.register_forward_hook(lambda m, inp, out: counts.update(calls=counts["calls"] + 1,
                                                                      images=counts["images"] + inp[0].shape[0]))
        return model, info

    monkeypatch.setattr(E, "build_backbone", build)
    return counts


def test_features_resume_without_recomputation(tiny_store, tmp_path, monkeypatch):
    import flowstore

    counts = _counting_build(monkeypatch)
    out = tmp_path / "flow.h5"
    cfg = dict(stream="flow", backbone="resnet18", weights="random", num_segments=2, length=3,
               temporal_views=2, batch_size=8)
    reader = flowstore.open_store(tiny_store)
    videos = reader.videos
    # an interrupted first run: the process dies after 5 videos were written
    import flowstore.features.store as S

    real_append = S.FeatureStore.append
    written = {"n": 0}

    def dying_append(self, vids, *a, **k):
        if written["n"] >= 5:
            raise KeyboardInterrupt
        vids, a = vids[: 5 - written["n"]], [x[: 5 - written["n"]] for x in a]
        written["n"] += len(vids)
        return real_append(self, vids, *a, **k)

    monkeypatch.setattr(S.FeatureStore, "append", dying_append)
    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_store, out, FeatureConfig(**cfg), show_progress=False)
    monkeypatch.setattr(S.FeatureStore, "append", real_append)
    with open_features(out) as fs:
        assert fs.videos == videos[:5]
        first = fs.features()
    # the rerun computes exactly the other videos: V * S images each
    counts.update(calls=0, images=0)
    summary = extract_features(tiny_store, out, FeatureConfig(**cfg), show_progress=False)
    assert summary.skipped == 5 and summary.computed == len(videos) - 5
    assert counts["images"] == (len(videos) - 5) * 2 * 2 == summary.images
    # a third run computes nothing at all
    counts.update(calls=0, images=0)
    summary = extract_features(tiny_store, out, FeatureConfig(**cfg), show_progress=False)
    assert summary.computed == 0 and counts["calls"] == 0 and summary.skipped == len(videos)
    with open_features(out) as fs:
        assert fs.videos == videos and fs.shape == (len(videos), 2, 2, 512)
        np.testing.assert_array_equal(fs.features()[:5], first)
        # resumed rows equal an uninterrupted run's
        full = tmp_path / "full.h5"
        extract_features(tiny_store, full, FeatureConfig(**cfg), show_progress=False)
        with open_features(full) as ref:
            np.testing.assert_allclose(fs.features(), ref.features(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(fs.starts()[0], snippet_starts(reader.num_flows(videos[0]), 2, 3, 2))
    # other settings are refused, naming the difference
    with pytest.raises(FeatureStoreError, match="num_segments"):
        extract_features(tiny_store, out, FeatureConfig(**{**cfg, "num_segments": 3}), show_progress=False)


def test_provenance_recorded(tiny_store, tmp_path):
    import flowstore

    out = tmp_path / "rgb.h5"
    summary = extract_features(tiny_store, out, FeatureConfig(stream="rgb", spatial_views=2, seed=5),
                               show_progress=False)
    reader = flowstore.open_store(tiny_store)
    with open_features(out) as fs:
        p = fs.provenance
        assert fs.shape == (len(reader.videos), 2, 3, 512) == summary.shape
        feats = fs.features()
    assert p["stream"] == "rgb"
    assert p["backbone"]["name"] == "resnet18" and p["backbone"]["zero_init_last"] is False
    assert p["backbone"]["weights"] == {"source": "random", "seed": 5,
                                        "sha256": B.build_backbone("resnet18", seed=5)[1]["weights"]["sha256"]}
    assert p["sampling"]["num_segments"] == 3 and p["sampling"]["length"] == 1
    assert p["views"] == {"temporal": 1, "spatial": 2, "total": 2, "spatial_mode": "center+flip",
                          "order": "view = t * spatial + c"}
    header, full = manifest_hashes(reader.manifest)
    assert p["store"]["manifest_sha256"] == full and p["store"]["header_sha256"] == header
    assert p["store"]["path"] == str(tiny_store.resolve()) and p["store"]["flow"]["method"] == "farneback"
    # the hash is of the canonical JSON of the manifest as read (header + committed entries)
    m = {k: v for k, v in reader.manifest.items() if k != "updated_at"}
    assert full == hashlib.sha256(json.dumps(m, sort_keys=True, separators=(",", ":"),
                                             ensure_ascii=False).encode()).hexdigest()
    # the mirrored view really differs from the centre view, and features are finite
    assert np.isfinite(feats).all() and not np.allclose(feats[:, 0], feats[:, 1])


def test_features_cli_and_errors(tiny_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "f.h5"
    args = ["features", "--store", str(tiny_store), "--stream", "flow", "--out", str(out), "--length", "2",
            "--segments", "2", "--no-progress", "--summary-json", str(tmp_path / "s.json")]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "s.json").read_text())["computed"] == 12
    res = runner.invoke(cli, args)
    assert res.exit_code == 0 and "0 video(s) computed, 12 already stored" in res.output
    res = runner.invoke(cli, args[:-2] + ["--weights", str(tmp_path / "missing.pth")])
    assert res.exit_code == 2 and "weights file not found" in res.output
    res = runner.invoke(cli, args[:-2] + ["--segments", "3"])
    assert res.exit_code == 2 and "different settings" in res.output


@pytest.mark.parametrize("name", ["features", "train-head", "evaluate"])
def test_help(name):
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert f"Usage: cli {name}" in res.output or f"{name} [OPTIONS]" in res.output
    expected = {"features": ["--weights", "--stream", "--temporal-views", "cross-modality"],
                "train-head": ["--fusion", "late-weighted", "--head", "metrics.json", "--class-weighted"],
                "evaluate": ["--model", "--views", "multi-view"]}[name]
    for word in expected:
        assert word in res.output
