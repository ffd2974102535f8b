"""Heads on feature stores: labels, train/val/test splits, per-stream heads, fusion, model dirs.

This is the library behind ``flowstore train-head`` and ``flowstore evaluate``; the heads,
training loop, fusion arithmetic and metrics themselves live in :mod:`flowstore.heads`.

A **model directory** (written by :func:`train_model`) holds::

    config.json            arguments, streams (feature file, provenance digest), labels, splits
    head.pt / head.json    the head (one stream, or early-concat fusion), or
    head_<stream>.pt/.json one head per stream (score-level fusion)
    fusion.json            fitted parameters of every score-level fusion (>= 2 streams)
    metrics.json           see :data:`METRICS_KEYS`
    predictions.csv        per test video: label, prediction, scores (the chosen fusion)
    predictions_<stream>.csv  per stream, when there are several
    confusion.png          confusion matrix of the chosen fusion on the test videos
    curves.png / curves_<stream>.png   training curves

Score-level fusions (late-avg, late-weighted, svm) are all fitted on the validation scores
whenever there are two or more streams, so one model directory reports all of them; ``--fusion``
picks the one whose numbers are the top-level metrics.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ..errors import InputError, MissingFileError, UnknownNameError

__all__ = [
    "METRICS_KEYS", "SCORE_FUSIONS", "LabelSets", "Stream", "load_label_sets", "open_streams",
    "split_validation", "train_model", "evaluate_model", "read_model", "accuracy_table",
]

#: top-level keys of metrics.json
METRICS_KEYS = ("split", "n", "top1", "top5", "top5_k", "mean_class_accuracy", "per_class_accuracy",
                "confusion_matrix", "head", "fusion", "streams", "per_stream", "per_fusion", "val", "counts")
SCORE_FUSIONS = ("late-avg", "late-weighted", "svm")


# ------------------------------------------------------------------------------ labels

@dataclass
class LabelSets:
    """Labelled videos of each split (``{video name: label}`` in file order) and class names."""

    train: list = field(default_factory=list)       # LabelEntry
    test: list = field(default_factory=list)
    classes: list[str] | None = None
    source: dict = field(default_factory=dict)


def load_label_sets(labels, *, test_labels=None, classes=None, split: int = 1) -> LabelSets:
    """Read labels in any format :mod:`flowstore.data.labels` knows, into train and test sets.

    * a ``.csv`` file: the demo dataset's ``labels.csv`` (its ``split`` column: train/test);
    * a directory with ``classInd.txt`` and ``trainlist0N.txt``: UCF101 split ``split``;
    * a directory with ``<class>_test_splitN.txt`` files: HMDB51 split ``split``;
    * any other file: an mmaction2 list (training videos); ``test_labels`` adds the test list.

    ``classes`` (a classInd.txt path) names the classes of mmaction2 lists. ``test_labels``
    (an mmaction2 list, or a demo csv whose ``test`` rows are used) overrides the test set.
    """
    from ..data import labels as L

    path = Path(os.fspath(labels))
    source = {"labels": str(path.resolve()), "split": int(split),
              "test_labels": None if test_labels is None else str(Path(test_labels).resolve()),
              "classes": None if classes is None else str(Path(classes).resolve())}
    if path.is_dir():
        if (path / "classInd.txt").exists() and (path / f"trainlist{split:02d}.txt").exists():
            tr = L.read_ucf101(path, split, "train")
            te = L.read_ucf101(path, split, "test")
            source["format"] = "ucf101"
        elif list(path.glob(f"*_test_split{split}.txt")):
            tr = L.read_hmdb51(path, split, "train", classes)
            te = L.read_hmdb51(path, split, "test", tr.classes)
            source["format"] = "hmdb51"
        else:
            raise L.LabelError(f"{path}: a label directory must hold UCF101 (classInd.txt, trainlist{split:02d}.txt) "
                               f"or HMDB51 (<class>_test_split{split}.txt) files")
    elif path.suffix.lower() == ".csv":
        both = L.read_demo_labels(path, class_index=classes)
        tr, te = both.subset("train"), both.subset("test")
        source["format"] = "demo-csv"
    else:
        tr = L.read_mmaction_list(path, classes)
        te = L.Annotations([], tr.classes, "")
        source["format"] = "mmaction"
    if test_labels is not None:
        tp = Path(os.fspath(test_labels))
        te = (L.read_demo_labels(tp, split="test") if tp.suffix.lower() == ".csv"
              else L.read_mmaction_list(tp, classes if classes is not None else tr.classes))
    names = tr.classes or te.classes
    if names is None:
        n = 1 + max([e.label for e in list(tr) + list(te)], default=-1)
        names = [str(i) for i in range(n)]
    if not len(tr):
        raise L.LabelError(f"{path}: no training videos")
    return LabelSets(train=list(tr), test=list(te), classes=list(names), source=source)


def _resolve(entries, videos, name: str) -> tuple[list[str], np.ndarray]:
    from ..data.labels import Annotations

    if not entries:
        return [], np.zeros(0, np.int64)
    ann = Annotations(list(entries)).resolve(videos, name)
    return ann.videos, np.array([e.label for e in ann.entries], np.int64)


def video_groups(videos, pattern: str | None) -> list[str] | None:
    """Group key of every video id: the regex ``pattern``'s first group (or whole match) when it
    matches, else the id itself. Videos of one group never end up on both sides of a split
    (e.g. ``_g(\\d+)_`` for UCF101's groups, ``_(\\d+)$`` for the demo's paired appearances)."""
    if not pattern:
        return None
    import re

    rx = re.compile(pattern)
    out = []
    for v in videos:
        m = rx.search(v)
        out.append(v if m is None else (m.group(1) if rx.groups else m.group(0)))
    return out


def stratified_folds(labels: np.ndarray, k: int, seed: int, groups=None) -> np.ndarray:
    """Fold number (0..k-1) of every sample. Without ``groups``: each class is shuffled with
    ``seed`` and dealt round-robin, so every fold holds about 1/k of every class. With
    ``groups``: whole groups are shuffled and dealt round-robin."""
    labels = np.asarray(labels)
    rng = np.random.default_rng([int(seed), 0xF01D])
    folds = np.empty(len(labels), np.int64)
    if groups is not None:
        keys = sorted(set(groups))
        if len(keys) < k:
            raise InputError(f"{len(keys)} video groups cannot fill {k} folds")
        fold_of = {g: i % k for i, g in enumerate(keys[j] for j in rng.permutation(len(keys)))}
        return np.array([fold_of[g] for g in groups], np.int64)
    offset = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        folds[idx] = (np.arange(len(idx)) + offset) % k
        offset += len(idx)
    return folds


def split_validation(labels: np.ndarray, fraction: float, seed: int, groups=None) -> tuple[np.ndarray, np.ndarray]:
    """``(train_index, val_index)``. Without ``groups``: stratified, ``round(fraction * n_c)``
    videos of each class (at least one when the class has two or more) go to validation.
    With ``groups``: ``round(fraction * n_groups)`` whole groups (at least one) do."""
    labels = np.asarray(labels)
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([int(seed), 0x7A1])
    val = []
    if fraction > 0 and groups is not None:
        keys = sorted(set(groups))
        if len(keys) >= 2:
            k = min(max(int(np.floor(fraction * len(keys) + 0.5)), 1), len(keys) - 1)
            chosen = {keys[j] for j in rng.permutation(len(keys))[:k]}
            val = [i for i, g in enumerate(groups) if g in chosen]
    elif fraction > 0:
        for c in np.unique(labels):
            idx = np.flatnonzero(labels == c)
            k = int(np.floor(fraction * len(idx) + 0.5))
            if len(idx) >= 2:
                k = min(max(k, 1), len(idx) - 1)
            else:
                k = 0
            val.extend(rng.permutation(idx)[:k].tolist())
    val = np.array(sorted(val), np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val


# ------------------------------------------------------------------------------ streams

@dataclass
class Stream:
    name: str
    path: str
    provenance: dict
    store: object  # FeatureStore

    def digest(self) -> dict:
        """What a head trained on this stream depends on (checked again at evaluation)."""
        from .store import settings_of

        return settings_of(self.provenance)


def open_streams(paths, names=None) -> list[Stream]:
    """Open feature stores; stream names come from their provenance (``rgb``, ``flow``),
    made unique with ``_2``, ``_3`` ... unless ``names`` are given."""
    from .store import open_features

    paths = [str(p) for p in paths]
    if not paths:
        raise InputError("give at least one --features file")
    if names and len(names) != len(paths):
        raise InputError(f"{len(names)} --name value(s) for {len(paths)} --features file(s)")
    out, seen = [], {}
    for i, p in enumerate(paths):
        fs = open_features(p)
        prov = fs.provenance
        if names:
            name = names[i]
        else:
            base = str(prov.get("stream") or f"stream{i}")
            seen[base] = seen.get(base, 0) + 1
            name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        out.append(Stream(name=name, path=str(Path(p).resolve()), provenance=prov, store=fs))
    if len({s.name for s in out}) != len(out):
        raise InputError(f"stream names must differ, got {[s.name for s in out]}")
    return out


def _features(stream: Stream, videos: list[str], views: int | None = None) -> np.ndarray:
    x = stream.store.features(videos)
    if views is not None:
        if not 1 <= views <= x.shape[1]:
            raise InputError(f"--views {views}: {stream.name} features have {x.shape[1]} view(s)")
        x = x[:, :views]
    return x.astype(np.float32, copy=False)


# ------------------------------------------------------------------------------ fusion state

def apply_fusion(state: dict, probs: list[np.ndarray]) -> np.ndarray:
    """Fused scores from a fusion's saved ``state`` (see :meth:`flowstore.heads.fusion._Fusion.state`)."""
    from ..heads.fusion import SVMFusion, late_average, late_weighted

    name = state["name"]
    if name == "late-avg":
        return late_average(probs)
    if name == "late-weighted":
        return late_weighted(probs, state["weights"])
    if name == "svm":
        x = SVMFusion.stack(probs)
        coef = np.asarray(state["coef"], np.float64)
        d = x @ coef.T + np.asarray(state["intercept"], np.float64)
        if coef.shape[0] == 1:  # binary LinearSVC: margin of classes_[1]
            d = np.concatenate([-d, d], axis=1)
        c = probs[0].shape[1]
        full = np.full((x.shape[0], c), -np.inf)
        full[:, np.asarray(state["classes"], np.int64)] = d
        full -= full.max(axis=1, keepdims=True)
        e = np.exp(full)
        return e / e.sum(axis=1, keepdims=True)
    if name in ("none", "early-concat"):
        return probs[0]
    raise InputError(f"unknown fusion {name!r}")


