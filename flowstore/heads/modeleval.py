"""Score videos with a model directory written by :func:`~flowstore.heads.modeldir.train_model`
(``flowstore evaluate``): multi-view testing, every fusion the model has, a markdown table."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, MissingFileError
from .modeldir import apply_fusion, overlap_message, short_metrics, write_json
from .splits import LabelSets, align_classes, load_label_sets, resolve_labels
from .streams import open_streams, stream_features

__all__ = ["accuracy_table", "evaluate_model", "read_model", "row_key"]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_config(cfg: dict, path: Path) -> None:
    """The keys of a model directory's config.json that evaluation uses, with their types; a
    head file name is a plain name inside the directory."""
    from .fusion import FUSIONS
    from .io import ModelFileError

    def bad(what):
        return ModelFileError(f"{path}: {what}; the model directory is damaged (train it again)")

    classes = cfg.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise bad("'classes' must be a non-empty list of class names")
    if len(set(classes)) != len(classes):
        raise bad("'classes' names a class twice")
    for key in ("head", "fusion"):
        if not isinstance(cfg.get(key), str):
            raise bad(f"{key!r} must be a name")
    if cfg["fusion"] not in FUSIONS:
        raise bad(FUSIONS.unknown(cfg["fusion"]).message)
    streams = cfg.get("streams")
    if not isinstance(streams, list) or not streams:
        raise bad("'streams' must be a non-empty list")
    for i, st in enumerate(streams):
        if not isinstance(st, dict) or not all(isinstance(st.get(k), str) for k in ("name", "features", "head")) \
                or not isinstance(st.get("settings"), dict):
            raise bad(f"streams[{i}] must have a name, features, head and settings")
        h = st["head"]
        if not (h == "head" or h.startswith("head_") or h == "fusion_mid-conv") or "/" in h or "\\" in h or ".." in h:
            raise bad(f"streams[{i}].head {h!r} is not a head file name of the directory")
    if not isinstance(cfg.get("labels"), dict):
        raise bad("'labels' must be an object")
    splits = cfg.get("splits")
    if not isinstance(splits, dict) or not all(isinstance(splits.get(k), list) for k in ("train", "val", "test")):
        raise bad("'splits' must hold the train, val and test video lists")
    tasks = cfg.get("tasks")
    if tasks is not None:  # a multi-task model: one stream per dataset
        if not isinstance(tasks, list) or len(tasks) != len(streams):
            raise bad("'tasks' must be a list with one dataset per stream")
        for i, t in enumerate(tasks):
            ok = isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("classes"), list) \
                and t["classes"] and all(isinstance(c, str) for c in t["classes"]) \
                and isinstance(t.get("labels"), dict) and isinstance(t.get("splits"), dict) \
                and all(isinstance(t["splits"].get(k), list) for k in ("train", "val", "test"))
            if not ok:
                raise bad(f"tasks[{i}] must have a name, classes, labels and the train, val and test video lists")


def _check_fusions(doc: dict, cfg: dict, path: Path) -> None:
    """fusion.json holds the chosen fusion, and every fusion's parameters fit the streams and classes."""
    from .io import ModelFileError

    fusions = doc.get("fusions")
    if not isinstance(fusions, dict):
        raise ModelFileError(f"{path}: 'fusions' must be an object")
    if cfg["fusion"] not in fusions:
        raise ModelFileError(f"{path} has no parameters of the model's fusion {cfg['fusion']!r} "
                             f"(it has {sorted(fusions)})")
    k, c = len(cfg["streams"]), len(cfg["classes"])
    for name, st in fusions.items():
        where = f"{path}: fusion {name!r}"
        if not isinstance(st, dict) or st.get("name") != name:
            raise ModelFileError(f"{where} must be an object with its name")
        if name == "late-weighted":
            w = st.get("weights")
            if not isinstance(w, list) or len(w) != k or not all(_is_number(x) for x in w):
                raise ModelFileError(f"{where}: 'weights' must be {k} numbers, one per stream")
        elif name == "late-perclass":
            w = st.get("weights")
            if not isinstance(w, list) or len(w) != k or not all(
                    isinstance(r, list) and len(r) == c and all(_is_number(x) and x >= 0 for x in r) for r in w):
                raise ModelFileError(f"{where}: 'weights' must be {k} x {c} numbers >= 0 (streams x classes)")
        elif "tensors" in st:  # logits-mlp, token-transformer: fusion_<name>.pt, checked when loaded
            if st.get("streams") != k or st.get("classes") != c or not isinstance(st.get("selected"), dict):
                raise ModelFileError(f"{where} was fitted on {st.get('streams')} streams x {st.get('classes')} "
                                     f"classes, the model has {k} x {c} (or its 'selected' is missing)")
        elif name == "svm":
            cls, coef, icpt = st.get("classes"), st.get("coef"), st.get("intercept")
            if not isinstance(cls, list) or len(cls) < 2 or not all(_is_int(x) and 0 <= x < c for x in cls) \
                    or len(set(cls)) != len(cls):
                raise ModelFileError(f"{where}: 'classes' must be two or more distinct class numbers below {c}")
            rows = 1 if len(cls) == 2 else len(cls)
            if not isinstance(coef, list) or len(coef) != rows or not all(
                    isinstance(r, list) and len(r) == k * c and all(_is_number(x) for x in r) for r in coef):
                raise ModelFileError(f"{where}: 'coef' must be {rows} x {k * c} numbers ({k} streams x {c} classes)")
            if not isinstance(icpt, list) or len(icpt) != rows or not all(_is_number(x) for x in icpt):
                raise ModelFileError(f"{where}: 'intercept' must be {rows} numbers")


