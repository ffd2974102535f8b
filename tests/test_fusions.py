"""The learned score fusions (flowstore/heads/learned_fusion.py) on tiny score sets whose answer is
derivable, their saved states, and their use from `train-head --fusion` / `evaluate`."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flowstore.heads.fusion import build_fusion, late_average, list_fusions, score_fusions
from flowstore.heads.learned_fusion import load_fusion_tensors, save_fusion_tensors
from flowstore.heads.modeldir import apply_fusion

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LEARNED = ["late-perclass", "logits-mlp", "token-transformer"]


def specialists(n, seed):
    """4 classes; stream A's score columns 0-1 are informative (0.6 on the true class, 0.1 else,
    + U(0, 0.05)) and its columns 2-3 are noise U(0, 1); stream B the reverse. Weights
    w_A = (1, 1, 0, 0), w_B = (0, 0, 1, 1) keep only informative columns: top-1 = 1 exactly
    (0.6 > 0.1 + 0.05). Averaging adds the noise columns: the true class wins only when
    0.6 + U beats 0.1 + U' for the three others -- 73% of the time (simulated on 4000)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    info = np.where(np.arange(4) == y[:, None], 0.6, 0.1) + rng.uniform(0, 0.05, (n, 4))
    a, b = info.copy(), info.copy()
    a[:, 2:] = rng.uniform(0, 1.0, (n, 2))
    b[:, :2] = rng.uniform(0, 1.0, (n, 2))
    return [a, b], y


