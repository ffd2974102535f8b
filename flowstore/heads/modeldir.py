"""Model directories: train heads on feature stores into one (:func:`train_model`, behind
``flowstore train-head``); :mod:`.modeleval` scores videos with it (``flowstore evaluate``).
The heads, training loop, fusion arithmetic and metrics themselves live in the other
:mod:`flowstore.heads` modules; which videos go where in :mod:`.splits`.

A **model directory** (written by :func:`train_model`) holds::

    config.json            arguments, streams (feature file, provenance digest), labels, splits
    head.pt / head.json    the head (one stream, or early-concat fusion), or
    head_<stream>.pt/.json one head per stream (score-level fusion)
    fusion.json            fitted parameters of every score-level fusion (>= 2 streams)
    fusion_<name>.pt       weights of a learned fusion (logits-mlp, token-transformer, mid-conv)
    metrics.json           see :data:`METRICS_KEYS`
    predictions.csv        per test video: label, prediction, scores (the chosen fusion)
    predictions_<stream>.csv  per stream, when there are several
    confusion.png          confusion matrix of the chosen fusion on the test videos
    curves.png / curves_<stream>.png   training curves

Score-level fusions (late-avg, late-weighted, svm) are all fitted on the validation scores
whenever there are two or more streams, so one model directory reports all of them; ``--fusion``
picks the one whose numbers are the top-level metrics.
``--fusion mid-conv`` (map stores) trains one network on the streams' maps instead of
per-stream heads (:mod:`.midconv`); ``--head multitask`` with several datasets is
:mod:`.multitask_model`; ``init_from`` (``--init-from``) starts the head from another model's
(:mod:`.finetune`) and is recorded in config.json and metrics.json.

Training runs in four steps, each a function: :func:`split_videos` (train / val / test),
:func:`fit_heads` (a head per stream, or one on early-concatenated features),
:func:`fuse_scores` (every score-level fusion, fitted on held-out scores) and
:func:`report` (metrics, then the files above).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError, UnknownNameError
from .splits import (LabelSets, missing_classes, resolve_labels, split_validation, stratified_folds,
                     video_groups)
from .streams import Stream, stream_features
from ..io import atomic_write_text

__all__ = [
    "METRICS_KEYS", "FittedHeads", "Fused", "TrainArgs", "VideoSplits", "apply_fusion",
    "fit_heads", "fuse_scores", "report", "short_metrics", "split_videos", "train_model", "write_json",
]

#: top-level keys of metrics.json
METRICS_KEYS = ("split", "n", "top1", "top5", "top5_k", "mean_class_accuracy", "per_class_accuracy",
                "confusion_matrix", "head", "fusion", "streams", "per_stream", "per_fusion", "val", "counts")


# ------------------------------------------------------------------------------ fusion state

def apply_fusion(state: dict, probs: list[np.ndarray]) -> np.ndarray:
    """Fused scores from a fusion's saved ``state`` (see :meth:`flowstore.heads.fusion._Fusion.state`)."""
    from .fusion import SVMFusion, late_average, late_weighted

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
    from .fusion import FUSIONS, fusion_class

    if name in FUSIONS and hasattr(fusion_class(name), "from_state"):  # learned fusions (learned_fusion.py)
        return fusion_class(name).from_state(state).predict(probs)
    raise InputError(f"unknown fusion {name!r}")