def read_model(model_dir) -> dict:
    """A model directory's config.json (checked), with its fusion.json at ``_fusion`` (None when
    the model has no score-level fusion) and the directory at ``_dir``."""
    from .io import read_json_file

    model_dir = Path(os.fspath(model_dir))
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise MissingFileError(f"{model_dir} is not a train-head output directory (no config.json)")
    cfg = read_json_file(cfg_path, "model config")
    if cfg.get("format") != "flowstore-train-head":
        raise InputError(f"{cfg_path} is not a flowstore train-head config")
    _check_config(cfg, cfg_path)
    fusion_path = model_dir / "fusion.json"
    cfg["_fusion"] = None
    if len(cfg["streams"]) > 1 and cfg["fusion"] not in ("early-concat", "none"):
        cfg["_fusion"] = read_json_file(fusion_path, "fusion.json (the fused model's fusion parameters)")
        _check_fusions(cfg["_fusion"], cfg, fusion_path)
        from .learned_fusion import load_fusion_tensors

        load_fusion_tensors(cfg["_fusion"]["fusions"], model_dir)
    elif fusion_path.exists():
        cfg["_fusion"] = read_json_file(fusion_path, "fusion.json")
    cfg["_dir"] = str(model_dir)
    return cfg


def _load_checked_head(path: Path, classes: list[str], streams, target: str):
    """Load head ``path`` and check that it outputs the model's classes and takes the features
    of ``streams`` (their dimensions concatenated for early-concat; the segment count for the
    transformer, which needs it exactly)."""
    from .io import ModelFileError, load_head, read_head_config

    head = load_head(path)
    cfg = head.config
    recorded = read_head_config(path)["extra"].get("classes")
    if cfg["num_classes"] != len(classes):
        raise ModelFileError(f"{path}.json: the head has {cfg['num_classes']} outputs but config.json names "
                             f"{len(classes)} classes; the model directory is damaged or mixed up")
    if recorded is not None and recorded != classes:
        raise ModelFileError(f"{path}.json records the classes {recorded[:5]}... but config.json {classes[:5]}...; "
                             "the model directory is mixed up")
    dims = [s.store.shape[3] for s in streams]
    if sum(dims) != cfg["in_dim"]:
        got = " + ".join(f"{d} ({s.name}: {s.path})" for d, s in zip(dims, streams))
        raise InputError(f"features of dimension {got} do not fit {target}, trained on dimension {cfg['in_dim']}")
    segs = {s.store.shape[2] for s in streams}
    if cfg["name"] == "transformer" and segs != {cfg["num_segments"]}:
        raise InputError(f"features with {sorted(segs)} segment(s) do not fit {target}, a transformer head built "
                         f"for {cfg['num_segments']} segments ({', '.join(s.path for s in streams)})")
    return head


