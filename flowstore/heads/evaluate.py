"""Multi-view prediction, classification metrics and a predictions CSV.

Scores everywhere in :mod:`flowstore.heads` are class-probability arrays ``(N, C)``
(softmax outputs), one row per video.
"""
from __future__ import annotations

import csv
import os
from typing import Sequence

import numpy as np
import torch
from ..errors import InputError
from ..io import atomic_write

__all__ = ["as_feature_tensor", "predict_scores", "metrics", "write_predictions_csv"]


def as_feature_tensor(feats) -> torch.Tensor:
    """Features as a float32 CPU tensor of shape (N, V, S, D); (N, S, D) gets V = 1.

    numpy float32 input is wrapped without a copy."""
    t = torch.as_tensor(feats)
    if not torch.is_floating_point(t):
        raise TypeError(f"features must be floating point, got {t.dtype}")
    if t.dtype != torch.float32:
        t = t.float()
    if t.dim() == 3:
        t = t.unsqueeze(1)
    if t.dim() != 4:
        raise InputError(f"features must be (N, S, D) or (N, V, S, D), got shape {tuple(t.shape)}")
    return t


@torch.no_grad()
def predict_scores(model: torch.nn.Module, feats, *, batch_size: int = 256,
                   device: str | torch.device | None = None) -> np.ndarray:
    """Class probabilities (N, C) for features (N, S, D) or (N, V, S, D).

    Multi-view testing: the head performs the segment consensus for each view, the softmax
    scores are then averaged over the V views. The model is put in eval mode (and left
    there); ``device`` defaults to the device of the model's parameters.
    """
    x = as_feature_tensor(feats)
    n, v, s, d = x.shape
    if device is None:
        p = next(model.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    model.eval()
    flat = x.reshape(n * v, s, d)
    out = []
    bs = max(1, int(batch_size)) * v  # whole videos per batch
    for i in range(0, n * v, bs):
        logits = model(flat[i:i + bs].to(device))
        out.append(torch.softmax(logits.float(), dim=-1).cpu())
    if not out:
        c = getattr(model, "num_classes", 0)
        return np.zeros((0, c), dtype=np.float32)
    probs = torch.cat(out).reshape(n, v, -1).mean(dim=1)
    return probs.numpy()


def _check_scores_labels(scores, labels, class_names):
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise InputError(f"scores must be (N, C), got shape {scores.shape}")
    n, c = scores.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise InputError(f"labels must have shape ({n},), got {labels.shape}")
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if n and (labels.min() < 0 or labels.max() >= c):
        raise InputError(f"labels must be in [0, {c}), got range [{labels.min()}, {labels.max()}]")
    if class_names is None:
        class_names = [str(i) for i in range(c)]
    class_names = [str(x) for x in class_names]
    if len(class_names) != c:
        raise InputError(f"{len(class_names)} class names for {c} score columns")
    return scores, labels, class_names


def metrics(scores, labels, class_names: Sequence[str] | None = None) -> dict:
    """Classification metrics for scores (N, C) and integer labels (N,).

    Returns a JSON-serialisable dict:

    - ``top1``: fraction of videos whose highest score is the label;
    - ``top5``: top-k accuracy with ``k = min(5, C)`` (``top5_k`` holds that k);
    - ``per_class_accuracy``: ``{class_name: recall}``; ``None`` for classes without
      test videos;
    - ``mean_class_accuracy``: mean of the per-class accuracies over classes that have
      test videos;
    - ``confusion_matrix``: C x C list of lists of ints, rows = true class, columns =
      predicted class;
    - ``n``: number of videos.

    Ties are broken towards the lower class index (stable sort), for top-1 and top-k.
    """
    scores, labels, class_names = _check_scores_labels(scores, labels, class_names)
    n, c = scores.shape
    k = min(5, c)
    order = np.argsort(-scores, axis=1, kind="stable")
    pred = order[:, 0] if n else np.zeros(0, dtype=np.int64)
    cm = np.zeros((c, c), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    support = cm.sum(axis=1)
    per_class = {}
    accs = []
    for i, name in enumerate(class_names):
        if support[i]:
            a = float(cm[i, i] / support[i])
            accs.append(a)
            per_class[name] = a
        else:
            per_class[name] = None
    return {
        "n": int(n),
        "top1": float((pred == labels).mean()) if n else float("nan"),
        "top5": float((order[:, :k] == labels[:, None]).any(axis=1).mean()) if n else float("nan"),
        "top5_k": int(k),
        "mean_class_accuracy": float(np.mean(accs)) if accs else float("nan"),
        "per_class_accuracy": per_class,
        "confusion_matrix": cm.tolist(),
    }


def write_predictions_csv(path, video_ids: Sequence, scores, labels, class_names: Sequence[str]) -> None:
    """Write one row per video: ``video_id, label, label_name, pred, pred_name, correct,
    score_<class>...``.

    ``labels`` may be ``None`` (unlabelled test set): the label columns are then empty.
    The file is written to a temporary name and renamed into place.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if labels is None:
        _, _, class_names = _check_scores_labels(scores, np.zeros(len(scores), np.int64), class_names)
    else:
        scores, labels, class_names = _check_scores_labels(scores, labels, class_names)
    video_ids = list(video_ids)
    if len(video_ids) != len(scores):
        raise InputError(f"{len(video_ids)} video ids for {len(scores)} score rows")
    pred = np.argmax(scores, axis=1) if len(scores) else np.zeros(0, np.int64)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write_rows(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["video_id", "label", "label_name", "pred", "pred_name", "correct"]
                       + [f"score_{name}" for name in class_names])
            for i, vid in enumerate(video_ids):
                p = int(pred[i])
                if labels is None:
                    lab = ["", "", p, class_names[p], ""]
                else:
                    y = int(labels[i])
                    lab = [y, class_names[y], p, class_names[p], int(p == y)]
                w.writerow([vid, *lab, *(f"{s:.6g}" for s in scores[i])])

    atomic_write(path, write_rows)
