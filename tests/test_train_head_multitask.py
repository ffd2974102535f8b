"""`flowstore train-head --head multitask --also FEATURES LABELS` (two datasets, one output layer
each, per-dataset metrics), `evaluate` of such a model directory, and fine-tuning with
`--init-from`, on tiny synthetic feature stores whose labels are derivable: every class is a
mean vector plus noise well below the distance between means, so a head that learns the means
classifies (nearly) every test video."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features.store import FeatureStore
from flowstore.heads.io import load_head

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _dataset(root, name, classes, n_per_class, dim, seed):
    """``root/<name>.h5`` (V=2, S=2, D=dim) and ``root/<name>.csv`` (every 3rd video of a class is test)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 1, (len(classes), dim)).astype(np.float32)
    rows, videos, labels = [], [], []
    for c, cname in enumerate(classes):
        for k in range(n_per_class):
            vid = f"{name}_{cname}_{k:02d}"
            rows.append([vid, c, cname, "test" if k % 3 == 0 else "train"])
            videos.append(vid)
            labels.append(c)
    y = np.array(labels)
    feats = means[y][:, None, None, :] + rng.normal(0, 0.2, (len(y), 2, 2, dim)).astype(np.float32)
    prov = {"stream": "rgb", "backbone": {"name": "synthetic", "weights": {"source": "random", "seed": seed}},
            "sampling": {"num_segments": 2}, "views": {"total": 2}, "input": {}, "dtype": "float32",
            "store": {"header_sha256": name, "manifest_sha256": name}}
    fs = FeatureStore.create_or_resume(root / f"{name}.h5", prov, num_views=2, num_segments=2, feature_dim=dim,
                                       temporal_views=1)
    fs.append(videos, feats, np.zeros((len(y), 1, 2), np.int32), [1] * len(y), ["0" * 64] * len(y))
    fs.close()
    with open(root / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "class_name", "split"])
        w.writerows(rows)
    return root / f"{name}.h5", root / f"{name}.csv"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mt")
    return {"ucf": _dataset(root, "ucf", ["run", "jump", "swim", "ride"], 12, 16, 1),
            "hmdb": _dataset(root, "hmdb", ["eat", "talk", "wave"], 12, 16, 2),
            "hmdb_same": _dataset(root, "hmdbsame", ["run", "jump", "swim", "ride"], 9, 16, 3),
            "narrow": _dataset(root, "narrow", ["x", "y"], 6, 8, 4)}


def _run(args, ok=True):
    res = CliRunner().invoke(cli, [str(a) for a in args])
    if ok:
        assert res.exit_code == 0, res.output + (repr(res.exception) if res.exception else "")
    return res


def test_multitask_from_the_cli_with_per_dataset_metrics(data, tmp_path):
    (uf, ul), (hf, hl) = data["ucf"], data["hmdb"]
    out = tmp_path / "mt"
    res = _run(["train-head", "--features", uf, "--labels", ul, "--also", hf, hl, "--head", "multitask",
                "--hidden", "32", "--dropout", "0", "--epochs", "40", "--lr", "1e-2", "--val-fraction", "0",
                "--out", out])
    assert "multitask [ucf]" in res.output and "multitask [hmdb]" in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["per_dataset"]) == {"ucf", "hmdb"} and m["streams"] == ["ucf", "hmdb"]
    # 4 test videos per class (k = 0, 3, 6, 9 of 12); the means are separable, so (nearly) all right
    assert m["per_dataset"]["ucf"]["n"] == 16 and m["per_dataset"]["hmdb"]["n"] == 12
    for d in m["per_dataset"].values():
        assert d["top1"] >= 0.9 and d["split"] == "test"
    assert m["top1"] == m["per_dataset"]["ucf"]["top1"]
    assert np.array(m["per_dataset"]["hmdb"]["confusion_matrix"]).shape == (3, 3)
    # each dataset is scored over its own classes only
    with open(out / "predictions_hmdb.csv") as f:
        header = next(csv.reader(f))
    assert [h for h in header if h.startswith("score_")] == ["score_eat", "score_talk", "score_wave"]
    for name in ("confusion_ucf.png", "confusion_hmdb.png", "predictions_ucf.csv", "head.pt", "curves.png"):
        assert (out / name).is_file()
    head = load_head(out / "head")
    assert head.config["task_classes"] == [4, 3]
    # evaluate handles it per dataset, with the same numbers
    ev = _run(["evaluate", "--model", out, "--out", tmp_path / "ev"])
    assert "mt[ucf]" in ev.output and "mt[hmdb]" in ev.output
    again = json.loads((tmp_path / "ev" / "mt" / "metrics.json").read_text())
    for name in ("ucf", "hmdb"):
        assert abs(again["per_dataset"][name]["top1"] - m["per_dataset"][name]["top1"]) < 1e-9
    assert (tmp_path / "ev" / "mt" / "confusion_hmdb.png").is_file()


