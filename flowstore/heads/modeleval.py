"""Score videos with a model directory written by :func:`~flowstore.heads.modeldir.train_model`
(``flowstore evaluate``): multi-view testing, every fusion the model has, a markdown table."""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError, MissingFileError
from .modeldir import apply_fusion, short_metrics, write_json
from .splits import LabelSets, load_label_sets, resolve_labels
from .streams import open_streams, stream_features

__all__ = ["accuracy_table", "evaluate_model", "read_model"]


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
    from .evaluate import metrics, predict_scores, write_predictions_csv
    from .io import load_head
    from .plots import plot_confusion

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
                from ..features.store import _diff

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
            names_all, y_all = resolve_labels(label_sets.train, ids, streams[0].path)
            keep = [i for i, v in enumerate(names_all) if v in wanted]
            names, y = [names_all[i] for i in keep], y_all[keep]
        else:
            entries = {"test": label_sets.test, "train": label_sets.train,
                       "all": list(label_sets.train) + list(label_sets.test)}.get(subset)
            if entries is None:
                raise InputError(f"unknown subset {subset!r}; choose test, val, train or all")
            if not entries:
                raise InputError(f"no {subset} videos in the labels")
            names, y = resolve_labels(entries, ids, streams[0].path)
        fusion = cfg["fusion"]
        if fusion == "early-concat":
            from .fusion import early_concat

            x = early_concat([stream_features(s, names, views) for s in streams])
            probs = {"head": predict_scores(load_head(model_dir / "head"), x, device=device)}
            stream_probs = []
        else:
            stream_probs = []
            for s, rec in zip(streams, recorded):
                head = load_head(model_dir / rec["head"])
                stream_probs.append(predict_scores(head, stream_features(s, names, views), device=device))
            probs = {}
        n_views = stream_features(streams[0], names[:1], views).shape[1] if names else 0
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
                  "all": {k: short_metrics(v) for k, v in all_metrics.items()}, "rows": rows}
        if out is not None:
            out = Path(os.fspath(out))
            out.mkdir(parents=True, exist_ok=True)
            write_json(out / "metrics.json", {k: v for k, v in result.items() if k != "rows"})
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
