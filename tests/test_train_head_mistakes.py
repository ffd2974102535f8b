"""The training side's mistakes give a clear error (exit 2, one line) or a warning line, never a
traceback and never exit 0 with a wrong number (issue 11, item 6):

* labels whose classes differ from the model's (matched by name; another order is remapped);
* a video in both the training and the test split (``--allow-overlap``);
* splits and ``--fusion-folds`` folds that come out empty or without some class;
* damaged or mismatched head files, model directories and feature stores.

Every store and label file is built here: 3 classes x 12 videos, features (N, 1 view, 2 segments,
8 dims) where each class is a separable direction, so a few epochs of a linear head learn them.
"""
from __future__ import annotations

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from flowstore.cli.main import cli
from flowstore.features.store import FeatureStore

CLASSES = ["a", "b", "c"]
D, S, PER_CLASS = 8, 2, 12

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _write_store(path, stream, videos, feats, **prov_extra):
    prov = {"stream": stream, "backbone": {"name": "synthetic", "weights": {"source": "random", "seed": 0}},
            "sampling": {"num_segments": feats.shape[2]}, "views": {"total": feats.shape[1]},
            "input": {}, "dtype": "float32", "store": {"header_sha256": "x", "manifest_sha256": "y"}, **prov_extra}
    fs = FeatureStore.create_or_resume(path, prov, num_views=feats.shape[1], num_segments=feats.shape[2],
                                       feature_dim=feats.shape[3], temporal_views=1)
    fs.append(videos, feats, np.zeros((len(videos), 1, feats.shape[2]), np.int32), [1] * len(videos),
              ["0" * 64] * len(videos))
    fs.close()


def _features(labels, seed, dim=D, noise=0.3):
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(0, 1, (len(CLASSES), dim)).astype(np.float32)
    y = np.asarray(labels)
    return (means[y][:, None, None, :] + rng.normal(0, noise, (len(y), 1, S, dim))).astype(np.float32)


