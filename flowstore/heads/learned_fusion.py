"""Learned score-level fusions: ``late-perclass``, ``logits-mlp`` and ``token-transformer``.

All three work on the streams' held-out class scores ``(N, C)`` per stream, exactly like the
SVM fusion (``train-head`` fits every score fusion on the validation scores, or on out-of-fold
training scores with ``--fusion-folds``):

- :class:`LatePerClass` -- one learned weight per class and stream, ``f_c = sum_s w_{s,c} p_{s,c}``
  (``w >= 0``, initialised to ``1/K``: late-avg), fitted by minimising the cross-entropy of
  ``f / sum_c f_c`` with an L2 penalty pulling the log-weights back towards late-avg;
- :class:`LogitsMLP` -- an MLP on the concatenated per-stream logits (the log of the softmax
  scores: logits up to a per-row constant);
- :class:`TokenTransformer` -- one token per stream (its logit vector projected to ``dim``,
  plus a learned stream embedding), a CLS token, a small pre-norm transformer encoder and an
  MLP head on the CLS output.

**Why the transformer works on scores, not on per-segment features.** The fusions are fitted
on held-out scores: the per-stream heads were trained on the training videos, so their
training-set outputs are over-confident and a fusion fitted on them learns to trust them
blindly. A feature-level token transformer would have to be trained on the training videos
(it replaces the heads) and is then what the ``transformer`` head over early-concatenated
features already is. At score level each stream's head has already consumed its segments
(segment consensus is inside the head), so the tokens are one per stream; the per-segment
axis is the head's business. The fusion stays independent of the feature dimension, and
``evaluate`` re-applies it to any heads' scores.

**Hyper-parameters are selected on the held-out scores** by seeded 3-fold cross-validation
(top-1 accuracy, ties to the lower NLL, then to the earlier candidate) and the winner is refitted
on all of them; ``state()["selected"]`` records the winner and ``state()["cv_top1"]`` every
candidate's cross-validated top-1 (with fewer than 6 scores the first candidate is used and
``selected_by`` says so). They land in ``fusion.json`` and ``metrics.json`` (``per_fusion``).

**State.** ``late-perclass`` is small: its weights are plain JSON in ``fusion.json``. The
two networks keep their architecture in ``fusion.json`` and their tensors under the key
``"_tensors"`` in memory; :func:`save_fusion_tensors` writes those to ``fusion_<name>.pt``
(via :mod:`flowstore.heads.io`) and records the file name, :func:`load_fusion_tensors` reads
them back (strictly: names and shapes must fit the recorded architecture).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .fusion import _check_probs, _Fusion

__all__ = ["LatePerClass", "LogitsMLP", "TokenTransformer", "save_fusion_tensors", "load_fusion_tensors",
           "cv_folds"]

_LOG_FLOOR = 1e-6


def cv_folds(n: int, k: int, seed: int) -> np.ndarray:
    """Fold number of each of ``n`` samples: a seeded permutation cut into ``k`` near-equal folds."""
    folds = np.empty(n, np.int64)
    folds[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return folds


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _LearnedFusion(_Fusion):
    """Shared machinery: a torch module mapping stacked scores ``(N, K, C)`` to logits ``(N, C)``,
    trained full-batch with Adam for ``steps`` steps, hyper-parameters chosen by cross-validation."""

    #: hyper-parameter candidates (dicts), tried in order
    candidates: tuple = ()
    steps = 300
    lr = 1e-2
    folds = 3

    def __init__(self, seed: int = 0, **fixed):
        self.seed = int(seed)
        self.fixed = dict(fixed)   # a fixed hyper-parameter set skips the selection
        self.hp: dict | None = None
        self.cv: list | None = None
        self.selected_by = None
        self.module = None
        self.k = self.c = None
        self.candidate_list: list = []

    # -- to implement
    def build(self, k: int, c: int, hp: dict):  # pragma: no cover - abstract
        raise NotImplementedError

    def penalty(self, module, hp: dict):
        return 0.0

    @staticmethod
    def _stack(arrs) -> np.ndarray:
        return np.stack(arrs, axis=1)                    # (N, K, C)

    def _train(self, x: np.ndarray, y: np.ndarray, hp: dict):
        import torch
        import torch.nn.functional as F

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            module = self.build(x.shape[1], x.shape[2], hp)
            xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
            decay = [p for n, p in module.named_parameters() if n not in getattr(module, "no_decay", ())]
            opt = torch.optim.Adam(module.parameters(), lr=hp.get("lr", self.lr))
            wd = float(hp.get("weight_decay", 0.0))
            module.train()
            for _ in range(int(hp.get("steps", self.steps))):
                loss = F.cross_entropy(module(xt), yt) + self.penalty(module, hp)
                if wd:
                    loss = loss + wd * sum((p ** 2).sum() for p in decay)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        module.eval()
        return module

    @staticmethod
    def _logits(module, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return module(torch.as_tensor(x, dtype=torch.float32)).double().numpy()

    def fit(self, prob_list, labels):
        arrs = _check_probs(prob_list)
        x = self._stack(arrs)
        y = np.asarray(labels).astype(np.int64)
        n, self.k, self.c = x.shape
        if y.shape != (n,):
            raise InputError(f"labels must have shape ({n},), got {y.shape}")
        if n == 0 or y.min() < 0 or y.max() >= self.c:
            raise InputError(f"{self.name} fusion needs labels in [0, {self.c}) for its {n} scores")
        cands = [dict(self.fixed)] if self.fixed else [dict(h) for h in self.candidates]
        self.cv, self.selected_by = [], "given" if self.fixed else "3-fold cross-validation on the fitting scores"
        if len(cands) > 1 and n >= 2 * self.folds:
            folds = cv_folds(n, self.folds, self.seed)
            for hp in cands:
                correct, nll = 0, 0.0
                for f in range(self.folds):
                    held = folds == f
                    m = self._train(x[~held], y[~held], hp)
                    p = _softmax(self._logits(m, x[held]))
                    correct += int((p.argmax(1) == y[held]).sum())
                    nll -= float(np.log(np.clip(p[np.arange(held.sum()), y[held]], 1e-12, None)).sum())
                self.cv.append((correct / n, nll / n))
            best = min(range(len(cands)), key=lambda i: (-self.cv[i][0], self.cv[i][1], i))
        else:
            if len(cands) > 1:
                self.selected_by = f"default (only {n} fitting scores, too few to cross-validate)"
            best = 0
        self.hp = cands[best]
        self.candidate_list = cands
        self.module = self._train(x, y, self.hp)
        return self

    def predict(self, prob_list) -> np.ndarray:
        if self.module is None:
            raise RuntimeError(f"{self.name} fusion is not fitted; call fit() on validation scores first")
        arrs = _check_probs(prob_list)
        x = self._stack(arrs)
        if x.shape[1:] != (self.k, self.c):
            raise InputError(f"{self.name} fusion was fitted on {self.k} streams x {self.c} classes, "
                             f"got {x.shape[1]} x {x.shape[2]}")
        return _softmax(self._logits(self.module, x))

    def _report(self) -> dict:
        return {"selected": self.hp, "selected_by": self.selected_by,
                "cv_top1": [{**h, "top1": round(a, 6)} for h, (a, _) in zip(self.candidate_list, self.cv)]}

    def state(self) -> dict:
        s = {"name": self.name, "seed": self.seed}
        if self.module is not None:
            s.update(self._report(), streams=self.k, classes=self.c,
                     _tensors={k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()})
        return s

    @classmethod
    def from_state(cls, state: dict):
        """The fitted fusion back from its :meth:`state` (with ``_tensors`` loaded)."""
        from .io import ModelFileError

        self = cls(seed=state.get("seed", 0))
        self.k, self.c, self.hp = int(state["streams"]), int(state["classes"]), dict(state["selected"])
        self.module = self.build(self.k, self.c, self.hp)
        tensors = state.get("_tensors")
        if tensors is None:
            raise ModelFileError(f"fusion {cls.name!r} has no weights (its fusion_{cls.name}.pt was not loaded)")
        want = {k: tuple(v.shape) for k, v in self.module.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in tensors.items()}
        if want != have:
            raise ModelFileError(f"fusion {cls.name!r}: the weights do not fit its recorded architecture "
                                 f"{self.hp} ({self.k} streams x {self.c} classes)")
        self.module.load_state_dict(tensors, strict=True)
        self.module.eval()
        return self


def _log_scores(x):
    import torch

    return torch.log(x.clamp_min(_LOG_FLOOR))


class LatePerClass(_LearnedFusion):
    """``f_c = sum_s w_{s,c} p_{s,c}``: one non-negative weight per class and stream
    (``w = exp(a)``, ``a`` initialised to ``log(1/K)``, i.e. late-avg), fitted by cross-entropy of
    the normalised ``f`` plus ``l2 * ||a - log(1/K)||^2``; ``l2`` is selected by cross-validation.
    Its state is the weights (``K x C`` numbers, JSON)."""

    name = "late-perclass"
    candidates = ({"l2": 1e-3}, {"l2": 1e-2}, {"l2": 1e-1})
    steps = 300
    lr = 5e-2

    def build(self, k, c, hp):
        import math

        import torch
        from torch import nn

        class PerClass(nn.Module):
            no_decay = ("a",)

            def __init__(self):
                super().__init__()
                self.a = nn.Parameter(torch.full((k, c), math.log(1.0 / k)))

            def forward(self, x):                         # x: (N, K, C) scores
                f = (x * self.a.exp()).sum(1)
                return torch.log(f.clamp_min(1e-12)) - torch.log(f.sum(1, keepdim=True).clamp_min(1e-12))

        return PerClass()

    def penalty(self, module, hp):
        import math

        return hp["l2"] * ((module.a - math.log(1.0 / module.a.shape[0])) ** 2).sum()

    @property
    def weights(self) -> np.ndarray | None:
        """``(K, C)``: weight of stream ``s`` on class ``c``."""
        return None if self.module is None else self.module.a.detach().exp().double().numpy()

    def predict(self, prob_list) -> np.ndarray:
        if self.module is None:
            raise RuntimeError("late-perclass fusion is not fitted; call fit() on validation scores first")
        return perclass_scores(prob_list, self.weights)

    def state(self) -> dict:
        s = {"name": self.name, "seed": self.seed}
        if self.module is not None:
            s.update(self._report(), weights=self.weights.tolist())
        return s

    @classmethod
    def from_state(cls, state: dict):
        import torch

        self = cls(seed=state.get("seed", 0))
        w = np.asarray(state["weights"], np.float64)
        self.k, self.c, self.hp = w.shape[0], w.shape[1], state.get("selected")
        self.module = self.build(self.k, self.c, {})
        with torch.no_grad():
            self.module.a.copy_(torch.as_tensor(np.log(np.clip(w, 1e-300, None))))
        return self


def perclass_scores(prob_list, weights) -> np.ndarray:
    """``f_c = sum_s w_{s,c} p_{s,c}`` normalised per row; ``weights`` is ``(K, C)``, ``>= 0``."""
    arrs = _check_probs(prob_list)
    w = np.asarray(weights, np.float64)
    if w.shape != (len(arrs), arrs[0].shape[1]):
        raise InputError(f"per-class weights of shape {w.shape} for {len(arrs)} streams x {arrs[0].shape[1]} classes")
    f = np.einsum("knc,kc->nc", np.stack(arrs), w)
    return f / np.maximum(f.sum(1, keepdims=True), 1e-300)


class LogitsMLP(_LearnedFusion):
    """An MLP on the concatenated per-stream logits (``log p``, floored at 1e-6):
    ``Linear(K*C, hidden) -> GELU -> Linear(hidden, C)``; ``hidden`` and ``weight_decay`` are
    selected by cross-validation."""

    name = "logits-mlp"
    candidates = ({"hidden": 32, "weight_decay": 1e-4}, {"hidden": 128, "weight_decay": 1e-2})
    steps = 200
    lr = 1e-2

    def build(self, k, c, hp):
        from torch import nn

        class MLP(nn.Module):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(k * c, int(hp["hidden"])), nn.GELU(),
                                         nn.Linear(int(hp["hidden"]), c))

            def forward(self, x):
                return self.net(_log_scores(x).flatten(1))

        return MLP()


class TokenTransformer(_LearnedFusion):
    """One token per stream (its logit vector -> ``Linear(C, dim)`` + a learned stream
    embedding), a CLS token, a one-layer pre-norm transformer encoder (``heads`` = 2) and an
    MLP head (``LayerNorm -> Linear(dim, dim) -> GELU -> Linear(dim, C)``) on the CLS output;
    ``weight_decay`` is selected by cross-validation (``dim`` 16: the inputs are K tokens of C numbers)."""

    name = "token-transformer"
    candidates = ({"dim": 16, "weight_decay": 1e-4}, {"dim": 16, "weight_decay": 1e-2})
    steps = 120
    lr = 1e-2

    def build(self, k, c, hp):
        import torch
        from torch import nn

        dim = int(hp["dim"])

        class Tokens(nn.Module):
            def __init__(self):
                super().__init__()
                self.proj = nn.Linear(c, dim)
                self.stream_embed = nn.Parameter(torch.randn(1, k, dim) * 0.02)
                self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
                layer = nn.TransformerEncoderLayer(d_model=dim, nhead=2, dim_feedforward=2 * dim, dropout=0.0,
                                                   activation="gelu", batch_first=True, norm_first=True)
                self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
                self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, c))

            def forward(self, x):                         # x: (N, K, C) -> tokens (N, 1 + K, dim)
                t = self.proj(_log_scores(x)) + self.stream_embed
                t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
                return self.head(self.encoder(t)[:, 0])

        return Tokens()


# ------------------------------------------------------------------------------ model directory

def save_fusion_tensors(states: dict, out) -> dict:
    """JSON-able copies of fusion ``states``: every ``_tensors`` is written to
    ``out/fusion_<name>.pt`` and replaced by ``"tensors": "fusion_<name>.pt"``."""
    from .io import save_tensors

    clean = {}
    for name, st in states.items():
        st = dict(st)
        tensors = st.pop("_tensors", None)
        if tensors is not None:
            fname = f"fusion_{name}.pt"
            save_tensors(tensors, Path(out) / fname)
            st["tensors"] = fname
        clean[name] = st
    return clean


def load_fusion_tensors(states: dict, model_dir) -> None:
    """Read every ``"tensors"`` file named in ``states`` into its ``_tensors`` (in place)."""
    from .io import ModelFileError, load_tensors

    for name, st in states.items():
        fname = st.get("tensors") if isinstance(st, dict) else None
        if fname is None:
            continue
        if not isinstance(fname, str) or Path(fname).name != fname:
            raise ModelFileError(f"fusion {name!r}: 'tensors' must be a file name in the model directory, got {fname!r}")
        st["_tensors"] = load_tensors(Path(model_dir) / fname)
