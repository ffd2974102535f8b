"""Train a head on frozen features.

Feature layout: ``(N, S, D)`` or, with multiple test-time views (crops/flips), ``(N, V, S, D)``.

Views during training (``train_views``):

- ``"random"`` (default): every epoch each video contributes ONE view drawn at random, so
  views act as data augmentation at the cost of a single-view epoch;
- ``"all"``: every view is its own training sample (V times more steps per epoch);
- ``"first"``: only view 0 (e.g. the centre crop) is used.

Validation always uses multi-view testing (softmax averaged over all views, see
:func:`flowstore.heads.evaluate.predict_scores`); val loss is the cross-entropy of those
averaged probabilities (unweighted), val acc their top-1 accuracy.

Determinism: initialisation, dropout, shuffling and view sampling are all driven by
``seed`` (the global torch RNG is forked, so the caller's RNG state is untouched). On CPU
the same seed gives bit-identical weights and history.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .evaluate import as_feature_tensor, predict_scores
from .finetune import load_matching
from .models import build_head
from ..errors import InputError

__all__ = ["TrainResult", "train_head", "class_weights_from_labels", "SCHEDULES", "TRAIN_VIEWS"]

SCHEDULES = ("cosine", "cyclic", "constant")
TRAIN_VIEWS = ("random", "all", "first")
MONITORS = ("val_loss", "val_acc")


@dataclass
class TrainResult:
    """Outcome of :func:`train_head`.

    ``model`` holds the weights of ``best_epoch`` (the best validation epoch when
    validation data was given, else the last epoch) and is in eval mode.
    ``history`` maps ``epoch`` (1-based), ``train_loss``, ``val_loss``, ``val_acc`` and
    ``lr`` (learning rate at the start of the epoch) to per-epoch lists; val entries are
    ``None`` without validation data. ``class_weights`` is the loss weight per class
    (all ones unless ``class_weighted``). ``config`` records the training arguments.
    """

    model: torch.nn.Module
    history: dict
    best_epoch: int
    class_weights: list
    stopped_early: bool = False
    config: dict = field(default_factory=dict)


def class_weights_from_labels(labels, num_classes: int) -> torch.Tensor:
    """"Balanced" class weights ``w_c = N / (C * n_c)`` (sklearn's convention): a class with
    half the average frequency gets weight 2; a balanced set gives all ones. Classes absent
    from ``labels`` get weight 0 (they never occur as targets)."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    counts = torch.bincount(y, minlength=num_classes).double()
    w = torch.zeros(num_classes, dtype=torch.float64)
    present = counts > 0
    w[present] = y.numel() / (num_classes * counts[present])
    return w.float()


def _labels_tensor(labels, n: int, name: str) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels))
    if y.shape != (n,):
        raise InputError(f"{name} must have shape ({n},), got {tuple(y.shape)}")
    if n and (torch.is_floating_point(y) or y.dtype == torch.bool):
        raise TypeError(f"{name} must be integers, got {y.dtype}")
    y = y.long()
    if n and y.min() < 0:
        raise InputError(f"{name} must be >= 0")
    return y