def evaluate_model(model_dir, *, features=None, label_sets: LabelSets | None = None, subset: str = "test",
                   views: int | None = None, out=None, allow_mismatch: bool = False, allow_overlap: bool = False,
                   device: str = "cpu", log=print) -> dict:
    """Score videos with a trained model directory: multi-view testing (softmax averaged over
    views; segments are combined by the head), then every fusion the model has.

    ``features`` overrides the feature files recorded in the model (same stream order).
    ``label_sets`` defaults to the labels recorded at training; ``subset`` is ``test``,
    ``val`` (the recorded validation videos), ``train`` or ``all`` (train + test).
    Returns ``{"model", "subset", "views", "rows": [...], "metrics": {...}}``; with ``out``
    writes metrics.json, predictions.csv and confusion.png there.

    The labels' classes are matched to the model's by name (another order is remapped; other
    names are an error), and ``subset="test"`` videos the model was trained or validated on are
    an error unless ``allow_overlap``.
    """
    from .evaluate import metrics, predict_scores, write_predictions_csv
    from .plots import plot_confusion

    cfg = read_model(model_dir)
    if cfg.get("tasks"):
        return _evaluate_multitask(cfg, features=features, label_sets=label_sets, subset=subset, views=views,
                                   out=out, allow_mismatch=allow_mismatch, allow_overlap=allow_overlap,
                                   device=device, log=log)
    model_dir = Path(cfg["_dir"])
    classes = cfg["classes"]
    recorded = cfg["streams"]
    paths = list(features) if features else [s["features"] for s in recorded]
    if len(paths) != len(recorded):
        raise InputError(f"{model_dir} was trained on {len(recorded)} stream(s); got {len(paths)} --features")
    fusion = cfg["fusion"]
    streams = open_streams(paths, names=[s["name"] for s in recorded], kind="maps" if fusion == "mid-conv" else "vectors",
                           needed_by=f"evaluating {model_dir} (fusion {fusion})")
    try:
        for s, rec in zip(streams, recorded):
            _check_digest(s, rec, allow_mismatch)
        if label_sets is None:
            label_sets = _recorded_labels(cfg["labels"], model_dir)
        label_sets = _match_classes(label_sets, classes, model_dir, log)
        names, y = _subset_videos(cfg["splits"], label_sets, streams[0], subset, model_dir, allow_overlap, log)
        if fusion == "mid-conv":
            from .midconv import MidConvFusion

            net = MidConvFusion.from_state(cfg["_fusion"]["fusions"]["mid-conv"], device=device)
            probs = {"head": net.predict([stream_features(s, names, views) for s in streams])}
            stream_probs = []
        elif fusion == "early-concat":
            from .fusion import early_concat

            head = _load_checked_head(model_dir / "head", classes, streams, f"the early-concat head of {model_dir}")
            x = early_concat([stream_features(s, names, views) for s in streams])
            probs = {"head": predict_scores(head, x, device=device)}
            stream_probs = []
        else:
            stream_probs = []
            for s, rec in zip(streams, recorded):
                head = _load_checked_head(model_dir / rec["head"], classes, [s],
                                          f"the {rec['name']} head of {model_dir}")
                stream_probs.append(predict_scores(head, stream_features(s, names, views), device=device))
            probs = {}
        n_views = stream_features(streams[0], names[:1], views).shape[1] if names else 0
        rows, all_metrics = [], {}
        label = Path(model_dir).name
        if fusion in ("early-concat", "mid-conv"):
            final = probs["head"]
            m = metrics(final, y, classes)
            all_metrics[fusion] = m
            rows.append(_row(label, "+".join(s.name for s in streams), cfg["head"], fusion, m, n_views, True))
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
                                 name == fusion, weights=st.get("weights") if name == "late-weighted" else None))
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