def test_multitask_mistakes(data, tmp_path):
    (uf, ul), (hf, hl), (nf, nl) = data["ucf"], data["hmdb"], data["narrow"]
    res = _run(["train-head", "--features", uf, "--labels", ul, "--also", hf, hl, "--out", tmp_path / "a"], ok=False)
    assert res.exit_code != 0 and "--head multitask" in res.output
    res = _run(["train-head", "--features", uf, "--labels", ul, "--head", "multitask", "--out", tmp_path / "b"],
               ok=False)
    assert res.exit_code != 0 and "--also" in res.output
    res = _run(["train-head", "--features", uf, "--labels", ul, "--also", nf, nl, "--head", "multitask",
                "--out", tmp_path / "c"], ok=False)
    assert res.exit_code != 0 and "ucf.h5" in res.output and "narrow.h5" in res.output
    res = _run(["train-head", "--features", uf, "--labels", ul, "--also", hf, hl, "--head", "multitask",
                "--early-stopping", "3", "--out", tmp_path / "d"], ok=False)
    assert res.exit_code != 0 and "fixed number of epochs" in res.output


def test_fine_tuning_with_init_from(data, tmp_path):
    (uf, ul), (hf, hl), (sf, sl), (nf, nl) = data["ucf"], data["hmdb"], data["hmdb_same"], data["narrow"]
    src = tmp_path / "ucf_mlp"
    _run(["train-head", "--features", uf, "--labels", ul, "--head", "mlp", "--hidden", "32", "--epochs", "20",
          "--lr", "1e-2", "--out", src])
    before = load_head(src / "head").state_dict()
    # another class count: the output layer is re-created, the hidden layer starts from the source.
    # With a learning rate of 1e-12 one epoch moves no weight measurably, so the hidden layer must
    # still be the source's, and the output layer a fresh (3, 32) one.
    ft = tmp_path / "ft"
    res = _run(["train-head", "--features", hf, "--labels", hl, "--head", "mlp", "--init-from", src,
                "--epochs", "1", "--lr", "1e-12", "--out", ft])
    assert "the output layer is new (4 classes there, 3 here)" in res.output
    after = load_head(ft / "head").state_dict()
    torch.testing.assert_close(after["mlp.0.weight"], before["mlp.0.weight"], rtol=0, atol=1e-6)
    assert after["fc.weight"].shape == (3, 32) and before["fc.weight"].shape == (4, 32)
    doc = json.loads((ft / "metrics.json").read_text())
    assert doc["init_from"]["output_layer"] == "re-created"
    assert json.loads((ft / "config.json").read_text())["init_from"]["classes_there"] == 4
    # the same classes: every weight, the output layer too
    res = _run(["train-head", "--features", sf, "--labels", sl, "--head", "mlp", "--init-from", src,
                "--epochs", "1", "--lr", "1e-12", "--out", tmp_path / "same"])
    assert "every weight starts from" in res.output
    torch.testing.assert_close(load_head(tmp_path / "same" / "head").state_dict()["fc.weight"], before["fc.weight"],
                               rtol=0, atol=1e-6)
    # a multi-task model into a new multi-task run with the datasets in another order: the shared
    # body starts from it, every dataset's output layer is new
    mt = tmp_path / "mt"
    _run(["train-head", "--features", uf, "--labels", ul, "--also", hf, hl, "--head", "multitask", "--hidden", "32",
          "--epochs", "5", "--out", mt])
    res = _run(["train-head", "--features", hf, "--labels", hl, "--also", uf, ul, "--head", "multitask",
                "--init-from", mt, "--epochs", "1", "--lr", "1e-12", "--out", tmp_path / "mt2"])
    assert "the output layer is new" in res.output
    torch.testing.assert_close(load_head(tmp_path / "mt2" / "head").state_dict()["body.0.weight"],
                               load_head(mt / "head").state_dict()["body.0.weight"], rtol=0, atol=1e-6)
    # another feature dimension: refused, naming both feature files
    res = _run(["train-head", "--features", nf, "--labels", nl, "--head", "mlp", "--init-from", src,
                "--out", tmp_path / "bad"], ok=False)
    assert res.exit_code != 0 and "16-dimensional" in res.output and "ucf.h5" in res.output \
        and "narrow.h5" in res.output and "8-dimensional" in res.output
    # another head type: refused, saying which to use
    res = _run(["train-head", "--features", hf, "--labels", hl, "--head", "linear", "--init-from", src,
                "--out", tmp_path / "bad2"], ok=False)
    assert res.exit_code != 0 and "--head mlp" in res.output


def test_help_names_the_new_options():
    out = _run(["train-head", "--help"]).output
    assert "--also" in out and "--init-from" in out and "mid-conv" in out
    assert "multi-task" in _run(["evaluate", "--help"]).output