def _write_labels(path, rows, class_order=CLASSES):
    """A demo-format labels.csv of ``rows`` (video, class name, split) numbered by ``class_order``,
    and the classInd.txt beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video_id", "label", "class_name", "split"])
        w.writerows([v, class_order.index(c), c, sp] for v, c, sp in rows)
    (path.parent / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(class_order)))
    return path


def _rows(split_of=lambda k: "test" if k % 3 == 0 else "train", classes=CLASSES):
    return [(f"{c}/{c}_{k:03d}", c, split_of(k)) for c in classes for k in range(PER_CLASS)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    rows = _rows()
    videos = [v for v, _, _ in rows]
    y = [CLASSES.index(c) for _, c, _ in rows]
    _write_labels(root / "labels" / "labels.csv", rows)
    _write_store(root / "flow.h5", "flow", videos, _features(y, 0))
    _write_store(root / "rgb.h5", "rgb", videos, _features(y, 1, noise=3.0))
    return root


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _ok(*args):
    res = _run(*args)
    assert res.exit_code == 0, res.output + (repr(res.exception) if res.exception else "")
    return res


def _refused(*args, match: str):
    """Exit 2 with one ``error:`` line matching ``match`` (a regex), no traceback."""
    res = _run(*args)
    assert res.exit_code == 2, res.output + (repr(res.exception) if res.exception else "")
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    assert re.search(match, errors[0]), errors[0]
    return errors[0]


TRAIN = ("--epochs", 5, "--lr", 1e-2, "--batch-size", 8)


def _train(data, out, *extra, labels=None, features=("flow.h5",)):
    feats = [a for f in features for a in ("--features", data / f)]
    return _ok("train-head", *feats, "--labels", labels or data / "labels" / "labels.csv", *TRAIN, *extra,
               "--out", out)


@pytest.fixture(scope="module")
def model(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "flow"
    _train(data, out)
    return out


@pytest.fixture(scope="module")
def fused(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "fused"
    _train(data, out, "--fusion", "svm", features=("rgb.h5", "flow.h5"))
    return out


def _copy(model, tmp_path):
    dst = tmp_path / model.name
    shutil.copytree(model, dst)
    return dst


# ------------------------------------------------------------------------------ classes by name

def test_classes_are_recorded_by_name(model):
    assert json.loads((model / "config.json").read_text())["classes"] == CLASSES
    assert json.loads((model / "head.json").read_text())["extra"]["classes"] == CLASSES


def test_reordered_label_file_evaluates_to_the_same_accuracy(data, model, tmp_path):
    original = tmp_path / "original"
    _ok("evaluate", "--model", model, "--labels", data / "labels" / "labels.csv", "--out", original)
    order = ["c", "a", "b"]
    reordered = _write_labels(tmp_path / "reordered" / "labels.csv", _rows(), order)
    # the file's numbers really differ: 'a' is label 0 in the original and 1 here
    assert "a/a_000,1,a,test" in reordered.read_text()
    res = _ok("evaluate", "--model", model, "--labels", reordered, "--out", tmp_path / "re")
    assert "list the model's classes in another order; matched by name" in res.output
    a = json.loads((original / "flow" / "metrics.json").read_text())
    b = json.loads((tmp_path / "re" / "flow" / "metrics.json").read_text())
    assert a["n"] == b["n"] == 3 * PER_CLASS // 3
    for key in ("top1", "top5", "mean_class_accuracy", "per_class_accuracy", "confusion_matrix"):
        assert a[key] == b[key], key
    # and both equal what train-head measured on the same test videos
    assert a["top1"] == json.loads((model / "metrics.json").read_text())["top1"]


def test_reordered_test_labels_at_training_are_matched_by_name(data, model, tmp_path):
    test_csv = _write_labels(tmp_path / "t" / "test.csv", [r for r in _rows() if r[2] == "test"], ["b", "c", "a"])
    out = tmp_path / "m"
    _train(data, out, "--test-labels", test_csv)
    # the same videos and seed as `model`: the same numbers, although the test file numbers differ
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (model, out))
    assert (a["top1"], a["confusion_matrix"]) == (b["top1"], b["confusion_matrix"])


@pytest.mark.parametrize("classes,match", [
    (["a", "b", "z"], r"missing 'c'; not trained on 'z'"),               # a class renamed
    (["a", "b", "c", "d"], r"not trained on 'd'"),                       # an extra class
    (["a", "b"], r"missing 'c'"),                                        # a class missing
])
def test_labels_with_other_class_names_are_refused(data, model, tmp_path, classes, match):
    rows = [(v.replace("c/", f"{classes[-1]}/"), classes[-1] if c == "c" else c, sp) for v, c, sp in _rows()]
    if len(classes) == 2:  # drop class c's videos
        rows = [r for r in _rows() if r[1] != "c"]
    labels = _write_labels(tmp_path / "l" / "labels.csv", rows, classes)
    msg = _refused("evaluate", "--model", model, "--labels", labels,
                   match=r"do not have the classes the model .* was trained with \(classes are matched by name\): "
                         + match)
    assert str(labels) in msg


def test_unnamed_labels_are_refused_for_a_named_model(data, model, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{v} {CLASSES.index(c)}\n" for v, c, _ in _rows()))
    _refused("evaluate", "--model", model, "--labels", lst, "--subset", "train",
             match=r"missing 'a', 'b', 'c'; not trained on '0', '1', '2' .*pass --classes classInd.txt")
    # with --classes they are named, and evaluate
    _ok("evaluate", "--model", model, "--labels", lst, "--classes", data / "labels" / "classInd.txt",
        "--subset", "train")


def test_unnamed_classes_are_matched_by_number(data, tmp_path):
    """mmaction2 lists without --classes name no classes: the model records "0".."2", and lists
    that name none either evaluate by number while every label is one of the model's classes."""
    rows = _rows()
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{v} {CLASSES.index(c)}\n" for v, c, sp in rows if sp == "train"))
    test = tmp_path / "test.txt"
    test.write_text("".join(f"{v} {CLASSES.index(c)}\n" for v, c, sp in rows if sp == "test"))
    out = tmp_path / "m"
    _ok("train-head", "--features", data / "flow.h5", "--labels", train, "--test-labels", test, *TRAIN, "--out", out)
    assert json.loads((out / "config.json").read_text())["classes"] == ["0", "1", "2"]
    two = tmp_path / "two.txt"  # classes 0 and 1 only: their stand-in names are "0", "1"
    two.write_text("".join(line + "\n" for line in test.read_text().splitlines() if not line.endswith(" 2")))
    _ok("evaluate", "--model", out, "--labels", train, "--test-labels", two)
    four = tmp_path / "four.txt"
    four.write_text(test.read_text() + "c/c_001 3\n")
    _refused("evaluate", "--model", out, "--labels", train, "--test-labels", four,
             match=r"use label 3, but the model .* has 3 classes \(0\.\.2\)")