def _short_metrics(m: dict) -> dict:
    return {k: m[k] for k in ("n", "top1", "top5", "top5_k", "mean_class_accuracy")}


# ------------------------------------------------------------------------------ training

@dataclass
class TrainArgs:
    head: str = "linear"
    fusion: str = "none"
    head_kwargs: dict = field(default_factory=dict)
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    class_weighted: bool = False
    schedule: str = "cosine"
    cycle_epochs: int = 4
    early_stopping: int | None = None
    monitor: str = "val_loss"
    seed: int = 0
    l2_normalize: bool = True
    train_views: str = "random"
    val_fraction: float = 0.2
    fusion_folds: int = 0
    group_pattern: str | None = None
    svm_c: float = 1.0
    device: str = "cpu"


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def train_model(streams: list[Stream], label_sets: LabelSets, out, args: TrainArgs, *, log=print) -> dict:
    """Train the head(s), fit the fusion(s), evaluate on the test videos and write ``out``.

    Returns the metrics dict (also written to ``out/metrics.json``)."""
    from ..heads.evaluate import metrics, predict_scores, write_predictions_csv
    from ..heads.fusion import FUSIONS, build_fusion
    from ..heads.io import save_head
    from ..heads.plots import plot_confusion, plot_curves
    from ..heads.train import train_head

    if args.fusion not in FUSIONS:
        raise InputError(f"unknown fusion {args.fusion!r}; choose from {sorted(FUSIONS)}")
    if args.fusion == "none" and len(streams) != 1:
        raise InputError(f"--fusion none takes exactly one --features file, got {len(streams)}; "
                         f"choose a fusion: {', '.join(n for n in FUSIONS if n != 'none')}")
    if args.fusion != "none" and len(streams) < 2:
        raise InputError(f"--fusion {args.fusion} needs two or more --features files (e.g. rgb and flow)")
    out = Path(os.fspath(out))
    out.mkdir(parents=True, exist_ok=True)
    classes = label_sets.classes
    ref = streams[0]
    ids = ref.store.videos
    vids_all, y_all = _resolve(label_sets.train, ids, f"feature store {ref.path}")
    test_vids, y_test = _resolve(label_sets.test, ids, f"feature store {ref.path}")
    for s in streams[1:]:
        have = set(s.store.videos)
        missing = [v for v in vids_all + test_vids if v not in have]
        if missing:
            raise UnknownNameError(f"{len(missing)} labelled video(s) are not in {s.path} (stream {s.name}), "
                           f"e.g. {missing[:3]}")
    if len(classes) < int(max(y_all.max(initial=0), y_test.max(initial=0))) + 1:
        raise InputError("labels exceed the number of classes")
    groups = video_groups(vids_all, args.group_pattern)
    tr_idx, val_idx = split_validation(y_all, args.val_fraction, args.seed, groups)
    train_vids = [vids_all[i] for i in tr_idx]
    val_vids = [vids_all[i] for i in val_idx]
    y_tr, y_val = y_all[tr_idx], y_all[val_idx]
    has_val, has_test = len(val_vids) > 0, len(test_vids) > 0
    if not has_val and args.early_stopping:
        raise InputError("--early-stopping needs a validation split (--val-fraction > 0)")
    eval_name = "test" if has_test else ("val" if has_val else "train")
    log(f"train-head: {len(train_vids)} train, {len(val_vids)} val, {len(test_vids)} test videos; "
        f"{len(classes)} classes; streams {[s.name for s in streams]}")

    train_kw = dict(head=args.head, head_kwargs=dict(args.head_kwargs), num_classes=len(classes), epochs=args.epochs,
                    lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
                    class_weighted=args.class_weighted, schedule=args.schedule, cycle_epochs=args.cycle_epochs,
                    early_stopping_patience=args.early_stopping, monitor=args.monitor, seed=args.seed,
                    l2_normalize=args.l2_normalize, train_views=args.train_views, device=args.device)

    def fit_one(name, x_tr, x_val, y=None, quiet=False):
        res = train_head(x_tr, y_tr if y is None else y, val_feats=x_val if has_val else None,
                         val_labels=y_val if has_val else None, **train_kw)
        val_acc = res.history["val_acc"][res.best_epoch - 1] if has_val else None
        if not quiet:
            log(f"train-head: [{name}] best epoch {res.best_epoch}/{len(res.history['epoch'])}"
                + (f", val top-1 {val_acc:.3f}" if val_acc is not None else ""))
        return res

    def out_of_fold(name, x_tr, x_val):
        """Scores of every training video from a head trained without its fold."""
        folds = stratified_folds(y_tr, args.fusion_folds, args.seed,
                                 None if groups is None else [groups[i] for i in tr_idx])
        oof = np.zeros((len(y_tr), len(classes)), np.float32)
        for k in range(args.fusion_folds):
            held = folds == k
            res = fit_one(f"{name} fold {k}", x_tr[~held], x_val, y=y_tr[~held], quiet=True)
            oof[held] = scores(res.model, x_tr[held])
        log(f"train-head: [{name}] {args.fusion_folds}-fold out-of-fold top-1 {(oof.argmax(1) == y_tr).mean():.3f}")
        return oof

    def scores(model, x):
        return predict_scores(model, x, device=args.device) if len(x) else np.zeros((0, len(classes)), np.float32)

    use_folds = args.fusion_folds > 0 and len(streams) > 1 and args.fusion != "early-concat"
    if args.fusion_folds == 1 or args.fusion_folds < 0:
        raise InputError("--fusion-folds must be 0 (fit fusions on the validation split) or >= 2")
    if use_folds and groups is None and min(np.bincount(y_tr)[np.unique(y_tr)]) < args.fusion_folds:
        raise InputError(f"--fusion-folds {args.fusion_folds}: some class has fewer training videos than folds")
    heads, per_stream = {}, {}
    val_scores, test_scores, oof_scores = {}, {}, {}
    if args.fusion == "early-concat":
        fusion = build_fusion("early-concat")
        parts = [(_features(s, train_vids), _features(s, val_vids), _features(s, test_vids)) for s in streams]
        shapes = {p[0].shape[1:3] for p in parts}
        if len(shapes) != 1:
            raise InputError(f"early-concat needs the same views and segments in every stream, got "
                             f"{[p[0].shape[1:3] for p in parts]}")
        xs = [fusion.combine_features([p[i] for p in parts]) for i in range(3)]
        res = fit_one("early-concat", xs[0], xs[1])
        heads["head"] = res
        val_scores["head"], test_scores["head"] = scores(res.model, xs[1]), scores(res.model, xs[2])
        final_val, final_test = val_scores["head"], test_scores["head"]
        fusion_states = {}
    else:
        for s in streams:
            x_tr, x_val, x_te = (_features(s, v) for v in (train_vids, val_vids, test_vids))
            res = fit_one(s.name, x_tr, x_val)
            if use_folds:
                oof_scores[s.name] = out_of_fold(s.name, x_tr, x_val)
            key = "head" if len(streams) == 1 else f"head_{s.name}"
            heads[key] = res
            val_scores[s.name], test_scores[s.name] = scores(res.model, x_val), scores(res.model, x_te)
            if len(streams) > 1 and has_test:
                per_stream[s.name] = _short_metrics(metrics(test_scores[s.name], y_test, classes))
                per_stream[s.name]["best_epoch"] = res.best_epoch
        fusion_states = {}
        if len(streams) > 1:
            vlist = [val_scores[s.name] for s in streams]
            tlist = [test_scores[s.name] for s in streams]
            fit_on, y_fit = "val", y_val
            if use_folds:
                fit_on, y_fit = f"{args.fusion_folds}-fold out-of-fold scores of the training videos", y_tr
                vlist = [oof_scores[s.name] for s in streams]
            elif not has_val:
                log("train-head: warning: no validation split; fusions are fitted on training scores "
                    "(over-confident); use --fusion-folds or --val-fraction")
                fit_on, y_fit = "train", y_tr
                vlist = [scores(heads[f"head_{s.name}"].model, _features(s, train_vids)) for s in streams]
            for name in SCORE_FUSIONS:
                kw = {"C": args.svm_c, "seed": args.seed} if name == "svm" else {}
                fu = build_fusion(name, **kw)
                try:
                    fu.fit(vlist, y_fit)
                except ValueError as exc:
                    log(f"train-head: warning: fusion {name} cannot be fitted ({exc}); skipped")
                    continue
                fusion_states[name] = fu.state() | {"fitted_on": fit_on}
            if args.fusion not in fusion_states:
                raise InputError(f"fusion {args.fusion} could not be fitted")
            final_val = apply_fusion(fusion_states[args.fusion], [val_scores[s.name] for s in streams]) \
                if has_val else None
            final_test = apply_fusion(fusion_states[args.fusion], tlist) if has_test else None
        else:
            final_val, final_test = val_scores[streams[0].name], test_scores[streams[0].name]

    # --- metrics ---------------------------------------------------------------------------
    if has_test:
        eval_vids, y_eval, s_eval = test_vids, y_test, final_test
    elif has_val:
        eval_vids, y_eval, s_eval = val_vids, y_val, final_val
    else:
        eval_vids, y_eval = train_vids, y_tr
        s_eval = (scores(heads["head"].model, _features(streams[0], train_vids)) if len(heads) == 1 else None)
        if s_eval is None:
            raise InputError("nothing to evaluate on: give test labels or a validation fraction")
    m = metrics(s_eval, y_eval, classes)
    per_fusion = {}
    if fusion_states and has_test:
        tlist = [test_scores[s.name] for s in streams]
        for name, st in fusion_states.items():
            per_fusion[name] = _short_metrics(metrics(apply_fusion(st, tlist), y_test, classes))
            if name == "late-weighted":
                per_fusion[name]["weights"] = dict(zip([s.name for s in streams], st["weights"]))
    result = {
        "split": eval_name,
        **m,
        "head": args.head,
        "fusion": args.fusion,
        "streams": [s.name for s in streams],
        "per_stream": per_stream,
        "per_fusion": per_fusion,
        "val": _short_metrics(metrics(final_val, y_val, classes)) if has_val and final_val is not None else None,
        "counts": {"train": len(train_vids), "val": len(val_vids), "test": len(test_vids)},
    }

    # --- files -----------------------------------------------------------------------------
    stream_info = [{"name": s.name, "features": s.path, "settings": s.digest(),
                    "store_manifest_sha256": (s.provenance.get("store") or {}).get("manifest_sha256"),
                    "head": (f"head_{s.name}" if len(heads) > 1 else "head")} for s in streams]
    config = {
        "format": "flowstore-train-head", "version": 1,
        "head": args.head, "fusion": args.fusion, "classes": classes, "streams": stream_info,
        "labels": label_sets.source, "train_args": {k: v for k, v in vars(args).items()},
        "training": {k: r.config | {"best_epoch": r.best_epoch, "stopped_early": r.stopped_early,
                                    "class_weights": r.class_weights} for k, r in heads.items()},
        "splits": {"train": train_vids, "val": val_vids, "test": test_vids},
    }
    for key, res in heads.items():
        save_head(res.model, out / key, extra={"classes": classes, "training": res.config,
                                               "best_epoch": res.best_epoch})
        title = f"{key.replace('head_', '').replace('head', args.head)} head"
        plot_curves(res.history, out / ("curves.png" if key == "head" else f"curves_{key[5:]}.png"),
                    best_epoch=res.best_epoch, title=title)
    if fusion_states:
        _write_json(out / "fusion.json", {"chosen": args.fusion, "streams": [s.name for s in streams],
                                          "fusions": fusion_states})
    _write_json(out / "config.json", config)
    _write_json(out / "metrics.json", result)
    write_predictions_csv(out / "predictions.csv", eval_vids, s_eval, y_eval, classes)
    if len(streams) > 1 and args.fusion != "early-concat" and has_test:
        for s in streams:
            write_predictions_csv(out / f"predictions_{s.name}.csv", test_vids, test_scores[s.name], y_test, classes)
    label = args.fusion if args.fusion != "none" else streams[0].name
    plot_confusion(m["confusion_matrix"], classes, out / "confusion.png",
                   title=f"{label} ({args.head}) on {eval_name}: top-1 {m['top1']:.1%} (n={m['n']})")
    return result


