"""Clip-level vs video-level accuracy and the (N_t, N_s) views grid (``evaluate --views-grid``).

A feature store's ``V = N_t * N_s`` views are indexed ``t * N_s + s`` (temporal clip ``t``,
spatial crop ``s``; :mod:`flowstore.data.views`). For a trained model:

* **clip-level accuracy**: every view scored alone (the head's softmax on that view), the
  accuracy averaged over the views used;
* **video-level accuracy**: the softmax averaged over the views used, then the accuracy (what
  ``evaluate`` reports).

The grid scores every pair ``n_t <= N_t``, ``n_s <= N_s`` from the *stored* views: the subset
keeps ``n`` of ``N`` stored positions, ``floor((2j + 1) * N / (2 n))`` for ``j = 0 .. n-1`` (the
centre one for ``n = 1``; nested when ``N / n`` is odd). It approximates a run with ``n_t``
clips and ``n_s`` crops: for other ``N / n`` the positions differ slightly from the ones
``clip-features`` would sample (SampleFrames spreads ``n`` clips from start to end).
Seconds per video: the views times the feature store's measured backbone seconds per clip
(``timing`` in its provenance, written by ``clip-features``; absent for 2D features), summed
over the streams, plus the head's measured time.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["clip_video_accuracy", "grid_table", "per_view_probs", "plot_grid", "report_views", "subset_positions",
           "view_grid", "view_subset", "views_grid"]


def view_grid(provenance: dict) -> tuple[int, int]:
    """``(N_t, N_s)`` of a feature store from its provenance ``views``."""
    views = provenance.get("views") or {}
    try:
        return int(views["temporal"]), int(views["spatial"])
    except (KeyError, TypeError, ValueError):
        raise InputError("the feature store's provenance does not record its temporal x spatial views") from None


def subset_positions(total: int, n: int) -> list[int]:
    """``n`` of ``total`` positions, ``floor((2j + 1) * total / (2n))``."""
    if not 1 <= n <= total:
        raise InputError(f"cannot keep {n} of {total} views")
    return [((2 * j + 1) * total) // (2 * n) for j in range(n)]


def view_subset(n_t_total: int, n_s_total: int, n_t: int, n_s: int) -> list[int]:
    """View indices ``t * N_s + s`` of the ``(n_t, n_s)`` subset."""
    return [t * n_s_total + s for t in subset_positions(n_t_total, n_t) for s in subset_positions(n_s_total, n_s)]


def per_view_probs(head, x: np.ndarray, device="cpu") -> np.ndarray:
    """``(N, V, C)`` softmax of every view scored alone, for features ``(N, V, S, D)``."""
    from .evaluate import predict_scores

    n, v = x.shape[:2]
    return predict_scores(head, x.reshape(n * v, *x.shape[2:]), device=device).reshape(n, v, -1)


def clip_video_accuracy(probs: np.ndarray, y: np.ndarray, views=None) -> tuple[float, float]:
    """``(clip-level, video-level)`` top-1 of per-view probabilities ``(N, V, C)`` on ``views``."""
    p = probs if views is None else probs[:, list(views)]
    clip = float((p.argmax(-1) == y[:, None]).mean()) if len(y) else 0.0
    video = float((p.mean(1).argmax(-1) == y).mean()) if len(y) else 0.0
    return clip, video


def _subset_labels(cfg: dict, label_sets, ids, path, subset: str):
    from .splits import resolve_labels

    if subset == "val":
        wanted = set(cfg["splits"]["val"])
        names, y = resolve_labels(label_sets.train, ids, path)
        keep = [i for i, v in enumerate(names) if v in wanted]
        return [names[i] for i in keep], y[keep]
    entries = {"test": label_sets.test, "train": label_sets.train,
               "all": list(label_sets.train) + list(label_sets.test)}.get(subset)
    if not entries:
        raise InputError(f"no {subset} videos in the labels")
    return resolve_labels(entries, ids, path)


def views_grid(model_dir, *, features=None, label_sets=None, subset: str = "test", device: str = "cpu") -> dict:
    """Clip- and video-level accuracy and seconds per video for every ``(n_t, n_s)`` subset of
    the stored views, for the model's chosen fusion (all streams must share one views grid)."""
    from .fusion import early_concat
    from .io import load_head
    from .modeldir import apply_fusion
    from .modeleval import read_model
    from .splits import load_label_sets
    from .streams import open_streams, stream_features

    cfg = read_model(model_dir)
    if cfg.get("tasks"):
        raise InputError("the views grid covers single-dataset models; a multi-task model is evaluated per dataset")
    recorded = cfg["streams"]
    paths = list(features) if features else [s["features"] for s in recorded]
    streams = open_streams(paths, names=[s["name"] for s in recorded], needed_by="the views grid (pooled features per view)")
    try:
        grids = {s.name: view_grid(s.provenance) for s in streams}
        if len(set(grids.values())) != 1:
            raise InputError(f"per-view scores need one views grid for all streams, got {grids}")
        n_t_total, n_s_total = next(iter(grids.values()))
        if label_sets is None:
            src = cfg["labels"]
            label_sets = load_label_sets(src["labels"], test_labels=src.get("test_labels"),
                                         classes=src.get("classes"), split=src.get("split", 1))
        names, y = _subset_labels(cfg, label_sets, streams[0].store.videos, streams[0].path, subset)
        feats = [stream_features(s, names) for s in streams]
        t0 = time.perf_counter()
        if cfg["fusion"] == "early-concat":
            probs = per_view_probs(load_head(Path(cfg["_dir"]) / "head"), early_concat(feats), device)
        else:
            per_stream = [per_view_probs(load_head(Path(cfg["_dir"]) / rec["head"]), x, device)
                          for rec, x in zip(recorded, feats)]
            if len(streams) == 1:
                probs = per_stream[0]
            else:
                state = (cfg["_fusion"] or {})["fusions"][cfg["fusion"]]
                n, v = per_stream[0].shape[:2]
                flat = apply_fusion(state, [p.reshape(n * v, -1) for p in per_stream])
                probs = flat.reshape(n, v, -1)
        head_s = (time.perf_counter() - t0) / max(len(names), 1) / (n_t_total * n_s_total)
        per_clip = [((s.provenance.get("timing") or {}).get("seconds_per_clip")) for s in streams]
        backbone_s = sum(p for p in per_clip if p is not None) if any(p is not None for p in per_clip) else None
        rows = []
        for n_t in range(1, n_t_total + 1):
            for n_s in range(1, n_s_total + 1):
                views = view_subset(n_t_total, n_s_total, n_t, n_s)
                clip, video = clip_video_accuracy(probs, y, views)
                k = len(views)
                rows.append({"n_t": n_t, "n_s": n_s, "views": k, "clip_top1": clip, "video_top1": video,
                             "backbone_seconds_per_video": None if backbone_s is None else k * backbone_s,
                             "seconds_per_video": (0.0 if backbone_s is None else k * backbone_s) + k * head_s})
        return {"model": str(cfg["_dir"]), "label": Path(cfg["_dir"]).name, "subset": subset, "n": len(names),
                "streams": [s.name for s in streams], "fusion": cfg["fusion"], "grid": [n_t_total, n_s_total],
                "timed_backbone": backbone_s is not None, "rows": rows}
    finally:
        for s in streams:
            s.store.close()