def short_metrics(m: dict) -> dict:
    """The headline numbers of a :func:`~flowstore.heads.evaluate.metrics` dict."""
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
    allow_overlap: bool = False
    init_from: str | None = None   # fine-tuning: a model directory whose head to start from


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON atomically (a temporary file renamed over ``path``)."""
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False) + "\n")


@dataclass
class VideoSplits:
    """The labelled videos of a training run: train, val (held out of the training labels) and
    test ids with their labels, the class names, and the group key of every training video
    (``--group-pattern``; None without)."""

    classes: list[str]
    train: list[str]
    val: list[str]
    test: list[str]
    y_train: np.ndarray
    y_val: np.ndarray
    y_test: np.ndarray
    train_groups: list[str] | None

    @property
    def has_val(self) -> bool:
        return len(self.val) > 0

    @property
    def has_test(self) -> bool:
        return len(self.test) > 0

    @property
    def evaluated_on(self) -> str:
        """The split the top-level metrics are on: test, else val, else train."""
        return "test" if self.has_test else ("val" if self.has_val else "train")


def _check_fusion_arg(streams: list[Stream], fusion: str) -> None:
    from .fusion import FUSIONS

    FUSIONS.check(fusion)
    if fusion == "none" and len(streams) != 1:
        raise InputError(f"--fusion none takes exactly one --features file, got {len(streams)}; "
                         f"choose a fusion: {', '.join(n for n in FUSIONS if n != 'none')}")
    if fusion != "none" and len(streams) < 2:
        raise InputError(f"--fusion {fusion} needs two or more --features files (e.g. rgb and flow)")


def split_videos(streams: list[Stream], label_sets: LabelSets, args: TrainArgs, *, log=print) -> VideoSplits:
    """Match the labels against the streams' videos and hold a validation split out of the
    training videos (stratified, or by video group)."""
    classes = label_sets.classes
    ref = streams[0]
    ids = ref.store.videos
    vids_all, y_all = resolve_labels(label_sets.train, ids, f"feature store {ref.path}")
    test_vids, y_test = resolve_labels(label_sets.test, ids, f"feature store {ref.path}")
    for s in streams[1:]:
        have = set(s.store.videos)
        missing = [v for v in vids_all + test_vids if v not in have]
        if missing:
            raise UnknownNameError(f"{len(missing)} labelled video(s) are not in {s.path} (stream {s.name}), "
                           f"e.g. {missing[:3]}")
    if len(classes) < int(max(y_all.max(initial=0), y_test.max(initial=0))) + 1:
        raise InputError("labels exceed the number of classes")
    _check_overlap(vids_all, test_vids, args.allow_overlap, log)
    groups = video_groups(vids_all, args.group_pattern)
    tr_idx, val_idx = split_validation(y_all, args.val_fraction, args.seed, groups)
    splits = VideoSplits(classes=classes, train=[vids_all[i] for i in tr_idx], val=[vids_all[i] for i in val_idx],
                         test=test_vids, y_train=y_all[tr_idx], y_val=y_all[val_idx], y_test=y_test,
                         train_groups=None if groups is None else [groups[i] for i in tr_idx])
    if not splits.has_val and args.early_stopping:
        raise InputError("--early-stopping needs a validation split (--val-fraction > 0)")
    _check_splits(splits, args, log)
    log(f"train-head: {len(splits.train)} train, {len(splits.val)} val, {len(splits.test)} test videos; "
        f"{len(classes)} classes; streams {[s.name for s in streams]}")
    return splits


def overlap_message(first: str, first_ids, second: str, second_ids) -> str | None:
    """What to say about the videos of ``first_ids`` that are also in ``second_ids`` (None: none are)."""
    seen = set(second_ids)
    both = sorted({v for v in first_ids if v in seen})
    if not both:
        return None
    return (f"{len(both)} video(s) are in both the {first} and the {second} split, e.g. {both[:3]}: "
            "their accuracy measures memory, not generalisation")


def _check_overlap(train_ids, test_ids, allowed: bool, log) -> None:
    """A video in both the training and the test labels is an error unless ``--allow-overlap``."""
    msg = overlap_message("training", train_ids, "test", test_ids)
    if msg is None:
        return
    if not allowed:
        raise InputError(f"{msg}; fix the label files or pass --allow-overlap")
    log(f"train-head: warning: {msg} (--allow-overlap)")


def _names(classes: list[str], k: int = 5) -> str:
    """The first ``k`` class names (a list), and how many more there are."""
    return f"{classes[:k]}" + (f" and {len(classes) - k} more" if len(classes) > k else "")


def _check_splits(splits: VideoSplits, args: TrainArgs, log) -> None:
    """Report every split that came out empty or without some class.

    * train empty: an error (there is nothing to fit). Train without a class that the val or
      test split holds: an error -- the head can never predict a class it never saw, so every
      such video counts as wrong and the reported accuracy measures the split, not the head.
      A class with no labelled video anywhere (a class list longer than the labels): a
      warning -- the head outputs it untrained, but no reported number depends on it.
    * val empty although --val-fraction asked for one: a warning -- training goes on without
      (last epoch, fusions fitted as without validation), which is what the messages say.
      Val without some class: a warning -- the best epoch and the fusions are chosen without it.
    * test empty: a warning -- the metrics are then on val (or train), and metrics.json and
      the result line name that split, so the number is not silently wrong. Test without some
      class: a warning -- its per-class accuracy is None and the mean class accuracy leaves it out.
    """
    classes = splits.classes
    if not len(splits.train):
        raise InputError("the training split is empty: no labelled training video is left after the validation split")
    absent = missing_classes(splits.y_train, classes)
    if absent:
        held = set(splits.y_val.tolist()) | set(splits.y_test.tolist())
        needed = [c for c in absent if classes.index(c) in held]
        if needed:
            raise InputError(f"the training split has no videos of class(es) {_names(needed)}, which the val or test "
                             "split holds: the head cannot learn them (check the labels, --val-fraction or "
                             "--group-pattern)")
        log(f"train-head: warning: class(es) {_names(absent)} have no labelled "
            f"videos ({len(absent)} of {len(classes)} classes): the head outputs them but never learns them")
    for name, y in (("validation", splits.y_val), ("test", splits.y_test)):
        if not len(y):
            continue
        lack = [c for c in missing_classes(y, classes) if c not in absent]
        if lack:
            log(f"train-head: warning: the {name} split has no videos of class(es) {_names(lack)} "
                f"({len(lack)} of {len(classes)})")
    if args.val_fraction > 0 and not splits.has_val:
        log(f"train-head: warning: --val-fraction {args.val_fraction} left the validation split empty "
            "(every class has fewer than 2 videos, or there is one video group); training without one")
    if not splits.has_test:
        where = "validation" if splits.has_val else "TRAINING (optimistic)"
        log(f"train-head: warning: the test split is empty: the metrics are on the {where} videos")


class _HeadTrainer:
    """Trains heads with ``args`` on the training videos of ``splits`` (validated on its val
    videos), and scores videos with them."""

    def __init__(self, splits: VideoSplits, args: TrainArgs, log):
        self.splits, self.args, self.log = splits, args, log
        self.train_kw = dict(
            head=args.head, head_kwargs=dict(args.head_kwargs), num_classes=len(splits.classes), epochs=args.epochs,
            lr=args.lr, weight_decay=args.weight_decay, batch_size=args.batch_size,
            class_weighted=args.class_weighted, schedule=args.schedule, cycle_epochs=args.cycle_epochs,
            early_stopping_patience=args.early_stopping, monitor=args.monitor, seed=args.seed,
            l2_normalize=args.l2_normalize, train_views=args.train_views, device=args.device)

    def fit(self, name, x_tr, x_val, y=None, quiet=False):
        from .train import train_head

        sp = self.splits
        res = train_head(x_tr, sp.y_train if y is None else y, val_feats=x_val if sp.has_val else None,
                         val_labels=sp.y_val if sp.has_val else None, **self.train_kw)
        val_acc = res.history["val_acc"][res.best_epoch - 1] if sp.has_val else None
        if not quiet:
            self.log(f"train-head: [{name}] best epoch {res.best_epoch}/{len(res.history['epoch'])}"
                     + (f", val top-1 {val_acc:.3f}" if val_acc is not None else ""))
        return res

    def folds(self) -> np.ndarray:
        """The fold of every training video (``--fusion-folds``), checked once: an empty fold is an
        error; a fold without some class, or whose complement (what its head is trained on) lacks
        one, is a warning -- the out-of-fold scores of those videos are weaker guesses, but every
        video still gets one, so the fusion fitted on them is not meaningless."""
        if getattr(self, "_folds", None) is not None:
            return self._folds
        args, sp = self.args, self.splits
        folds = stratified_folds(sp.y_train, args.fusion_folds, args.seed, sp.train_groups)
        untrained = set(missing_classes(sp.y_train, sp.classes))  # reported by _check_splits already
        for k in range(args.fusion_folds):
            held = folds == k
            if not held.any():
                raise InputError(f"--fusion-folds {args.fusion_folds}: fold {k} is empty")
            notes = []
            unseen = [c for c in missing_classes(sp.y_train[~held], sp.classes) if c not in untrained]
            if unseen:
                notes.append(f"its head never sees class(es) {_names(unseen)}")
            lack = [c for c in missing_classes(sp.y_train[held], sp.classes) if c not in untrained]
            if lack:
                notes.append(f"it holds no videos of class(es) {_names(lack)}")
            if notes:
                self.log(f"train-head: warning: fold {k} of {args.fusion_folds}: " + "; ".join(notes))
        self._folds = folds
        return folds

    def out_of_fold(self, name, x_tr, x_val) -> np.ndarray:
        """Scores of every training video from a head trained without its fold."""
        args, y_tr = self.args, self.splits.y_train
        folds = self.folds()
        oof = np.zeros((len(y_tr), len(self.splits.classes)), np.float32)
        for k in range(args.fusion_folds):
            held = folds == k
            res = self.fit(f"{name} fold {k}", x_tr[~held], x_val, y=y_tr[~held], quiet=True)
            oof[held] = self.scores(res.model, x_tr[held])
        self.log(f"train-head: [{name}] {args.fusion_folds}-fold out-of-fold top-1 {(oof.argmax(1) == y_tr).mean():.3f}")
        return oof

    def scores(self, model, x) -> np.ndarray:
        from .evaluate import predict_scores

        if not len(x):
            return np.zeros((0, len(self.splits.classes)), np.float32)
        return predict_scores(model, x, device=self.args.device)


@dataclass
class FittedHeads:
    """The trained heads (``"head"``, or ``"head_<stream>"`` per stream) and their scores:
    on val and test per stream (or ``"head"`` for early-concat), out-of-fold on the training
    videos (with ``--fusion-folds``), and each stream's test metrics (several streams)."""

    heads: dict = field(default_factory=dict)
    val_scores: dict = field(default_factory=dict)
    test_scores: dict = field(default_factory=dict)
    oof_scores: dict = field(default_factory=dict)
    per_stream: dict = field(default_factory=dict)
    midconv: object = None  # the fitted MidConvFusion (--fusion mid-conv: no per-stream heads)