# ------------------------------------------------------------------------------ evaluation

def read_model(model_dir) -> dict:
    model_dir = Path(os.fspath(model_dir))
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise MissingFileError(f"{model_dir} is not a train-head output directory (no config.json)")
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if cfg.get("format") != "flowstore-train-head":
        raise InputError(f"{cfg_path} is not a flowstore train-head config")
    fusion_path = model_dir / "fusion.json"
    cfg["_fusion"] = json.loads(fusion_path.read_text(encoding="utf-8")) if fusion_path.exists() else None
    cfg["_dir"] = str(model_dir)
    return cfg


def evaluate_model(model_dir, *, features=None, label_sets: LabelSets | None = None, subset: str = "test",
                   views: int | None = None, out=None, allow_mismatch: bool = False, device: str = "cpu",
                   log=print) -> dict:
    """Score videos with a trained model directory: multi-view testing (softmax averaged over
    views; segments are combined by the head), then every fusion the model has.

    ``features`` overrides the feature files recorded in the model (same stream order).
    ``label_sets`` defaults to the labels recorded at training; ``subset`` is ``test``,
    ``val`` (the recorded validation videos), ``train`` or ``all`` (train + test).
    Returns ``{"model", "subset", "views", "rows": [...], "metrics": {...}}``; with ``out``
    writes metrics.json, predictions.csv and confusion.png there.
    """
    from ..heads.evaluate import metrics, predict_scores, write_predictions_csv
    from ..heads.io import load_head
    from ..heads.plots import plot_confusion

    cfg = read_model(model_dir)
    model_dir = Path(cfg["_dir"])
    classes = cfg["classes"]
    recorded = cfg["streams"]
    paths = list(features) if features else [s["features"] for s in recorded]
    if len(paths) != len(recorded):
        raise InputError(f"{model_dir} was trained on {len(recorded)} stream(s); got {len(paths)} --features")
    streams = open_streams(paths, names=[s["name"] for s in recorded])
    try:
        for s, rec in zip(streams, recorded):
            if s.digest() != rec["settings"] and not allow_mismatch:
                from .store import _diff

                raise InputError(f"{s.path} was not made like the features {rec['name']} head was trained on "
                                 "(pass --allow-mismatch to evaluate anyway):\n  "
                                 + "\n  ".join(_diff(rec["settings"], s.digest())))
        if label_sets is None:
            src = cfg["labels"]
            label_sets = load_label_sets(src["labels"], test_labels=src.get("test_labels"),
                                         classes=src.get("classes"), split=src.get("split", 1))
        ids = streams[0].store.videos
        if subset == "val":
            wanted = set(cfg["splits"]["val"])
            if not wanted:
                raise InputError(f"{model_dir} was trained without a validation split")
            names_all, y_all = _resolve(label_sets.train, ids, streams[0].path)
            keep = [i for i, v in enumerate(names_all) if v in wanted]
            names, y = [names_all[i] for i in keep], y_all[keep]
        else:
            entries = {"test": label_sets.test, "train": label_sets.train,
                       "all": list(label_sets.train) + list(label_sets.test)}.get(subset)
            if entries is None:
                raise InputError(f"unknown subset {subset!r}; choose test, val, train or all")
            if not entries:
                raise InputError(f"no {subset} videos in the labels")
            names, y = _resolve(entries, ids, streams[0].path)
        fusion = cfg["fusion"]
        if fusion == "early-concat":
            from ..heads.fusion import early_concat

            x = early_concat([_features(s, names, views) for s in streams])
            probs = {"head": predict_scores(load_head(model_dir / "head"), x, device=device)}
            stream_probs = []
        else:
            stream_probs = []
            for s, rec in zip(streams, recorded):
                head = load_head(model_dir / rec["head"])
                stream_probs.append(predict_scores(head, _features(s, names, views), device=device))
            probs = {}
        n_views = _features(streams[0], names[:1], views).shape[1] if names else 0
        rows, all_metrics = [], {}
        label = Path(model_dir).name
        if fusion == "early-concat":
            final = probs["head"]
            m = metrics(final, y, classes)
            all_metrics["early-concat"] = m
            rows.append(_row(label, "+".join(s.name for s in streams), cfg["head"], "early-concat", m, n_views, True))
        elif len(streams) == 1:
            final = stream_probs[0]
            m = metrics(final, y, classes)
            all_metrics[streams[0].name] = m
            rows.append(_row(label, streams[0].name, cfg["head"], "none", m, n_views, True))
        else:
            fstates = (cfg["_fusion"] or {}).get("fusions", {})
            for name, st in fstates.items():
                m_f = metrics(apply_fusion(st, stream_probs), y, classes)
                all_metrics[name] = m_f
                rows.append(_row(label, "+".join(s.name for s in streams), cfg["head"], name, m_f, n_views,
                                 name == fusion, weights=st.get("weights")))
            final = apply_fusion(fstates[fusion], stream_probs)
            m = all_metrics[fusion]
            for s, p in zip(streams, stream_probs):
                all_metrics[f"stream:{s.name}"] = metrics(p, y, classes)
        result = {"model": str(model_dir), "subset": subset, "views": n_views, "fusion": fusion,
                  "n": len(names), **{k: m[k] for k in ("top1", "top5", "top5_k", "mean_class_accuracy",
                                                       "per_class_accuracy", "confusion_matrix")},
                  "all": {k: _short_metrics(v) for k, v in all_metrics.items()}, "rows": rows}
        if out is not None:
            out = Path(os.fspath(out))
            out.mkdir(parents=True, exist_ok=True)
            _write_json(out / "metrics.json", {k: v for k, v in result.items() if k != "rows"})
            write_predictions_csv(out / "predictions.csv", names, final, y, classes)
            plot_confusion(m["confusion_matrix"], classes, out / "confusion.png",
                           title=f"{label}: {fusion if fusion != 'none' else streams[0].name} on {subset}, "
                                 f"{n_views} view(s): top-1 {m['top1']:.1%} (n={m['n']})")
        return result
    finally:
        for s in streams:
            s.store.close()


def _row(model, streams, head, fusion, m, views, chosen, weights=None) -> dict:
    return {"model": model, "streams": streams, "head": head, "fusion": fusion, "views": views,
            "n": m["n"], "top1": m["top1"], "top5": m["top5"], "mean_class_accuracy": m["mean_class_accuracy"],
            "chosen": bool(chosen), "weights": weights}


def accuracy_table(rows: list[dict]) -> str:
    """A markdown table of evaluation rows."""
    lines = ["| model | streams | head | fusion | views | top-1 | top-5 | mean class acc. | n |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        fusion = r["fusion"] + (" *" if r["chosen"] and r["fusion"] not in ("none",) else "")
        if r.get("weights") is not None:
            fusion += " (w = " + ", ".join(f"{w:.2f}" for w in r["weights"]) + ")"
        lines.append(f"| {r['model']} | {r['streams']} | {r['head']} | {fusion} | {r['views']} | "
                     f"{r['top1']:.1%} | {r['top5']:.1%} | {r['mean_class_accuracy']:.1%} | {r['n']} |")
    return "\n".join(lines)