def _make_scheduler(opt, schedule: str, lr: float, total_steps: int, steps_per_epoch: int,
                    cycle_epochs: int):
    if schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        )
    if schedule == "cyclic":
        # triangular cycles between lr/10 and lr, one cycle every `cycle_epochs` epochs,
        # starting at the low end.
        half = max(1, (steps_per_epoch * cycle_epochs) // 2)
        return torch.optim.lr_scheduler.CyclicLR(
            opt, base_lr=lr / 10.0, max_lr=lr, step_size_up=half, mode="triangular",
            cycle_momentum=False,
        )
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


def train_head(
    train_feats,
    train_labels,
    *,
    val_feats=None,
    val_labels=None,
    head: str = "linear",
    head_kwargs: dict | None = None,
    num_classes: int | None = None,
    epochs: int = 50,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    class_weighted: bool = False,
    schedule: str = "cosine",
    cycle_epochs: int = 4,
    early_stopping_patience: int | None = None,
    monitor: str = "val_loss",
    seed: int = 0,
    l2_normalize: bool = True,
    train_views: str = "random",
    device: str = "cpu",
    init_state: dict | None = None,
) -> TrainResult:
    """Train head ``head`` (a :data:`~flowstore.heads.models.HEADS` name) with AdamW.

    - ``train_feats``: (N, S, D) or (N, V, S, D) array/tensor; ``train_labels``: (N,) ints.
    - ``num_classes`` defaults to ``max(label) + 1`` over train and val labels.
    - ``head_kwargs``: extra builder arguments (``hidden``, ``dropout``, ``dim``, ...).
    - ``l2_normalize``: L2-normalise each segment feature vector inside the head (rescaled
      to unit RMS, see :mod:`flowstore.heads.models`); applies at test time and after
      reloading too, because it is part of the head's config.
    - ``class_weighted``: cross-entropy weighted by :func:`class_weights_from_labels`.
    - ``schedule``: per-step ``"cosine"`` decay from ``lr`` to 0 over all epochs,
      ``"cyclic"`` triangular cycles between ``lr/10`` and ``lr`` of ``cycle_epochs``
      epochs, or ``"constant"``.
    - ``early_stopping_patience``: stop after this many epochs without improvement of
      ``monitor`` (``"val_loss"`` or ``"val_acc"``); ``None`` disables it. Needs val data.
      With val data the weights of the best epoch are restored at the end.
    - ``train_views``: ``"random"`` | ``"all"`` | ``"first"`` (see module docstring).
    - ``init_state``: start from these weights (fine-tuning; every tensor whose name and shape
      the head has, see :func:`flowstore.heads.finetune.load_matching`).
    """
    if schedule not in SCHEDULES:
        raise InputError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
    if train_views not in TRAIN_VIEWS:
        raise InputError(f"unknown train_views {train_views!r}; choose from {sorted(TRAIN_VIEWS)}")
    if monitor not in MONITORS:
        raise InputError(f"unknown monitor {monitor!r}; choose from {sorted(MONITORS)}")
    if int(epochs) < 1 or int(batch_size) < 1 or not lr > 0:
        raise InputError(f"need epochs >= 1, batch_size >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}")
    epochs, batch_size = int(epochs), int(batch_size)
    if (val_feats is None) != (val_labels is None):
        raise InputError("pass both val_feats and val_labels, or neither")
    if early_stopping_patience is not None and int(early_stopping_patience) < 1:
        raise InputError(f"early_stopping_patience must be >= 1 or None, got {early_stopping_patience}")

    x = as_feature_tensor(train_feats)
    n, v, s, d = x.shape
    if n == 0:
        raise InputError("no training samples")
    y = _labels_tensor(train_labels, n, "train_labels")
    has_val = val_feats is not None
    if has_val:
        xv = as_feature_tensor(val_feats)
        if xv.shape[2:] != x.shape[2:]:
            raise InputError(f"val features (.., S, D) = {tuple(xv.shape[2:])} differ from train "
                             f"{tuple(x.shape[2:])}")
        yv = _labels_tensor(val_labels, xv.shape[0], "val_labels")
        if len(yv) == 0:
            raise InputError("empty validation set; pass val_feats=None instead")
    max_label = max(int(y.max()), int(yv.max())) if has_val else int(y.max())
    if num_classes is None:
        num_classes = max_label + 1
    elif max_label >= int(num_classes):
        raise InputError(f"label {max_label} out of range for num_classes={num_classes}")
    num_classes = int(num_classes)

    dev = torch.device(device)
    head_kwargs = dict(head_kwargs or {})
    if head_kwargs.get("l2_normalize", l2_normalize) != l2_normalize:
        raise InputError("l2_normalize given both as argument and in head_kwargs, with different values")
    head_kwargs["l2_normalize"] = bool(l2_normalize)
    fork_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = build_head(head, in_dim=d, num_classes=num_classes, num_segments=s,
                           **head_kwargs)
        if init_state is not None:
            load_matching(model, init_state)
        model = model.to(dev)
        cw = (class_weights_from_labels(y, num_classes) if class_weighted
              else torch.ones(num_classes))
        loss_weight = cw.to(dev) if class_weighted else None
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        samples_per_epoch = n * v if train_views == "all" else n
        steps_per_epoch = math.ceil(samples_per_epoch / batch_size)
        sched = _make_scheduler(opt, schedule, lr, epochs * steps_per_epoch, steps_per_epoch,
                                int(cycle_epochs))

        history = {"epoch": [], "train_loss": [], "val_loss": [], "val_acc": [], "lr": []}
        best_score, best_epoch, best_state, bad_epochs, stopped = None, 0, None, 0, False
        for epoch in range(1, epochs + 1):
            model.train()
            if train_views == "all":
                vid = torch.arange(n).repeat_interleave(v)
                view = torch.arange(v).repeat(n)
            elif train_views == "random":
                vid = torch.arange(n)
                view = torch.randint(v, (n,), generator=gen)
            else:
                vid = torch.arange(n)
                view = torch.zeros(n, dtype=torch.long)
            perm = torch.randperm(len(vid), generator=gen)
            vid, view = vid[perm], view[perm]
            total, count = 0.0, 0
            history["lr"].append(float(opt.param_groups[0]["lr"]))
            for i in range(0, len(vid), batch_size):
                bi, bv = vid[i:i + batch_size], view[i:i + batch_size]
                xb = x[bi, bv].to(dev)
                yb = y[bi].to(dev)
                loss = F.cross_entropy(model(xb), yb, weight=loss_weight)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.detach().item() * len(bi)
                count += len(bi)
            history["epoch"].append(epoch)
            history["train_loss"].append(total / count)
            if not has_val:
                history["val_loss"].append(None)
                history["val_acc"].append(None)
                best_epoch = epoch
                continue
            probs = torch.from_numpy(predict_scores(model, xv, device=dev))
            vloss = float(F.nll_loss(torch.log(probs.clamp_min(1e-12)), yv))
            vacc = float((probs.argmax(1) == yv).float().mean())
            history["val_loss"].append(vloss)
            history["val_acc"].append(vacc)
            score = -vloss if monitor == "val_loss" else vacc
            if best_score is None or score > best_score:
                best_score, best_epoch, bad_epochs = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad_epochs += 1
                if early_stopping_patience is not None and bad_epochs >= int(early_stopping_patience):
                    stopped = True
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    config = {
        "head": head, "head_kwargs": head_kwargs, "num_classes": num_classes, "epochs": epochs,
        "lr": lr, "weight_decay": weight_decay, "batch_size": batch_size,
        "class_weighted": bool(class_weighted), "schedule": schedule, "cycle_epochs": int(cycle_epochs),
        "early_stopping_patience": early_stopping_patience, "monitor": monitor, "seed": seed,
        "l2_normalize": bool(head_kwargs["l2_normalize"]), "train_views": train_views,
    }
    return TrainResult(model=model, history=history, best_epoch=best_epoch,
                       class_weights=[float(w) for w in cw], stopped_early=stopped, config=config)