def _uses_fusion_folds(streams: list[Stream], splits: VideoSplits, args: TrainArgs) -> bool:
    """Whether fusions are fitted on out-of-fold training scores (``--fusion-folds``)."""
    use_folds = args.fusion_folds > 0 and len(streams) > 1 and args.fusion != "early-concat"
    if args.fusion_folds == 1 or args.fusion_folds < 0:
        raise InputError("--fusion-folds must be 0 (fit fusions on the validation split) or >= 2")
    y_tr = splits.y_train
    if use_folds and splits.train_groups is None:
        counts = np.bincount(y_tr, minlength=len(splits.classes))
        few = [f"{splits.classes[c]} ({counts[c]})" for c in np.unique(y_tr) if counts[c] < args.fusion_folds]
        if few:
            more = f" and {len(few) - 5} more" if len(few) > 5 else ""
            raise InputError(f"--fusion-folds {args.fusion_folds}: class(es) {', '.join(few[:5])}{more} have fewer "
                             "training videos than folds, so some fold would miss them")
    return use_folds


def fit_heads(streams: list[Stream], splits: VideoSplits, trainer: _HeadTrainer, args: TrainArgs) -> FittedHeads:
    """One head per stream (with out-of-fold scores for ``--fusion-folds``), or one head on
    the early-concatenated features of all streams."""
    from .evaluate import metrics
    from .fusion import build_fusion

    use_folds = _uses_fusion_folds(streams, splits, args)
    fitted = FittedHeads()
    videos = (splits.train, splits.val, splits.test)
    if args.fusion == "mid-conv":
        return _fit_midconv(streams, splits, trainer, args, videos)
    if args.fusion == "early-concat":
        fusion = build_fusion("early-concat")
        parts = [tuple(stream_features(s, v) for v in videos) for s in streams]
        shapes = {p[0].shape[1:3] for p in parts}
        if len(shapes) != 1:
            raise InputError(f"early-concat needs the same views and segments in every stream, got "
                             f"{[p[0].shape[1:3] for p in parts]}")
        xs = [fusion.combine_features([p[i] for p in parts]) for i in range(3)]
        res = trainer.fit("early-concat", xs[0], xs[1])
        fitted.heads["head"] = res
        fitted.val_scores["head"], fitted.test_scores["head"] = trainer.scores(res.model, xs[1]), \
            trainer.scores(res.model, xs[2])
        return fitted
    for s in streams:
        x_tr, x_val, x_te = (stream_features(s, v) for v in videos)
        res = trainer.fit(s.name, x_tr, x_val)
        if use_folds:
            fitted.oof_scores[s.name] = trainer.out_of_fold(s.name, x_tr, x_val)
        key = "head" if len(streams) == 1 else f"head_{s.name}"
        fitted.heads[key] = res
        fitted.val_scores[s.name] = trainer.scores(res.model, x_val)
        fitted.test_scores[s.name] = trainer.scores(res.model, x_te)
        if len(streams) > 1 and splits.has_test:
            fitted.per_stream[s.name] = short_metrics(metrics(fitted.test_scores[s.name], splits.y_test,
                                                              splits.classes))
            fitted.per_stream[s.name]["best_epoch"] = res.best_epoch
    return fitted


