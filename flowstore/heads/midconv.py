"""``mid-conv``: mid-level fusion of two (or more) streams' spatial feature maps, as the course
project behind this tool did it.

The inputs are map stores (``flowstore features --pool none``): per video ``(V, S, C_k, h_k, w_k)``
for stream ``k``. Per segment, :class:`MidConvNet`

1. brings the maps to one size: every map is resized spatially to the smallest ``h x w`` of the
   streams (area average, ``adaptive_avg_pool2d``: 56x56 -> 7x7 averages 8x8 blocks), and a map
   deeper than the shallowest stream gets a 1x1 conv down to that depth, so (64, 56, 56) and
   (1024, 7, 7) become (64, 7, 7) each;
2. concatenates them along depth ((128, 7, 7) in that example);
3. runs a 1x1 conv, a 3x3 conv (padding 1; ReLU after each) and a small FC on the flattened
   map (``Linear(width * h * w, hidden) -> ReLU -> dropout -> Linear(hidden, classes)``): the FC
   sees *where* things are, which global pooling would throw away;
4. averages the logits over the segments (TSN consensus).

Each stream's map is divided by its RMS first (per sample; ``normalize``, on with
``train-head``'s default ``--l2-normalize``), for the reason heads L2-normalise vectors.

Unlike the score fusions, mid-conv replaces the per-stream heads: it is trained on the training
videos' maps (one random view per video and epoch, AdamW, cosine decay, the best epoch on the
validation split kept), and its hyper-parameters (:attr:`MidConvFusion.candidates`) are selected
on the validation split (top-1, ties to the lower NLL, then the earlier candidate). ``state()``
reports them like the learned score fusions do: ``selected``, ``selected_by`` and ``val_top1``
(every candidate's validation top-1); the weights go to ``fusion_mid-conv.pt``.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

__all__ = ["MidConvNet", "MidConvFusion", "common_shape"]


def common_shape(shapes) -> tuple[int, int, int]:
    """``(depth, h, w)`` every stream's map is brought to: the smallest depth, height and width."""
    shapes = [tuple(int(x) for x in s) for s in shapes]
    if len(shapes) < 2 or any(len(s) != 3 or min(s) < 1 for s in shapes):
        raise InputError(f"mid-conv fuses two or more (C, h, w) maps, got {shapes}")
    return min(s[0] for s in shapes), min(s[1] for s in shapes), min(s[2] for s in shapes)


class MidConvNet(nn.Module):
    """Maps ``[(B, S, C_k, h_k, w_k)]`` -> logits ``(B, classes)`` (see the module docstring)."""

    def __init__(self, shapes, num_classes: int, *, width: int = 64, hidden: int = 128, dropout: float = 0.5,
                 normalize: bool = True):
        super().__init__()
        self.shapes = [tuple(int(x) for x in s) for s in shapes]
        depth, h, w = common_shape(self.shapes)
        self.size, self.normalize = (h, w), bool(normalize)
        self.project = nn.ModuleList(nn.Identity() if c == depth else nn.Conv2d(c, depth, 1)
                                     for c, _, _ in self.shapes)
        self.conv1 = nn.Conv2d(depth * len(self.shapes), int(width), 1)
        self.conv3 = nn.Conv2d(int(width), int(width), 3, padding=1)
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(int(width) * h * w, int(hidden)), nn.ReLU(),
                                nn.Dropout(float(dropout)), nn.Linear(int(hidden), int(num_classes)))

    def common(self, maps) -> torch.Tensor:
        """The resized, projected maps ``[(B, C_k, h_k, w_k)]`` concatenated along depth: ``(B, K * depth, h, w)``."""
        out = []
        for m, proj, shape in zip(maps, self.project, self.shapes):
            if tuple(m.shape[1:]) != shape:
                raise InputError(f"mid-conv was built for maps {self.shapes}, got {tuple(m.shape[1:])}")
            if self.normalize:
                m = m / m.pow(2).mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12).sqrt()
            if tuple(m.shape[-2:]) != self.size:
                m = F.adaptive_avg_pool2d(m, self.size)
            out.append(proj(m))
        return torch.cat(out, dim=1)

    def forward(self, maps) -> torch.Tensor:
        b, s = maps[0].shape[:2]
        z = self.common([m.flatten(0, 1) for m in maps])
        z = F.relu(self.conv3(F.relu(self.conv1(z))))
        return self.fc(z).view(b, s, -1).mean(dim=1)