def agreement(n, seed):
    """2 classes, 2 streams, each confidently picking a random class (p in U(0.6, 1) on it); the
    label is 1 when the streams disagree (XOR). Any fusion monotone-linear in the scores
    (averaging, weights, a linear SVM) separates at most 3 of the 4 quadrants (<= 75%);
    averaging gets 50%."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, 2, (2, n))
    conf = rng.uniform(0.6, 1.0, (2, n))
    probs = []
    for s in range(2):
        p = np.where(picks[s][:, None] == np.arange(2), conf[s][:, None], 1 - conf[s][:, None])
        probs.append(p)
    return probs, (picks[0] != picks[1]).astype(np.int64)


def top1(p, y):
    return float((p.argmax(1) == y).mean())


def test_the_learned_fusions_are_registered_score_fusions():
    assert set(LEARNED) <= set(list_fusions())
    assert score_fusions()[-3:] == LEARNED


def test_late_perclass_learns_which_stream_knows_which_class():
    fit, y_fit = specialists(200, 0)
    test, y_test = specialists(400, 1)
    assert top1(late_average(test), y_test) < 0.8
    fu = build_fusion("late-perclass").fit(fit, y_fit)
    w = fu.weights                                        # (stream, class)
    assert (w[0, :2] > 2 * w[1, :2]).all() and (w[1, 2:] > 2 * w[0, 2:]).all(), w
    acc = top1(fu.predict(test), y_test)
    assert acc >= 0.97 and acc > top1(late_average(test), y_test) + 0.15
    st = fu.state()
    assert np.array(st["weights"]).shape == (2, 4) and st["selected"]["l2"] in (1e-3, 1e-2, 1e-1)
    assert len(st["cv_top1"]) == 3 and "cross-validation" in st["selected_by"]
    json.dumps(st)                                         # small state: plain JSON
    np.testing.assert_allclose(apply_fusion(st, test), fu.predict(test), atol=1e-9)


@pytest.mark.parametrize("name", ["logits-mlp", "token-transformer"])
def test_a_network_fusion_fits_the_agreement_rule_averaging_cannot(name, tmp_path):
    fit, y_fit = agreement(240, 0)
    test, y_test = agreement(400, 1)
    assert top1(late_average(test), y_test) < 0.6
    perclass = build_fusion("late-perclass").fit(fit, y_fit)
    assert top1(perclass.predict(test), y_test) <= 0.8       # linear in the scores: <= 75% + noise
    fu = build_fusion(name, seed=0).fit(fit, y_fit)
    assert top1(fu.predict(test), y_test) >= 0.95
    st = fu.state()
    assert st["selected"] in [dict(h) for h in type(fu).candidates] and len(st["cv_top1"]) == len(type(fu).candidates)
    saved = save_fusion_tensors({name: st}, tmp_path)
    assert saved[name]["tensors"] == f"fusion_{name}.pt" and (tmp_path / f"fusion_{name}.pt").is_file()
    back = json.loads(json.dumps(saved))                    # what fusion.json holds
    load_fusion_tensors(back, tmp_path)
    np.testing.assert_allclose(apply_fusion(back[name], test), fu.predict(test), atol=1e-6)


def test_the_learned_fusions_are_seeded():
    fit, y_fit = agreement(30, 3)
    a = build_fusion("logits-mlp", seed=5).fit(fit, y_fit).predict(fit)
    b = build_fusion("logits-mlp", seed=5).fit(fit, y_fit).predict(fit)
    np.testing.assert_array_equal(a, b)


def test_too_few_scores_use_the_first_candidate():
    fit, y_fit = specialists(4, 0)
    st = build_fusion("late-perclass").fit(fit, y_fit).state()
    assert st["selected"] == {"l2": 1e-3} and st["selected_by"].startswith("default")


def test_weights_that_do_not_fit_the_architecture_are_an_error(tmp_path):
    from flowstore.heads.io import ModelFileError

    fit, y_fit = agreement(30, 0)
    st = build_fusion("logits-mlp", seed=0, hidden=8, weight_decay=0.0).fit(fit, y_fit).state()
    assert st["selected"] == {"hidden": 8, "weight_decay": 0.0} and st["selected_by"] == "given"
    st["selected"] = {"hidden": 16, "weight_decay": 0.0}
    with pytest.raises(ModelFileError, match="do not fit"):
        apply_fusion(st, fit)


def test_train_head_and_evaluate_use_a_learned_fusion(tmp_path):
    """Two tiny feature stores where rgb knows classes 0-1 and flow 2-3 (the other half of each
    store is noise): every learned fusion is fitted on the validation scores, its selected
    hyper-parameters are reported, its state goes through the model directory, and `evaluate`
    re-applies it to the same numbers."""
    from click.testing import CliRunner

    from flowstore.cli.main import cli
    from test_train_head import _write_store

    rng = np.random.default_rng(0)
    C, D, n = 4, 8, 40
    classes = ["a", "b", "c", "d"]
    rows = ["video_id,label,class_name,split"]
    videos, y = [], []
    for c in range(C):
        for k in range(n):
            videos.append(f"{classes[c]}/{classes[c]}_{k:03d}")
            y.append(c)
            rows.append(f"{videos[-1]},{c},{classes[c]},{'test' if k % 4 == 0 else 'train'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    y = np.array(y)
    means = rng.normal(0, 3, (C, D)).astype(np.float32)
    for stream, known in (("rgb", (0, 1)), ("flow", (2, 3))):
        centre = np.where(np.isin(y, known)[:, None], means[y], means[rng.integers(0, C, len(y))])
        feats = centre[:, None, None, :] + rng.normal(0, 1, (len(y), 1, 2, D)).astype(np.float32)
        _write_store(tmp_path / f"{stream}.h5", stream, videos, feats.astype(np.float32))
    out = tmp_path / "m"
    res = CliRunner().invoke(cli, ["train-head", "--features", str(tmp_path / "rgb.h5"), "--features",
                                   str(tmp_path / "flow.h5"), "--labels", str(tmp_path / "labels.csv"),
                                   "--fusion", "token-transformer", "--epochs", "8", "--lr", "1e-2",
                                   "--val-fraction", "0.4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["fusion"] == "token-transformer"
    for name in LEARNED:
        assert "selected" in m["per_fusion"][name], name
    doc = json.loads((out / "fusion.json").read_text())["fusions"]
    assert doc["token-transformer"]["tensors"] == "fusion_token-transformer.pt"
    assert (out / "fusion_logits-mlp.pt").is_file() and np.array(doc["late-perclass"]["weights"]).shape == (2, 4)
    res = CliRunner().invoke(cli, ["evaluate", "--model", str(out), "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev" / "m" / "metrics.json").read_text())
    assert ev["fusion"] == "token-transformer" and ev["top1"] == m["top1"]
    for name in LEARNED:
        assert ev["all"][name]["top1"] == m["per_fusion"][name]["top1"], name