def _fit_midconv(streams: list[Stream], splits: VideoSplits, trainer: _HeadTrainer, args: TrainArgs,
                 videos) -> FittedHeads:
    """The mid-conv network on the streams' maps (train: fit, val: best epoch and hyper-parameters)."""
    from .midconv import MidConvFusion

    if args.fusion_folds:
        raise InputError("--fusion-folds fits score fusions on out-of-fold scores; mid-conv trains on the maps "
                         "and selects on the validation split (drop --fusion-folds)")
    if args.early_stopping:
        raise InputError("mid-conv keeps its best validation epoch of --epochs; drop --early-stopping")
    if args.head_kwargs:
        raise InputError(f"{', '.join('--' + k for k in args.head_kwargs)}: head options do not apply to mid-conv, "
                         "which selects its own (conv width, FC size, dropout) on the validation split")
    maps = [[stream_features(s, v) for s in streams] for v in videos]  # per split: one array per stream
    fu = MidConvFusion(seed=args.seed, epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                       batch_size=args.batch_size, normalize=args.l2_normalize, device=args.device,
                       num_classes=len(splits.classes))
    fu.fit(maps[0], splits.y_train, maps[1] if splits.has_val else None, splits.y_val)
    trainer.log(f"train-head: [mid-conv] maps {fu.shapes} -> common (depth, h, w) {fu.state()['common']}; "
                f"selected {fu.hp} by {fu.selected_by}; best epoch {fu.best_epoch}/{args.epochs}")
    fitted = FittedHeads(midconv=fu)
    fitted.val_scores["mid-conv"], fitted.test_scores["mid-conv"] = fu.predict(maps[1]), fu.predict(maps[2])
    return fitted