# ------------------------------------------------------------------------------ overlap

def test_train_and_test_overlap_is_an_error_unless_allowed(data, tmp_path):
    test_csv = _write_labels(tmp_path / "t" / "test.csv",
                             [(v, c, "test") for v, c, sp in _rows() if sp == "test" or v in ("a/a_001", "b/b_002")])
    args = ("--test-labels", test_csv)
    _refused("train-head", "--features", data / "flow.h5", "--labels", data / "labels" / "labels.csv", *TRAIN,
             *args, "--out", tmp_path / "x",
             match=r"^error: 2 video\(s\) are in both the training and the test split, e\.g\. "
                   r"\['a/a_001', 'b/b_002'\].*pass --allow-overlap")
    res = _train(data, tmp_path / "y", *args, "--allow-overlap")
    assert "warning: 2 video(s) are in both the training and the test split" in res.output
    assert json.loads((tmp_path / "y" / "metrics.json").read_text())["n"] == 3 * PER_CLASS // 3 + 2


def test_evaluating_on_training_videos_is_an_error_unless_allowed(data, model, tmp_path):
    trained = json.loads((model / "config.json").read_text())["splits"]
    seen = sorted(trained["train"] + trained["val"])
    rows = [(v, c, "test" if (sp == "test" or v in seen[:4]) else "train") for v, c, sp in _rows()]
    labels = _write_labels(tmp_path / "l" / "labels.csv", rows)
    _refused("evaluate", "--model", model, "--labels", labels,
             match=rf"4 video\(s\) are in both the model's training \(or validation\) and the evaluated test split, "
                   rf"e\.g\. {re.escape(str(seen[:3]))}.*--allow-overlap")
    res = _ok("evaluate", "--model", model, "--labels", labels, "--allow-overlap", "--out", tmp_path / "e")
    assert "warning: 4 video(s)" in res.output
    assert json.loads((tmp_path / "e" / "flow" / "metrics.json").read_text())["n"] == 3 * PER_CLASS // 3 + 4


@pytest.mark.parametrize("command", ["train-head", "evaluate"])
def test_allow_overlap_is_documented(command):
    assert "--allow-overlap" in _ok(command, "--help").output


# ------------------------------------------------------------------------------ splits and folds

def test_training_split_without_a_class_the_test_split_holds(data, tmp_path):
    rows = [(v, c, "test" if c == "c" else sp) for v, c, sp in _rows()]
    labels = _write_labels(tmp_path / "l" / "labels.csv", rows)
    _refused("train-head", "--features", data / "flow.h5", "--labels", labels, *TRAIN, "--out", tmp_path / "x",
             match=r"the training split has no videos of class\(es\) \['c'\], which the val or test split holds")


