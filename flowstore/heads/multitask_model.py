"""Multi-task model directories (``train-head --head multitask --also FEATURES LABELS``):
several datasets, each with its own feature store and labels (Simonyan & Zisserman's UCF101 +
HMDB51), one shared head body and one output layer per dataset; each sample's loss comes only
from its own dataset's layer (:mod:`flowstore.heads.multitask`).

Every dataset gets its own train / val / test split (:func:`~flowstore.heads.modeldir.split_videos`
with the run's ``--val-fraction``, ``--seed`` and overlap checks); the head is trained on all
datasets' training videos for ``--epochs`` (no early stopping: one epoch count serves all
datasets) and every dataset is scored over its own classes only.

The model directory holds what a single-stream one does, per dataset::

    head.pt / head.json          the multi-task head (task_classes: one class count per dataset)
    config.json                  streams (one per dataset), tasks (name, classes, columns, labels, splits)
    metrics.json                 the first dataset's metrics at the top level (METRICS_KEYS),
                                 per_dataset: every dataset's (split, n, top1, ..., confusion_matrix, val, counts)
    predictions_<dataset>.csv    per dataset; predictions.csv: the first dataset's
    confusion_<dataset>.png      per dataset; confusion.png: the first dataset's
    curves.png                   the joint training loss

Dataset names are the feature files' stems (``ucf.h5`` -> ``ucf``), made unique with ``_2`` ...
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .modeldir import METRICS_KEYS, TrainArgs, VideoSplits, short_metrics, split_videos, write_json
from .splits import LabelSets
from .streams import Stream, stream_features

__all__ = ["Task", "dataset_names", "train_multitask_model"]


@dataclass
class Task:
    """One dataset of a multi-task run: its name, feature store and labels."""

    name: str
    stream: Stream
    label_sets: LabelSets


def dataset_names(paths) -> list[str]:
    """The feature files' stems, made unique (``ucf``, ``hmdb``; ``rgb``, ``rgb_2``)."""
    out, seen = [], {}
    for p in paths:
        base = Path(os.fspath(p)).stem or "dataset"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return out


def _check(tasks: list[Task], args: TrainArgs) -> None:
    if args.head != "multitask":
        raise InputError(f"several datasets (--also) train a multi-task head: pass --head multitask (not {args.head})")
    if len(tasks) < 2:
        raise InputError("--head multitask trains on two or more datasets: add --also FEATURES LABELS")
    if args.fusion != "none":
        raise InputError(f"--fusion {args.fusion}: a multi-task head takes one feature store per dataset, no fusion")
    if args.early_stopping:
        raise InputError("multi-task training runs a fixed number of epochs (--epochs) for all datasets; "
                         "drop --early-stopping")
    if args.fusion_folds:
        raise InputError("--fusion-folds applies to score fusions, not to a multi-task head")
    shapes = [t.stream.store.shape[2:4] for t in tasks]
    if len(set(shapes)) != 1:
        got = ", ".join(f"{t.stream.path} has (segments, dimension) {tuple(s)}" for t, s in zip(tasks, shapes))
        raise InputError(f"multi-task datasets share one head body, so their features need the same segments "
                         f"and dimension: {got}")


