"""Multi-task heads (Simonyan & Zisserman's UCF101 + HMDB51 training): one shared head body,
one output layer per dataset, and each sample's loss only from its own dataset's layer.

:class:`MultiTaskHead` (registered as the ``multitask`` head) averages the segment features
(TSN consensus), runs the shared body (``Linear(D, hidden) -> GELU -> dropout``, or nothing
with ``hidden=None``) and then every dataset's own ``Linear``; ``forward`` returns the
concatenated logits ``(B, sum_t C_t)`` (dataset ``t`` owns columns ``offsets[t]:offsets[t+1]``),
so it saves and loads like any head (:mod:`flowstore.heads.io`).

:func:`multitask_loss` is the mask: the cross-entropy of a sample of dataset ``t`` is taken
over dataset ``t``'s columns only, so the other datasets' layers get exactly zero gradient from
it ("the other dataset's loss zero"). :func:`train_multitask` trains on several datasets'
features jointly (fixed epochs, AdamW, cosine decay, one random view per video and epoch,
seeded) and :func:`task_scores` gives one dataset's softmax scores (over its own classes,
averaged over views).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .evaluate import as_feature_tensor
from .finetune import load_matching
from .models import _HeadBase

__all__ = ["MultiTaskHead", "multitask_head", "multitask_loss", "train_multitask", "task_scores", "load_matching"]


class MultiTaskHead(_HeadBase):
    def __init__(self, *, in_dim, num_classes, num_segments, task_classes, hidden=512, dropout=0.5,
                 l2_normalize=False):
        task_classes = [int(c) for c in task_classes]
        if len(task_classes) < 1 or min(task_classes) < 1 or sum(task_classes) != int(num_classes):
            raise InputError(f"task_classes {task_classes} must be >= 1 each and sum to num_classes {num_classes}")
        super().__init__(in_dim=in_dim, num_classes=num_classes, num_segments=num_segments,
                         l2_normalize=l2_normalize)
        self.task_classes = task_classes
        self.offsets = [0] + list(np.cumsum(task_classes))
        width = self.in_dim if hidden is None else int(hidden)
        self.body = nn.Identity() if hidden is None else nn.Sequential(nn.Linear(self.in_dim, width), nn.GELU())
        self.dropout = nn.Dropout(dropout)
        self.outputs = nn.ModuleList(nn.Linear(width, c) for c in task_classes)

    def forward(self, x):
        h = self.dropout(self.body(self._prepare(x).mean(dim=1)))
        return torch.cat([out(h) for out in self.outputs], dim=1)


def multitask_head(*, in_dim, num_classes, num_segments, task_classes=None, hidden=512, dropout=0.5,
                   l2_normalize=False):
    """Average consensus -> shared body -> one Linear per dataset (logits concatenated)."""
    if task_classes is None:
        raise InputError("the multitask head needs task_classes (one class count per dataset); it is built by "
                         "multi-task training (flowstore.heads.multitask.train_multitask)")
    return MultiTaskHead(in_dim=in_dim, num_classes=num_classes, num_segments=num_segments,
                         task_classes=task_classes, hidden=hidden, dropout=dropout, l2_normalize=l2_normalize)


def multitask_loss(logits, labels, tasks, task_classes, *, offsets=None) -> torch.Tensor:
    """Mean over the batch of each sample's cross-entropy over its own dataset's columns only.
    ``labels`` are class numbers within the sample's dataset, ``tasks`` its dataset number."""
    offsets = offsets or [0] + list(np.cumsum(task_classes))
    total = logits.new_zeros(())
    for t, c in enumerate(task_classes):
        sel = tasks == t
        if bool(sel.any()):
            total = total + F.cross_entropy(logits[sel, offsets[t]:offsets[t] + c], labels[sel], reduction="sum")
    return total / max(1, len(labels))


def task_scores(model: MultiTaskHead, feats, task: int, *, batch_size: int = 256) -> np.ndarray:
    """Softmax scores ``(N, C_task)`` of dataset ``task``, averaged over the views."""
    x = as_feature_tensor(feats)
    n, v, s, d = x.shape
    lo, hi = model.offsets[task], model.offsets[task + 1]
    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch_size):
            xb = x[i:i + batch_size]
            p = F.softmax(model(xb.reshape(-1, s, d))[:, lo:hi].double(), dim=1)
            out.append(p.reshape(xb.shape[0], v, -1).mean(1))
    return (torch.cat(out).numpy() if out else np.zeros((0, hi - lo))).astype(np.float32)


def train_multitask(feats: list, labels: list, task_classes: list[int], *, hidden=512, dropout=0.5, epochs=50,
                    lr=1e-3, weight_decay=1e-4, batch_size=64, seed=0, l2_normalize=True, init_state=None):
    """Train a :class:`MultiTaskHead` on datasets ``t`` = features ``feats[t]`` (N_t, V_t, S, D)
    with labels ``labels[t]`` (classes of dataset t). Returns ``(model, history)``."""
    from .models import build_head

    xs = [as_feature_tensor(f) for f in feats]
    if len({x.shape[2:] for x in xs}) != 1:
        raise InputError(f"multi-task datasets need the same segments and feature dimension, got "
                         f"{[tuple(x.shape[2:]) for x in xs]}")
    ys = [torch.as_tensor(np.asarray(y), dtype=torch.long) for y in labels]
    for t, (y, c) in enumerate(zip(ys, task_classes)):
        if len(y) and (y.min() < 0 or y.max() >= c):
            raise InputError(f"dataset {t}: labels out of range [0, {c})")
    s, d = xs[0].shape[2:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = build_head("multitask", in_dim=d, num_classes=sum(task_classes), num_segments=s,
                           task_classes=list(task_classes), hidden=hidden, dropout=dropout, l2_normalize=l2_normalize)
        if init_state is not None:
            load_matching(model, init_state)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        n = sum(len(y) for y in ys)
        total_steps = epochs * math.ceil(n / batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total_steps) / total_steps)))
        tasks = torch.cat([torch.full((len(y),), t, dtype=torch.long) for t, y in enumerate(ys)])
        y_all = torch.cat(ys)
        history = {"epoch": [], "train_loss": []}
        for epoch in range(1, epochs + 1):
            model.train()
            x_ep = torch.cat([x[torch.arange(len(x)), torch.randint(x.shape[1], (len(x),), generator=gen)] for x in xs])
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for i in range(0, n, batch_size):
                b = perm[i:i + batch_size]
                loss = multitask_loss(model(x_ep[b]), y_all[b], tasks[b], task_classes, offsets=model.offsets)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(b)
            history["epoch"].append(epoch)
            history["train_loss"].append(total / n)
    model.eval()
    return model, history