def test_validation_by_group_taking_a_whole_class(data, tmp_path):
    # groups = the class folder: the one validation group (round(0.4 * 3) = 1) is a whole class
    _refused("train-head", "--features", data / "flow.h5", "--labels", data / "labels" / "labels.csv", *TRAIN,
             "--val-fraction", 0.4, "--group-pattern", r"^(\w)/", "--out", tmp_path / "x",
             match=r"the training split has no videos of class\(es\) \['[abc]'\], which the val or test split holds")


def test_class_without_videos_is_a_warning(data, tmp_path):
    labels = _write_labels(tmp_path / "l" / "labels.csv", _rows(), CLASSES + ["d"])
    res = _train(data, tmp_path / "m", labels=labels)
    assert "warning: class(es) ['d'] have no labelled videos (1 of 4 classes)" in res.output
    m = json.loads((tmp_path / "m" / "metrics.json").read_text())
    assert m["per_class_accuracy"]["d"] is None and len(m["confusion_matrix"]) == 4


def test_test_split_without_a_class_and_empty_splits_are_warnings(data, tmp_path):
    rows = [(v, c, "train" if c == "c" else sp) for v, c, sp in _rows()]
    res = _train(data, tmp_path / "m1", labels=_write_labels(tmp_path / "l1" / "labels.csv", rows))
    assert "warning: the test split has no videos of class(es) ['c'] (1 of 3)" in res.output
    assert json.loads((tmp_path / "m1" / "metrics.json").read_text())["per_class_accuracy"]["c"] is None
    # no test rows: the metrics are on the validation videos, and say so
    rows = [(v, c, "train") for v, c, _ in _rows()]
    res = _train(data, tmp_path / "m2", labels=_write_labels(tmp_path / "l2" / "labels.csv", rows))
    assert "warning: the test split is empty: the metrics are on the validation videos" in res.output
    assert "on val (n=" in res.output
    # one video group: --val-fraction cannot hold any out, and the metrics fall to the training videos
    res = _train(data, tmp_path / "m3", "--group-pattern", "/", labels=tmp_path / "l2" / "labels.csv")
    assert "warning: --val-fraction 0.2 left the validation split empty" in res.output
    assert "the metrics are on the TRAINING (optimistic) videos" in res.output and "on train (n=36)" in res.output


def test_empty_test_labels_file(data, tmp_path):
    empty = tmp_path / "test.txt"
    empty.write_text("# nothing\n")
    _refused("train-head", "--features", data / "flow.h5", "--labels", data / "labels" / "labels.csv",
             "--test-labels", empty, "--out", tmp_path / "x", match=rf"{re.escape(str(empty))}: no test videos")


def test_fusion_folds_with_too_few_videos_of_a_class(data, tmp_path):
    rows = [r for r in _rows() if r[1] != "c" or r[0] in ("c/c_000", "c/c_001", "c/c_002")]  # c: 2 train, 1 test
    labels = _write_labels(tmp_path / "l" / "labels.csv", rows)
    _refused("train-head", "--features", data / "rgb.h5", "--features", data / "flow.h5", "--labels", labels,
             *TRAIN, "--fusion", "late-avg", "--val-fraction", 0, "--fusion-folds", 3, "--out", tmp_path / "x",
             match=r"--fusion-folds 3: class\(es\) c \(2\) have fewer training videos than folds")


def test_folds_by_group_missing_a_class_are_reported(tmp_path):
    # classes a and b spread over groups g0..g3; every c video is in group g9: the fold holding
    # g9 trains its head without c, and the other folds hold no c
    rows, y = [], []
    for c in CLASSES:
        for k in range(8):
            group = 9 if c == "c" else k % 4
            rows.append((f"{c}/{c}_g{group}_{k}", c, "test" if k == 0 else "train"))
            y.append(CLASSES.index(c))
    videos = [r[0] for r in rows]
    _write_store(tmp_path / "flow.h5", "flow", videos, _features(y, 0))
    _write_store(tmp_path / "rgb.h5", "rgb", videos, _features(y, 1, noise=3.0))
    labels = _write_labels(tmp_path / "l" / "labels.csv", rows)
    res = _ok("train-head", "--features", tmp_path / "rgb.h5", "--features", tmp_path / "flow.h5", "--labels", labels,
              *TRAIN, "--fusion", "late-avg", "--val-fraction", 0, "--fusion-folds", 3, "--group-pattern", r"_g(\d)_",
              "--out", tmp_path / "m")
    warnings = [line for line in res.output.splitlines() if "warning: fold" in line]
    never = [w for w in warnings if "its head never sees class(es) ['c']" in w]
    lacking = [w for w in warnings if "it holds no videos of class(es) ['c']" in w]
    assert len(never) == 1 and len(lacking) == 2 and len(warnings) == 3, warnings  # reported once, not per stream


