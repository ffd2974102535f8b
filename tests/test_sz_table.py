"""Simonyan & Zisserman's tables from a store: ``features --stacking``, ``evaluate --reference``
and the recipes (pipelines/*.toml) that run them.

The stacking checks compare what ``features`` stored with the backbone applied to the input the
loader builds for that stacking (:class:`~flowstore.data.dataset.StoreClipDataset`, whose
stackings tests/test_stackings.py derives by hand), so the option is shown to reach the
loader rather than assumed to.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.cli.recipe import load_recipe, plan_stages
from flowstore.features.store import open_features
from flowstore.heads.modeleval import accuracy_table, row_key

from helpers import REPO

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LENGTH = 4  # flows per snippet: 8 channels; bidirectional reads 2 backward + 2 forward


def _store(root: Path, directions: tuple) -> Path:
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract
    from flowstore.synthetic import make_demo_dataset

    data = root / "data"
    if not data.exists():
        make_demo_dataset(data, clips_per_class=1, num_frames=7, size=(64, 48))
    out = root / ("store_" + "_".join(directions))
    cfg = ExtractConfig(out=str(out), method="farneback", workers=1, directions=directions)
    summary = run_extract(plan_jobs([str(data / "videos")]), cfg, show_progress=False, log=lambda m: None)
    assert not summary.failures
    return out


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("sz")
    return {"both": _store(root, ("forward", "backward")), "forward": _store(root, ("forward",))}


def features(store, out, *extra):
    return CliRunner().invoke(cli, ["features", "--store", str(store), "--stream", "flow", "--segments", "1",
                                    "--length", str(LENGTH), "--out", str(out), "--no-progress", *extra])


# bidirectional with the stack mean: each half has its own (the stacking's mean_groups)
@pytest.mark.parametrize("stacking, mean", [("stack", "field"), ("bidirectional", "stack"), ("trajectory", "field")])
def test_features_stacking_is_the_loaders_stack_through_the_backbone(stores, tmp_path, stacking, mean):
    from flowstore.data.dataset import StoreClipDataset
    from flowstore.features.backbones import build_backbone

    out = tmp_path / f"{stacking}.h5"
    res = features(stores["both"], out, "--stacking", stacking, "--mean-subtract", mean)
    assert res.exit_code == 0, res.output
    ds = StoreClipDataset(str(stores["both"]), None, modality="flow", sampling="tsn", stacking=stacking,
                          num_segments=1, length=LENGTH, train=False, flow_values="q128", mean_subtract=mean,
                          read_ahead=0)
    model, _ = build_backbone("resnet18", in_chans=2 * LENGTH, weights="random", seed=0)
    with open_features(out) as fs, torch.inference_mode():
        assert fs.provenance["sampling"]["stacking"] == stacking
        for i, video in enumerate(ds.videos):
            expected = model(ds[i]["flow"].float()).numpy()          # (S = 1, D)
            np.testing.assert_allclose(fs.features([video])[0, 0], expected, rtol=1e-4, atol=1e-4)


def test_resuming_with_another_stacking_is_a_settings_mismatch_and_old_files_resume(stores, tmp_path):
    out = tmp_path / "f.h5"
    assert features(stores["both"], out).exit_code == 0
    with open_features(out) as fs:
        n = fs.count
        assert fs.provenance["sampling"]["stacking"] == "stack"  # recorded even for the default
    res = features(stores["both"], out, "--stacking", "trajectory")
    assert res.exit_code != 0
    assert "different settings" in res.output and "sampling.stacking" in res.output and "--overwrite" in res.output
    # a file made before --stacking existed (no sampling.stacking) resumes as a stack file
    with h5py.File(out, "r+") as f:
        prov = json.loads(f.attrs["provenance"])
        del prov["sampling"]["stacking"]
        f.attrs["provenance"] = json.dumps(prov, sort_keys=True)
    res = features(stores["both"], out, "--stacking", "stack")
    assert res.exit_code == 0, res.output
    assert f"0 video(s) computed, {n} already stored" in res.output
    # ... and not as anything else
    assert features(stores["both"], out, "--stacking", "bidirectional").exit_code != 0


def test_stackings_the_store_or_stream_cannot_give_are_refused_before_any_file(stores, tmp_path):
    out = tmp_path / "bi.h5"
    res = features(stores["forward"], out, "--stacking", "bidirectional")
    assert res.exit_code == 2 and "needs backward flow" in res.output and "--direction both" in res.output
    assert not out.exists()
    res = features(stores["both"], out, "--stacking", "bidirectional", "--length", "3")  # L/2 each way
    assert res.exit_code == 2 and "must be even" in res.output and not out.exists()
    res = CliRunner().invoke(cli, ["features", "--store", str(stores["both"]), "--stream", "rgb",
                                   "--stacking", "trajectory", "--out", str(out)])
    assert res.exit_code == 2 and "stacking flow" in res.output and not out.exists()
    res = features(stores["both"], out, "--stacking", "zigzag")
    assert res.exit_code == 2 and "bidirectional" in res.output and "trajectory" in res.output
    text = CliRunner().invoke(cli, ["features", "--help"]).output
    assert "--stacking" in text and "bidirectional" in text and "--direction both" in text and "eq. 2" in text


# ------------------------------------------------------------------------ the reference column

def _rows():
    def row(model, fusion, top1):
        return {"model": model, "streams": "rgb+flow" if fusion != "none" else "flow", "head": "linear",
                "fusion": fusion, "views": 1, "n": 4, "top1": top1, "top5": 1.0, "mean_class_accuracy": top1,
                "chosen": fusion == "svm", "weights": None}
    return [row("flow_L10", "none", 0.75), row("fused", "late-avg", 0.5), row("fused", "svm", 1.0)]


def test_reference_column_beside_each_named_row():
    rows = _rows()
    assert [row_key(r) for r in rows] == ["flow_L10", "fused:late-avg", "fused:svm"]
    assert "reference" not in accuracy_table(rows)  # without references: the table as before
    lines = accuracy_table(rows, {"flow_L10": "81.0%", "fused:svm": "87.0%"}).splitlines()
    assert lines[0].endswith(" reference |") and lines[1].endswith("---|")
    assert lines[2].startswith("| flow_L10 |") and lines[2].endswith("| 75.0% | 4 | 81.0% |")
    assert lines[3].endswith("| 4 | — |")  # a row it does not name
    assert lines[4].startswith("| fused |") and "svm *" in lines[4] and lines[4].endswith("| 87.0% |")


def test_reference_option_shape_is_checked():
    from flowstore.cli.evaluate import _reference

    assert _reference("fused:svm=87.0% (Table 3)") == ("fused:svm", "87.0% (Table 3)")
    assert _reference("a=b=c") == ("a", "b=c")
    for bad in ("87.0%", "=87.0%"):
        with pytest.raises(Exception, match="ROW=TEXT"):
            _reference(bad)


# ---------------------------------------------------------------------------------- recipes

RECIPES = sorted((REPO / "pipelines").glob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_and_its_settings_are_real_options(path):
    stages = plan_stages(load_recipe(path))  # unknown settings or commands raise here
    assert stages and all(s.argv is not None for s in stages)


def _stage(recipe, command):
    return [(name, recipe[name]) for name in recipe["recipe"]["stages"]
            if recipe[name].get("command", name) == command]


@pytest.mark.parametrize("name", ["demo_sz_table.toml", "ucf101_sz.toml"])
def test_sz_recipes_have_every_row_of_the_papers_tables(name):
    recipe = load_recipe(REPO / "pipelines" / name)
    flows = {s["out"]: s for _, s in _stage(recipe, "features") if s["stream"] == "flow"}
    configs = {(s["length"], s.get("stacking", "stack"), s["mean_subtract"]) for s in flows.values()}
    assert configs >= {(1, "stack", "field"), (5, "stack", "field"), (10, "stack", "field"),
                       (10, "stack", "none"), (10, "trajectory", "field"), (10, "trajectory", "none"),
                       (10, "bidirectional", "field")}
    extract = _stage(recipe, "extract")[0][1]
    assert extract["direction"] == "both"
    # every flow store has a head, and the table's models are the heads
    heads = {s["out"]: s for _, s in _stage(recipe, "train-head")}
    assert set(flows) <= {f for h in heads.values() for f in h["features"]}
    table = _stage(recipe, "evaluate")[0][1]
    assert set(table["model"]) == set(heads)
    fused = [h for h in heads.values() if h.get("fusion") == "svm"]  # averaging etc. are reported beside it
    assert len(fused) == 1 and len(fused[0]["features"]) == 2
    assert any(h.get("fusion") == "mid-conv" for h in heads.values())
    # each --reference names a row the table will have: a model, or a fused model's fusion
    names = {Path(m).name for m in table["model"]}
    fusion_rows = {f"{Path(h['out']).name}:{f}" for h in fused for f in ("late-avg", "svm")}
    keys = [r.partition("=")[0] for r in table["reference"]]
    assert set(keys) <= names | fusion_rows and {"late-avg", "svm"} <= {k.partition(":")[2] for k in keys}
    assert all(re.search(r"\d+\.\d%", r) for r in table["reference"])