@dataclass
class Fused:
    """Every fitted score-level fusion's state (by name; empty with one stream or early-concat)
    and the chosen fusion's scores on val and test."""

    states: dict
    val: np.ndarray | None
    test: np.ndarray | None


def fuse_scores(streams: list[Stream], splits: VideoSplits, fitted: FittedHeads, trainer: _HeadTrainer,
                args: TrainArgs, *, log=print) -> Fused:
    """Fit every score-level fusion on held-out scores: the out-of-fold training scores with
    ``--fusion-folds``, else the validation scores, else (with a warning) the training scores."""
    from .fusion import build_fusion, fusion_class, score_fusions

    if args.fusion == "early-concat":
        return Fused({}, fitted.val_scores["head"], fitted.test_scores["head"])
    if args.fusion == "mid-conv":
        return Fused({"mid-conv": fitted.midconv.state() | {"fitted_on": "train (weights), val (best epoch, "
                                                                        "hyper-parameters)"}},
                     fitted.val_scores["mid-conv"], fitted.test_scores["mid-conv"])
    if len(streams) == 1:
        return Fused({}, fitted.val_scores[streams[0].name], fitted.test_scores[streams[0].name])
    vlist = [fitted.val_scores[s.name] for s in streams]
    tlist = [fitted.test_scores[s.name] for s in streams]
    fit_on, y_fit = "val", splits.y_val
    if fitted.oof_scores:
        fit_on, y_fit = f"{args.fusion_folds}-fold out-of-fold scores of the training videos", splits.y_train
        vlist = [fitted.oof_scores[s.name] for s in streams]
    elif not splits.has_val:
        log("train-head: warning: no validation split; fusions are fitted on training scores "
            "(over-confident); use --fusion-folds or --val-fraction")
        fit_on, y_fit = "train", splits.y_train
        vlist = [trainer.scores(fitted.heads[f"head_{s.name}"].model, stream_features(s, splits.train))
                 for s in streams]
    states = {}
    for name in score_fusions():
        kw = {"C": args.svm_c, "seed": args.seed} if name == "svm" else {}
        if hasattr(fusion_class(name), "from_state"):
            kw = {"seed": args.seed}
        fu = build_fusion(name, **kw)
        try:
            fu.fit(vlist, y_fit)
        except ValueError as exc:
            log(f"train-head: warning: fusion {name} cannot be fitted ({exc}); skipped")
            continue
        states[name] = fu.state() | {"fitted_on": fit_on}
    if args.fusion not in states:
        raise InputError(f"fusion {args.fusion} could not be fitted")
    final_val = apply_fusion(states[args.fusion], [fitted.val_scores[s.name] for s in streams]) \
        if splits.has_val else None
    final_test = apply_fusion(states[args.fusion], tlist) if splits.has_test else None
    return Fused(states, final_val, final_test)