# ------------------------------------------------------------------------------ damaged files

@pytest.mark.parametrize("damage,match", [
    (lambda d: (d / "head.pt").write_bytes((d / "head.pt").read_bytes()[:100]), r"head\.pt: cannot read the head weights"),
    (lambda d: (d / "head.pt").write_bytes(b"garbage" * 50), r"head\.pt: cannot read the head weights"),
    (lambda d: (d / "head.json").write_text((d / "head.json").read_text()[:40]),
     r"head\.json: head config is not valid JSON"),
    (lambda d: (d / "config.json").write_text("{\"format\": \"flowstore-train-head\", "),
     r"config\.json: model config is not valid JSON"),
    (lambda d: (d / "head.pt").unlink(), r"head weights are missing: .*head\.pt"),
    (lambda d: (d / "head.json").unlink(), r"head config is missing: .*head\.json"),
    (lambda d: (d / "config.json").unlink(), r"no config\.json"),
])
def test_damaged_or_missing_head_files(model, tmp_path, damage, match):
    d = _copy(model, tmp_path)
    damage(d)
    _refused("evaluate", "--model", d, match=match)


def _edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def test_head_json_that_does_not_match_the_weights(model, tmp_path):
    d = _copy(model, tmp_path)
    _edit_json(d / "head.json", lambda doc: doc["head"].update(in_dim=D + 1))
    _refused("evaluate", "--model", d,
             match=rf"head\.pt does not match head\.json: fc\.weight is \[3, {D}\], the config gives \[3, {D + 1}\]")
    d = _copy(model, tmp_path / "2")
    _edit_json(d / "head.json", lambda doc: doc["head"].update(name="nope"))
    _refused("evaluate", "--model", d, match=r"head\.json: unknown head 'nope'; choose from \['linear', 'mlp'")
    d = _copy(model, tmp_path / "3")
    _edit_json(d / "head.json", lambda doc: doc["head"].update(hidden=4))
    _refused("evaluate", "--model", d, match=r"head\.json: cannot build the linear head from its config")


def test_head_of_another_model(model, tmp_path):
    from flowstore.heads.io import save_head
    from flowstore.heads.models import build_head

    d = _copy(model, tmp_path)
    save_head(build_head("linear", in_dim=D, num_classes=4, num_segments=S), d / "head", extra={"classes": list("abcd")})
    _refused("evaluate", "--model", d, match=r"head\.json: the head has 4 outputs but config\.json names 3 classes")
    save_head(build_head("linear", in_dim=D, num_classes=3, num_segments=S), d / "head", extra={"classes": list("xyz")})
    _refused("evaluate", "--model", d, match=r"head\.json records the classes \['x', 'y', 'z'\]")


def test_non_finite_weights(model, tmp_path):
    d = _copy(model, tmp_path)
    state = torch.load(d / "head.pt", weights_only=True)
    state["fc.bias"][0] = float("nan")
    torch.save(state, d / "head.pt")
    _refused("evaluate", "--model", d, match=r"head\.pt: non-finite values \(NaN or inf\) in \['fc\.bias'\]")


