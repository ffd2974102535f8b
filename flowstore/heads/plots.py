"""PNG plots of a confusion matrix and of training curves.

Uses matplotlib's object API with the Agg canvas directly (no pyplot, no global backend
switch), so it is safe in headless runs and does not disturb other matplotlib users.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from ..errors import InputError
from ..io import atomic_write

__all__ = ["plot_confusion", "plot_curves"]


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    return path


def plot_confusion(cm, class_names: Sequence[str], path, *, normalize: bool = True,
                   title: str | None = None) -> Path:
    """Confusion matrix (rows = true, columns = predicted) as a PNG heat map.

    With ``normalize`` the colours show row-normalised rates (per-class recall on the
    diagonal); cells carry the raw counts when there are at most 30 classes. The figure
    grows with the number of classes (tick labels shrink for many classes)."""
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[0]
    if cm.shape != (c, c) or len(class_names) != c:
        raise InputError(f"confusion matrix {cm.shape} does not match {len(class_names)} class names")
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = float(np.clip(0.35 * c + 2.5, 4.0, 24.0))
    fig = _figure(size + 1.2, size)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(rates.max(), 1),
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of true class" if normalize else "count")
    fontsize = float(np.clip(0.45 * size * 72.0 / max(c, 1), 4.0, 10.0))  # ~half a cell
    ax.set_xticks(range(c))
    ax.set_yticks(range(c))
    ax.set_xticklabels([str(n) for n in class_names], rotation=90, fontsize=fontsize)
    ax.set_yticklabels([str(n) for n in class_names], fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    n = int(cm.sum())
    acc = float(np.trace(cm) / n) if n else float("nan")
    ax.set_title(title or f"confusion matrix (n={n}, top-1 {acc:.1%})")
    if c <= 30:
        for i in range(c):
            for j in range(c):
                if cm[i, j]:
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=fontsize,
                            color="white" if rates[i, j] > 0.5 * (1.0 if normalize else rates.max()) else "black")
    return _save(fig, path)


def plot_curves(history: dict, path, *, best_epoch: int | None = None, title: str | None = None) -> Path:
    """Training curves from a :class:`~flowstore.heads.train.TrainResult` history: train/val
    loss on the left, val accuracy on the right (if any), ``best_epoch`` marked."""
    train_loss = list(history.get("train_loss", []))
    epochs = list(history.get("epoch", range(1, len(train_loss) + 1)))
    val_loss = [np.nan if v is None else v for v in history.get("val_loss", [])]
    val_acc = [np.nan if v is None else v for v in history.get("val_acc", [])]
    has_val = any(np.isfinite(v) for v in val_loss + val_acc)
    fig = _figure(11 if has_val else 6, 4)
    ax = fig.add_subplot(1, 2 if has_val else 1, 1)
    ax.plot(epochs, train_loss, label="train loss", marker="." if len(epochs) < 40 else None)
    if has_val:
        ax.plot(epochs[:len(val_loss)], val_loss, label="val loss",
                marker="." if len(epochs) < 40 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.grid(alpha=0.3)
    axes = [ax]
    if has_val:
        ax2 = fig.add_subplot(1, 2, 2)
        ax2.plot(epochs[:len(val_acc)], val_acc, color="C2", label="val top-1",
                 marker="." if len(epochs) < 40 else None)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel("accuracy")
        ax2.set_ylim(0.0, 1.0)
        ax2.grid(alpha=0.3)
        axes.append(ax2)
    from matplotlib.ticker import MaxNLocator

    for a in axes:
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
        if best_epoch:
            a.axvline(best_epoch, color="gray", linestyle="--", label=f"best epoch {best_epoch}")
        a.legend(loc="best", fontsize=8)
    fig.suptitle(title or "head training")
    return _save(fig, path)