def _evaluated(streams, splits: VideoSplits, fitted: FittedHeads, fused: Fused, trainer: _HeadTrainer):
    """``(videos, labels, scores)`` the top-level metrics are on (see :attr:`VideoSplits.evaluated_on`)."""
    if splits.has_test:
        return splits.test, splits.y_test, fused.test
    if splits.has_val:
        return splits.val, splits.y_val, fused.val
    scores = (trainer.scores(fitted.heads["head"].model, stream_features(streams[0], splits.train))
              if len(fitted.heads) == 1 else None)
    if scores is None:
        raise InputError("nothing to evaluate on: give test labels or a validation fraction")
    return splits.train, splits.y_train, scores


def report(out: Path, streams: list[Stream], label_sets: LabelSets, splits: VideoSplits, fitted: FittedHeads,
           fused: Fused, trainer: _HeadTrainer, args: TrainArgs) -> dict:
    """The metrics of the chosen fusion (and of every fusion on the test videos), written with
    the heads, their curves and the fusions into the model directory ``out``."""
    from .evaluate import metrics, write_predictions_csv
    from .io import save_head
    from .plots import plot_confusion, plot_curves

    classes = splits.classes
    eval_vids, y_eval, s_eval = _evaluated(streams, splits, fitted, fused, trainer)
    m = metrics(s_eval, y_eval, classes)
    per_fusion = {}
    if args.fusion == "mid-conv" and splits.has_test:
        st = fused.states["mid-conv"]
        per_fusion["mid-conv"] = short_metrics(metrics(fused.test, splits.y_test, classes)) | {
            "selected": st["selected"]}
    elif fused.states and splits.has_test:
        tlist = [fitted.test_scores[s.name] for s in streams]
        for name, st in fused.states.items():
            per_fusion[name] = short_metrics(metrics(apply_fusion(st, tlist), splits.y_test, classes))
            if name == "late-weighted":
                per_fusion[name]["weights"] = dict(zip([s.name for s in streams], st["weights"]))
            if "selected" in st:  # learned fusions: the hyper-parameters chosen on the fitting scores
                per_fusion[name]["selected"] = st["selected"]
    result = {
        "split": splits.evaluated_on,
        **m,
        "head": args.head,
        "fusion": args.fusion,
        "streams": [s.name for s in streams],
        "per_stream": fitted.per_stream,
        "per_fusion": per_fusion,
        "val": (short_metrics(metrics(fused.val, splits.y_val, classes))
                if splits.has_val and fused.val is not None else None),
        "counts": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
    }

    heads = fitted.heads
    stream_info = [{"name": s.name, "features": s.path, "settings": s.digest(),
                    "store_manifest_sha256": (s.provenance.get("store") or {}).get("manifest_sha256"),
                    "head": ("fusion_mid-conv" if args.fusion == "mid-conv" else
                             f"head_{s.name}" if len(heads) > 1 else "head")} for s in streams]
    config = {
        "format": "flowstore-train-head", "version": 1,
        "head": args.head, "fusion": args.fusion, "classes": classes, "streams": stream_info,
        "labels": label_sets.source, "train_args": {k: v for k, v in vars(args).items()},
        "training": {k: r.config | {"best_epoch": r.best_epoch, "stopped_early": r.stopped_early,
                                    "class_weights": r.class_weights} for k, r in heads.items()}
                    | ({"mid-conv": {"epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
                                     "batch_size": args.batch_size, "seed": args.seed,
                                     "best_epoch": fitted.midconv.best_epoch}} if fitted.midconv else {}),
        "splits": {"train": splits.train, "val": splits.val, "test": splits.test},
    }
    for key, res in heads.items():
        save_head(res.model, out / key, extra={"classes": classes, "training": res.config,
                                               "best_epoch": res.best_epoch})
        title = f"{key.replace('head_', '').replace('head', args.head)} head"
        plot_curves(res.history, out / ("curves.png" if key == "head" else f"curves_{key[5:]}.png"),
                    best_epoch=res.best_epoch, title=title)
    if fused.states:
        from .learned_fusion import save_fusion_tensors

        write_json(out / "fusion.json", {"chosen": args.fusion, "streams": [s.name for s in streams],
                                          "fusions": save_fusion_tensors(fused.states, out)})
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", result)
    write_predictions_csv(out / "predictions.csv", eval_vids, s_eval, y_eval, classes)
    if len(streams) > 1 and args.fusion not in ("early-concat", "mid-conv") and splits.has_test:
        for s in streams:
            write_predictions_csv(out / f"predictions_{s.name}.csv", splits.test, fitted.test_scores[s.name],
                                  splits.y_test, classes)
    label = args.fusion if args.fusion != "none" else streams[0].name
    plot_confusion(m["confusion_matrix"], classes, out / "confusion.png",
                   title=f"{label} ({args.head}) on {splits.evaluated_on}: top-1 {m['top1']:.1%} (n={m['n']})")
    return result