def _as_maps(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x))
    if t.dim() != 6:
        raise InputError(f"mid-conv needs maps (N, V, S, C, h, w), got shape {tuple(t.shape)}")
    return t.float()


class MidConvFusion:
    """The ``mid-conv`` fusion: ``fit(train_maps, y_train, val_maps, y_val)``, ``predict(maps)``
    (softmax averaged over the views), ``state()`` / :meth:`from_state`. ``maps`` are lists with
    one ``(N, V, S, C, h, w)`` array per stream."""

    name = "mid-conv"
    level = "maps"      # neither per-stream scores nor pooled features: it trains on the maps
    combines = True
    candidates = ({"width": 32, "hidden": 64, "dropout": 0.5}, {"width": 64, "hidden": 128, "dropout": 0.2})

    def __init__(self, seed: int = 0, *, epochs: int = 30, lr: float = 1e-3, weight_decay: float = 1e-4,
                 batch_size: int = 32, normalize: bool = True, device: str = "cpu", num_classes: int | None = None,
                 **fixed):
        self.seed, self.epochs, self.lr, self.weight_decay = int(seed), int(epochs), float(lr), float(weight_decay)
        self.batch_size, self.normalize, self.device = int(batch_size), bool(normalize), device
        self.fixed = dict(fixed)
        self.module: MidConvNet | None = None
        self.hp = self.selected_by = None
        self.val_top1: list = []
        self.shapes, self.c = None, None if num_classes is None else int(num_classes)
        self.best_epoch = None

    def build(self, shapes, c: int, hp: dict) -> MidConvNet:
        return MidConvNet(shapes, c, width=hp["width"], hidden=hp["hidden"], dropout=hp["dropout"],
                          normalize=self.normalize)

    def _train(self, xs, y, xv, yv, hp):
        """One candidate: ``(module, best_epoch, (val_top1, val_nll) or None)``."""
        dev = torch.device(self.device)
        n, v = xs[0].shape[:2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            gen = torch.Generator().manual_seed(self.seed)
            module = self.build(self.shapes, self.c, hp).to(dev)
            opt = torch.optim.AdamW(module.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            total = self.epochs * math.ceil(n / self.batch_size)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
            best, best_epoch, best_state = None, self.epochs, None
            for epoch in range(1, self.epochs + 1):
                module.train()
                view = torch.randint(v, (n,), generator=gen)
                perm = torch.randperm(n, generator=gen)
                for i in range(0, n, self.batch_size):
                    b = perm[i:i + self.batch_size]
                    loss = F.cross_entropy(module([x[b, view[b]].to(dev) for x in xs]), y[b].to(dev))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                if xv is not None:
                    p = self._probs(module, xv)
                    score = (float((p.argmax(1) == yv.numpy()).mean()),
                             float(-np.log(np.clip(p[np.arange(len(yv)), yv.numpy()], 1e-12, None)).mean()))
                    if best is None or (score[0], -score[1]) > (best[0], -best[1]):
                        best, best_epoch, best_state = score, epoch, copy.deepcopy(module.state_dict())
            if best_state is not None:
                module.load_state_dict(best_state)
        module.eval()
        return module, best_epoch, best

    def _probs(self, module, xs) -> np.ndarray:
        """Softmax ``(N, C)`` averaged over the views."""
        dev = next(module.parameters()).device
        n, v = xs[0].shape[:2]
        module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, n, self.batch_size):
                views = [F.softmax(module([x[i:i + self.batch_size, k].to(dev) for x in xs]).double(), dim=1)
                         for k in range(v)]
                out.append(torch.stack(views).mean(0).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.c))

    def fit(self, train_maps, y_train, val_maps=None, y_val=None):
        xs = [_as_maps(x) for x in train_maps]
        self.shapes = [tuple(x.shape[3:]) for x in xs]
        common_shape(self.shapes)
        if len({tuple(x.shape[:3]) for x in xs}) != 1:
            raise InputError(f"mid-conv streams need the same videos, views and segments, got "
                             f"{[tuple(x.shape[:3]) for x in xs]}")
        y = torch.as_tensor(np.asarray(y_train), dtype=torch.long)
        has_val = val_maps is not None and len(np.asarray(y_val)) > 0
        xv = [_as_maps(x) for x in val_maps] if has_val else None
        yv = torch.as_tensor(np.asarray(y_val), dtype=torch.long) if has_val else None
        self.c = int(max(int(y.max()), int(yv.max()) if has_val else 0)) + 1 if self.c is None else self.c
        cands = [dict(self.fixed)] if self.fixed else [dict(h) for h in self.candidates]
        if self.fixed:
            self.selected_by = "given"
        elif has_val:
            self.selected_by = "the validation split (top-1, ties to the lower NLL, then the earlier candidate)"
        else:
            self.selected_by = "default (no validation split)"
            cands = cands[:1]
        results = [self._train(xs, y, xv, yv, hp) for hp in cands]
        best = 0
        if has_val:
            best = min(range(len(cands)), key=lambda i: (-results[i][2][0], results[i][2][1], i))
        self.val_top1 = [{**h, "top1": round(r[2][0], 6)} for h, r in zip(cands, results) if r[2] is not None]
        self.hp, (self.module, self.best_epoch, _) = cands[best], results[best]
        return self

    def predict(self, maps) -> np.ndarray:
        if self.module is None:
            raise RuntimeError("mid-conv fusion is not fitted; call fit() first")
        xs = [_as_maps(x) for x in maps]
        return self._probs(self.module, xs).astype(np.float64)

    def state(self) -> dict:
        s = {"name": self.name, "seed": self.seed}
        if self.module is not None:
            s.update(selected=self.hp, selected_by=self.selected_by, val_top1=self.val_top1,
                     best_epoch=self.best_epoch, streams=len(self.shapes), classes=self.c,
                     map_shapes=[list(x) for x in self.shapes], common=list(common_shape(self.shapes)),
                     normalize=self.normalize,
                     _tensors={k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()})
        return s

    @classmethod
    def from_state(cls, state: dict, device: str = "cpu"):
        from .io import ModelFileError

        self = cls(seed=state.get("seed", 0), normalize=state.get("normalize", True), device=device)
        try:
            self.shapes = [tuple(int(x) for x in s) for s in state["map_shapes"]]
            self.c, self.hp = int(state["classes"]), dict(state["selected"])
            self.module = self.build(self.shapes, self.c, self.hp)
        except (KeyError, TypeError, ValueError, InputError) as exc:
            raise ModelFileError(f"fusion 'mid-conv': its recorded architecture is unusable ({exc})") from None
        tensors = state.get("_tensors")
        if tensors is None:
            raise ModelFileError("fusion 'mid-conv' has no weights (its fusion_mid-conv.pt was not loaded)")
        want = {k: tuple(v.shape) for k, v in self.module.state_dict().items()}
        if want != {k: tuple(v.shape) for k, v in tensors.items()}:
            raise ModelFileError(f"fusion 'mid-conv': the weights do not fit its recorded architecture {self.hp} "
                                 f"(maps {self.shapes}, {self.c} classes)")
        self.module.load_state_dict(tensors, strict=True)
        self.module.to(device).eval()
        return self