def _subset_videos(splits: dict, label_sets: LabelSets, stream, subset: str, model_dir, allow_overlap: bool,
                   log) -> tuple:
    """``(videos, labels)`` of ``subset`` in ``stream``'s store (``splits``: the recorded train/val/test
    lists); test videos the model was trained or validated on are an error unless ``allow_overlap``."""
    ids = stream.store.videos
    if subset == "val":
        wanted = set(splits["val"])
        if not wanted:
            raise InputError(f"{model_dir} was trained without a validation split")
        names_all, y_all = resolve_labels(label_sets.train, ids, stream.path)
        keep = [i for i, v in enumerate(names_all) if v in wanted]
        names, y = [names_all[i] for i in keep], y_all[keep]
    else:
        entries = {"test": label_sets.test, "train": label_sets.train,
                   "all": list(label_sets.train) + list(label_sets.test)}.get(subset)
        if entries is None:
            raise InputError(f"unknown subset {subset!r}; choose test, val, train or all")
        if not entries:
            raise InputError(f"no {subset} videos in the labels")
        names, y = resolve_labels(entries, ids, stream.path)
    if subset == "test":
        seen = list(splits["train"]) + list(splits["val"])
        msg = overlap_message("model's training (or validation)", seen, "evaluated test", names)
        if msg and not allow_overlap:
            raise InputError(f"{msg}; evaluate other videos or pass --allow-overlap")
        if msg:
            log(f"evaluate: warning: {msg} (--allow-overlap)")
    return names, y


def _recorded_labels(src: dict, model_dir) -> LabelSets:
    if not isinstance(src.get("labels"), str):
        raise InputError(f"{model_dir}/config.json records no label file; pass --labels")
    return load_label_sets(src["labels"], test_labels=src.get("test_labels"), classes=src.get("classes"),
                           split=src.get("split", 1))


def _check_digest(stream, recorded: dict, allow_mismatch: bool) -> None:
    if stream.digest() != recorded["settings"] and not allow_mismatch:
        from ..features.store import _diff

        raise InputError(f"{stream.path} was not made like the features {recorded['name']} head was trained on "
                         "(pass --allow-mismatch to evaluate anyway):\n  "
                         + "\n  ".join(_diff(recorded["settings"], stream.digest())))


def _evaluate_multitask(cfg: dict, *, features, label_sets, subset, views, out, allow_mismatch, allow_overlap,
                        device, log) -> dict:
    """:func:`evaluate_model` of a multi-task model directory: every dataset on its own feature
    store, labels and classes (its columns of the head); the first dataset's numbers at the top
    level, every dataset's under ``per_dataset``."""
    from .evaluate import metrics, write_predictions_csv
    from .io import ModelFileError, load_head
    from .multitask import task_scores
    from .plots import plot_confusion

    model_dir = Path(cfg["_dir"])
    tasks, recorded = cfg["tasks"], cfg["streams"]
    if label_sets is not None:
        raise InputError(f"{model_dir} is a multi-task model: each dataset is evaluated on the labels recorded "
                         "for it; drop --labels")
    paths = list(features) if features else [s["features"] for s in recorded]
    if len(paths) != len(tasks):
        raise InputError(f"{model_dir} is a multi-task model of {len(tasks)} datasets; got {len(paths)} --features")
    head = load_head(model_dir / "head")
    if head.config.get("task_classes") != [len(t["classes"]) for t in tasks]:
        raise ModelFileError(f"{model_dir}/head.json: its output layers {head.config.get('task_classes')} do not "
                             f"match the datasets' class counts {[len(t['classes']) for t in tasks]}")
    label = model_dir.name
    rows, per_dataset, all_short = [], {}, {}
    out = None if out is None else Path(os.fspath(out))
    for i, (t, rec, path) in enumerate(zip(tasks, recorded, paths)):
        stream = open_streams([path], [t["name"]], needed_by=f"evaluating {model_dir}")[0]
        try:
            _check_digest(stream, rec, allow_mismatch)
            if stream.store.shape[3] != head.config["in_dim"]:
                raise InputError(f"{stream.path} has {stream.store.shape[3]}-dimensional features; the multi-task "
                                 f"head of {model_dir} takes {head.config['in_dim']}")
            sets = _match_classes(_recorded_labels(t["labels"], model_dir), t["classes"], model_dir, log)
            names, y = _subset_videos(t["splits"], sets, stream, subset, model_dir, allow_overlap, log)
            x = stream_features(stream, names, views)
        finally:
            stream.store.close()
        scores = task_scores(head.to(device), x, i)
        m = metrics(scores, y, t["classes"])
        per_dataset[t["name"]] = {"n": len(names), **{k: m[k] for k in ("top1", "top5", "top5_k", "mean_class_accuracy",
                                                                     "per_class_accuracy", "confusion_matrix")}}
        all_short[t["name"]] = short_metrics(m)
        rows.append(_row(f"{label}[{t['name']}]", t["name"], cfg["head"], "none", m, x.shape[1], True))
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_predictions_csv(out / f"predictions_{t['name']}.csv", names, scores, y, t["classes"])
            plot_confusion(m["confusion_matrix"], t["classes"], out / f"confusion_{t['name']}.png",
                           title=f"{label} [{t['name']}] on {subset}: top-1 {m['top1']:.1%} (n={m['n']})")
    first = per_dataset[tasks[0]["name"]]
    result = {"model": str(model_dir), "subset": subset, "views": rows[0]["views"], "fusion": "none", **first,
              "all": all_short, "per_dataset": per_dataset, "rows": rows}
    if out is not None:
        write_json(out / "metrics.json", {k: v for k, v in result.items() if k != "rows"})
    return result