def train_multitask_model(tasks: list[Task], out, args: TrainArgs, *, log=print) -> dict:
    """Train the multi-task head, score every dataset and write the model directory ``out``.
    Returns the metrics dict (also ``out/metrics.json``)."""
    from .evaluate import metrics, write_predictions_csv
    from .io import save_head
    from .multitask import task_scores, train_multitask
    from .plots import plot_confusion, plot_curves

    _check(tasks, args)
    if args.device != "cpu":
        log(f"train-head: warning: multi-task training runs on the CPU (--device {args.device} is not used)")
    out = Path(os.fspath(out))
    out.mkdir(parents=True, exist_ok=True)
    splits: list[VideoSplits] = []
    for t in tasks:
        splits.append(split_videos([t.stream], t.label_sets, args,
                                   log=lambda m, n=t.name: log(m.replace("train-head:", f"train-head: [{n}]", 1))))
    task_classes = [len(sp.classes) for sp in splits]
    kwargs = dict(args.head_kwargs)
    init = None
    if args.init_from:
        from .finetune import plan_init, read_init

        init_head = read_init(args.init_from)
        state, kwargs, note = plan_init(init_head, args.head, kwargs, in_dim=tasks[0].stream.store.shape[3],
                                        features=tasks[0].stream.path, classes=[c for sp in splits for c in sp.classes])
        log(f"train-head: --init-from: {note}")
        init = {"model": str(Path(init_head.model_dir).resolve()), "note": note}
    else:
        state = None
    model, history = train_multitask([stream_features(t.stream, sp.train) for t, sp in zip(tasks, splits)],
                                     [sp.y_train for sp in splits], task_classes,
                                     hidden=kwargs.get("hidden", 512), dropout=kwargs.get("dropout", 0.5),
                                     epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                                     batch_size=args.batch_size, seed=args.seed, l2_normalize=args.l2_normalize,
                                     init_state=state)
    per_dataset, evaluated = {}, []
    for i, (t, sp) in enumerate(zip(tasks, splits)):
        vids, y = ((sp.test, sp.y_test) if sp.has_test else (sp.val, sp.y_val) if sp.has_val else (sp.train, sp.y_train))
        scores = task_scores(model, stream_features(t.stream, vids), i)
        m = metrics(scores, y, sp.classes)
        val = short_metrics(metrics(task_scores(model, stream_features(t.stream, sp.val), i), sp.y_val, sp.classes)) \
            if sp.has_val else None
        per_dataset[t.name] = {"split": sp.evaluated_on, **m, "val": val,
                               "counts": {"train": len(sp.train), "val": len(sp.val), "test": len(sp.test)}}
        evaluated.append((vids, y, scores))
        write_predictions_csv(out / f"predictions_{t.name}.csv", vids, scores, y, sp.classes)
        plot_confusion(m["confusion_matrix"], sp.classes, out / f"confusion_{t.name}.png",
                       title=f"{t.name} (multitask) on {sp.evaluated_on}: top-1 {m['top1']:.1%} (n={m['n']})")
        log(f"train-head: [{t.name}] {sp.evaluated_on} top-1 {m['top1']:.3f} (n={m['n']}, {len(sp.classes)} classes)")
    first = per_dataset[tasks[0].name]
    result = {k: first[k] for k in METRICS_KEYS if k in first} | {
        "head": args.head, "fusion": "none", "streams": [t.name for t in tasks], "per_stream": {}, "per_fusion": {}}
    result = {k: result[k] for k in METRICS_KEYS} | {"per_dataset": per_dataset}
    offsets = model.offsets
    config = {
        "format": "flowstore-train-head", "version": 1, "head": args.head, "fusion": "none",
        "classes": splits[0].classes,
        "streams": [{"name": t.name, "features": t.stream.path, "settings": t.stream.digest(),
                     "store_manifest_sha256": (t.stream.provenance.get("store") or {}).get("manifest_sha256"),
                     "head": "head"} for t in tasks],
        "tasks": [{"name": t.name, "classes": sp.classes, "columns": [int(offsets[i]), int(offsets[i + 1])],
                   "labels": t.label_sets.source, "splits": {"train": sp.train, "val": sp.val, "test": sp.test}}
                  for i, (t, sp) in enumerate(zip(tasks, splits))],
        "labels": tasks[0].label_sets.source, "train_args": dict(vars(args)),
        "training": {"head": {"epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay,
                              "batch_size": args.batch_size, "seed": args.seed, "schedule": "cosine",
                              "train_views": "random", "loss": "each sample's cross-entropy over its own "
                                                               "dataset's classes only"}},
        "splits": {"train": splits[0].train, "val": splits[0].val, "test": splits[0].test},
    }
    if init is not None:
        config["init_from"] = result["init_from"] = init
    save_head(model, out / "head", extra={"tasks": [{"name": t.name, "classes": sp.classes}
                                                    for t, sp in zip(tasks, splits)]})
    plot_curves(history, out / "curves.png", best_epoch=args.epochs, title="multitask head")
    write_json(out / "config.json", config)
    write_json(out / "metrics.json", result)
    vids, y, scores = evaluated[0]
    write_predictions_csv(out / "predictions.csv", vids, scores, y, splits[0].classes)
    plot_confusion(first["confusion_matrix"], splits[0].classes, out / "confusion.png",
                   title=f"{tasks[0].name} (multitask) on {first['split']}: top-1 {first['top1']:.1%} (n={first['n']})")
    return result