def test_damaged_model_directory_files(fused, tmp_path):
    d = _copy(fused, tmp_path)
    (d / "fusion.json").unlink()
    _refused("evaluate", "--model", d, match=r"fusion\.json \(the fused model's fusion parameters\) is missing: .*fusion\.json")
    d = _copy(fused, tmp_path / "2")
    _edit_json(d / "fusion.json", lambda doc: doc["fusions"]["svm"]["coef"].pop())
    _refused("evaluate", "--model", d, match=r"fusion\.json: fusion 'svm': 'coef' must be 3 x 6 numbers")
    d = _copy(fused, tmp_path / "3")
    _edit_json(d / "fusion.json", lambda doc: doc["fusions"].pop("svm"))
    _refused("evaluate", "--model", d, match=r"fusion\.json has no parameters of the model's fusion 'svm'")
    d = _copy(fused, tmp_path / "4")
    _edit_json(d / "config.json", lambda doc: doc["streams"][0].update(head="../../elsewhere"))
    _refused("evaluate", "--model", d, match=r"streams\[0\]\.head '\.\./\.\./elsewhere' is not a head file name")
    d = _copy(fused, tmp_path / "5")
    _edit_json(d / "config.json", lambda doc: doc.pop("classes"))
    _refused("evaluate", "--model", d, match=r"config\.json: 'classes' must be a non-empty list")
    d = _copy(fused, tmp_path / "6")
    (d / "head_rgb.pt").unlink()
    _refused("evaluate", "--model", d, match=r"head weights are missing: .*head_rgb\.pt")


def test_feature_store_that_does_not_fit_the_head(data, model, tmp_path):
    rows = _rows()
    y = [CLASSES.index(c) for _, c, _ in rows]
    wide = tmp_path / "wide.h5"  # same provenance, other feature dimension
    _write_store(wide, "flow", [r[0] for r in rows], _features(y, 0, dim=D + 4))
    _refused("evaluate", "--model", model, "--features", wide,
             match=rf"features of dimension {D + 4} \(flow: .*wide\.h5\) do not fit the flow head of .*, "
                   rf"trained on dimension {D}")
    other = tmp_path / "rgb_as_flow.h5"  # made as another stream
    _write_store(other, "rgb", [r[0] for r in rows], _features(y, 0))
    _refused("evaluate", "--model", model, "--features", other, match=r"was not made like the features flow head")
    damaged = tmp_path / "damaged.h5"
    shutil.copy(data / "flow.h5", damaged)
    import h5py

    with h5py.File(damaged, "r+") as f:
        f.attrs["provenance"] = "{not json"
    _refused("evaluate", "--model", model, "--features", damaged, match=r"damaged\.h5: cannot read its metadata")
    with h5py.File(damaged, "r+") as f:
        del f["videos"]
    _refused("evaluate", "--model", model, "--features", damaged, match=r"dataset /videos is missing")
    cut = tmp_path / "cut.h5"
    cut.write_bytes((data / "flow.h5").read_bytes()[:2000])
    _refused("evaluate", "--model", model, "--features", cut, match=r"cut\.h5: cannot open as HDF5")


def test_demo_csv_without_class_index_names_its_classes(tmp_path):
    from flowstore.data.labels import LabelError, read_demo_labels

    path = tmp_path / "labels.csv"
    path.write_text("video_id,label,class_name,split\nv1,1,run,train\nv2,0,walk,train\nv3,1,run,test\n")
    assert read_demo_labels(path).classes == ["walk", "run"]
    path.write_text("video_id,label,class_name,split\nv1,1,run,train\nv2,1,walk,test\n")
    with pytest.raises(LabelError, match=r"labels.csv:3: label 1 is class 'walk' here but 'run' at .*labels.csv:2"):
        read_demo_labels(path)
    path.write_text("video_id,label,class_name,split\nv1,1,run,train\nv2,0,run,test\n")
    with pytest.raises(LabelError, match=r"labels.csv:3: class 'run' has label 0 here but 1 at"):
        read_demo_labels(path)
    path.write_text("video_id,label,class_name,split\nv1,2,run,train\n")  # labels 0 and 1 unnamed: no class list
    assert read_demo_labels(path).classes is None