def _match_classes(label_sets: LabelSets, classes: list[str], model_dir: Path, log) -> LabelSets:
    """``label_sets`` relabelled to the model's class list by name (see :func:`align_classes`)."""
    src = label_sets.source.get("labels") if isinstance(label_sets.source, dict) else None
    what = f"the labels {src}" if src else "the labels"
    target = f"the model {model_dir}"
    train, moved = align_classes(label_sets.train, label_sets.classes, classes, what, target)
    test, moved_test = align_classes(label_sets.test, label_sets.classes, classes, what, target)
    if moved or moved_test:
        log(f"evaluate: {what} list the model's classes in another order; matched by name")
    return LabelSets(train=train, test=test, classes=list(classes), source=label_sets.source)


def _row(model, streams, head, fusion, m, views, chosen, weights=None) -> dict:
    return {"model": model, "streams": streams, "head": head, "fusion": fusion, "views": views,
            "n": m["n"], "top1": m["top1"], "top5": m["top5"], "mean_class_accuracy": m["mean_class_accuracy"],
            "chosen": bool(chosen), "weights": weights}


def row_key(row: dict) -> str:
    """How ``evaluate --reference`` names a table row: its model, or ``MODEL:FUSION`` for the
    rows of a model's score fusions (``fused:svm``)."""
    return row["model"] if row["fusion"] in ("none", "early-concat", "mid-conv") else f"{row['model']}:{row['fusion']}"


def accuracy_table(rows: list[dict], reference: dict | None = None) -> str:
    """A markdown table of evaluation rows; ``reference`` (:func:`row_key` -> text, e.g. a
    paper's number for that row) adds a last column, "—" for the rows it does not name."""
    lines = ["| model | streams | head | fusion | views | top-1 | top-5 | mean class acc. | n |"
             + (" reference |" if reference else ""),
             "|---|---|---|---|---:|---:|---:|---:|---:|" + ("---|" if reference else "")]
    for r in rows:
        fusion = r["fusion"] + (" *" if r["chosen"] and r["fusion"] not in ("none",) else "")
        if r.get("weights") is not None:
            fusion += " (w = " + ", ".join(f"{w:.2f}" for w in r["weights"]) + ")"
        lines.append(f"| {r['model']} | {r['streams']} | {r['head']} | {fusion} | {r['views']} | "
                     f"{r['top1']:.1%} | {r['top5']:.1%} | {r['mean_class_accuracy']:.1%} | {r['n']} |"
                     + (f" {reference.get(row_key(r), '—')} |" if reference else ""))
    return "\n".join(lines)