def grid_table(result: dict) -> str:
    """A markdown table of one :func:`views_grid` result."""
    note = "" if result["timed_backbone"] else " (head only: the features record no backbone timing)"
    lines = [f"{result['label']} ({'+'.join(result['streams'])}, {result['fusion']}), {result['subset']} "
             f"videos n = {result['n']}; seconds per video{note}:", "",
             "| N_t | N_s | views | clip top-1 | video top-1 | s / video |", "|---:|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['n_t']} | {r['n_s']} | {r['views']} | {r['clip_top1']:.1%} | {r['video_top1']:.1%} | "
                     f"{r['seconds_per_video']:.4f} |")
    return "\n".join(lines)


def plot_grid(result: dict, path) -> Path:
    """Heat maps of video-level accuracy and seconds per video over (N_t, N_s), as a PNG."""
    from .plots import _figure, _save

    n_t, n_s = result["grid"]
    acc = np.zeros((n_t, n_s))
    sec = np.zeros((n_t, n_s))
    for r in result["rows"]:
        acc[r["n_t"] - 1, r["n_s"] - 1] = r["video_top1"]
        sec[r["n_t"] - 1, r["n_s"] - 1] = r["seconds_per_video"]
    fig = _figure(2.5 + 1.2 * n_s, 1.2 + 0.5 * n_t)
    for i, (data, title, fmt) in enumerate(((acc, "video top-1", "{:.0%}"), (sec, "s / video", "{:.3g}"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(data, cmap="viridis", aspect="auto", origin="lower",
                  extent=(0.5, n_s + 0.5, 0.5, n_t + 0.5))
        for a in range(n_t):
            for b in range(n_s):
                ax.text(b + 1, a + 1, fmt.format(data[a, b]), ha="center", va="center", color="w", fontsize=7)
        ax.set_xlabel("N_s (crops)")
        ax.set_ylabel("N_t (clips)")
        ax.set_title(title)
    fig.suptitle(f"{result['label']}: views grid on {result['subset']} (n = {result['n']})")
    return _save(fig, path)


def report_views(models, names, *, features=None, label_sets=None, subset: str = "test", out=None,
                 grid: bool = False, device: str = "cpu", echo=print) -> list[dict]:
    """What ``evaluate`` prints after its table: clip- vs video-level accuracy with all stored
    views per model (models whose streams share one views grid), and with ``grid`` every
    (N_t, N_s) pair's table, written with a plot to ``out/<name>/views_grid.{md,json,png}``."""
    import json

    from ..io import atomic_write_text

    results, lines = [], []
    for model, name in zip(models, names):
        try:
            res = views_grid(model, features=features, label_sets=label_sets, subset=subset, device=device)
        except InputError as exc:
            if grid:
                raise
            lines.append(f"| {name} | - | - | - ({exc}) |")
            continue
        full = res["rows"][-1]
        lines.append(f"| {name} | {full['views']} | {full['clip_top1']:.1%} | {full['video_top1']:.1%} |")
        results.append(res)
        if grid:
            text = grid_table(res)
            echo("\n" + text)
            if out is not None:
                d = Path(out) / name
                d.mkdir(parents=True, exist_ok=True)
                atomic_write_text(d / "views_grid.md", text + "\n")
                atomic_write_text(d / "views_grid.json", json.dumps(res, indent=1) + "\n")
                plot_grid(res, d / "views_grid.png")
    if lines:
        echo(f"\nClip-level (each view alone) vs video-level (views averaged) top-1 on {subset} videos:\n")
        echo("\n".join(["| model | views | clip top-1 | video top-1 |", "|---|---:|---:|---:|"] + lines))
    return results