def train_model(streams: list[Stream], label_sets: LabelSets, out, args: TrainArgs, *, log=print) -> dict:
    """Train the head(s), fit the fusion(s), evaluate on the test videos and write ``out``.

    Returns the metrics dict (also written to ``out/metrics.json``)."""
    _check_fusion_arg(streams, args.fusion)
    out = Path(os.fspath(out))
    out.mkdir(parents=True, exist_ok=True)
    splits = split_videos(streams, label_sets, args, log=log)
    trainer = _HeadTrainer(splits, args, log)
    init = _init_from(streams, splits, trainer, args, log) if args.init_from else None
    fitted = fit_heads(streams, splits, trainer, args)
    fused = fuse_scores(streams, splits, fitted, trainer, args, log=log)
    result = report(out, streams, label_sets, splits, fitted, fused, trainer, args)
    if init is not None:  # recorded beside the metrics and the config
        result["init_from"] = init
        for name in ("metrics.json", "config.json"):
            doc = json.loads((out / name).read_text())
            write_json(out / name, doc | {"init_from": init})
    return result


def _init_from(streams: list[Stream], splits: VideoSplits, trainer: _HeadTrainer, args: TrainArgs, log) -> dict:
    """Start the head from ``args.init_from``'s (fine-tuning); returns what is recorded about it."""
    from .finetune import plan_init, read_init

    if len(streams) != 1:
        raise InputError(f"--init-from fine-tunes one head: give one --features file, not {len(streams)}")
    init = read_init(args.init_from)
    state, kwargs, note = plan_init(init, args.head, trainer.train_kw["head_kwargs"], in_dim=streams[0].store.shape[3],
                                    features=streams[0].path, classes=splits.classes)
    trainer.train_kw.update(head_kwargs=kwargs, init_state=state)
    log(f"train-head: --init-from: {note}")
    return {"model": str(Path(init.model_dir).resolve()), "note": note, "classes_there": len(init.classes),
            "output_layer": "kept" if len(state) == len(init.state) else "re-created"}
