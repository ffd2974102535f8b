"""Two-stream (or K-stream) fusion.

Score-level fusion works on per-stream class-probability arrays ``(N, C)`` (softmax
outputs of :func:`flowstore.heads.evaluate.predict_scores`), given as a list in a fixed
stream order (e.g. ``[rgb, flow]``):

- :func:`late_average` -- mean of the streams' softmax scores;
- :func:`late_weighted` -- weighted mean; :func:`fit_late_weights` picks the weights on
  validation scores by grid search (``w in [0, 1]`` for 2 streams, a simplex grid for more);
- :class:`SVMFusion` -- Simonyan & Zisserman (2014): a linear SVM (sklearn ``LinearSVC``)
  on the stacked, per-stream L2-normalised class scores. Fit it on held-out (validation)
  scores: training-set scores of a head are over-confident.

Feature-level fusion: :func:`early_concat` concatenates the streams' features along the
feature axis; a single head is then trained on the result.

:data:`FUSIONS` maps the names ``none``, ``late-avg``, ``late-weighted``, ``svm`` and
``early-concat`` (and, registered by reference, the learned score fusions of
:mod:`.learned_fusion` and ``mid-conv`` of :mod:`.midconv`, ``level = "maps"``: it trains on
spatial feature maps) to classes with one interface (each registered by :func:`register_fusion`
under its ``name``); :func:`build_fusion` builds one by name::

    fusion = build_fusion(name)
    if fusion.level == "features":               # early-concat
        feats = fusion.combine_features([rgb_feats, flow_feats])   # train ONE head on this
        ...                                      # and score it: a single score array
        fused = fusion.fit([val_scores], y_val).predict([test_scores])
    else:                                        # one head per stream
        fused = fusion.fit([rgb_val, flow_val], y_val).predict([rgb_test, flow_test])
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
from ..errors import InputError
from ..registry import Registry, resolve

__all__ = [
    "FUSIONS",
    "build_fusion",
    "list_fusions",
    "register_fusion",
    "fusion_class",
    "late_average",
    "late_weighted",
    "fit_late_weights",
    "early_concat",
    "l2_rows",
    "NoFusion",
    "LateAverage",
    "LateWeighted",
    "SVMFusion",
    "EarlyConcat",
]


def _check_probs(prob_list, *, min_streams: int = 1) -> list[np.ndarray]:
    if isinstance(prob_list, np.ndarray) and prob_list.ndim == 2:
        raise TypeError("pass a list of per-stream score arrays, not a single array")
    arrs = [np.asarray(p, dtype=np.float64) for p in prob_list]
    if len(arrs) < min_streams:
        raise InputError(f"need at least {min_streams} stream(s), got {len(arrs)}")
    for i, a in enumerate(arrs):
        if a.ndim != 2:
            raise InputError(f"stream {i}: scores must be (N, C), got shape {a.shape}")
        if a.shape != arrs[0].shape:
            raise InputError(f"stream {i} has shape {a.shape}, stream 0 has {arrs[0].shape}")
    return arrs


def l2_rows(a, eps: float = 1e-12) -> np.ndarray:
    """Divide every row (last axis) by its L2 norm (zero rows stay zero)."""
    a = np.asarray(a, dtype=np.float64)
    return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), eps)


def late_average(prob_list: Sequence) -> np.ndarray:
    """Average of the streams' softmax scores: ``mean_i p_i``, shape (N, C)."""
    arrs = _check_probs(prob_list)
    return np.mean(np.stack(arrs), axis=0)


def late_weighted(prob_list: Sequence, weights: Sequence[float]) -> np.ndarray:
    """Weighted average ``sum_i w_i p_i / sum_i w_i`` (weights >= 0, not all zero)."""
    arrs = _check_probs(prob_list)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(arrs),):
        raise InputError(f"{w.size} weights for {len(arrs)} streams")
    if np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise InputError(f"weights must be finite, >= 0 and not all zero, got {w.tolist()}")
    return np.tensordot(w / w.sum(), np.stack(arrs), axes=1)


def _simplex_grid(k: int, n: int) -> np.ndarray:
    """All weight vectors with k non-negative entries that are multiples of 1/n, summing to 1."""
    # stars and bars: k-1 bar positions among n+k-1 slots; parts = gaps between bars
    rows = [np.diff(np.array((-1,) + bars + (n + k - 1,))) - 1
            for bars in itertools.combinations(range(n + k - 1), k - 1)]
    return np.array(rows, dtype=np.float64) / n


def fit_late_weights(prob_list: Sequence, labels, *, step: float = 0.05,
                     max_candidates: int = 200_000) -> np.ndarray:
    """Grid-search stream weights on (validation) scores; returns weights summing to 1.

    For 2 streams the grid is ``(w, 1 - w)`` with ``w = 0, step, ..., 1``; for K streams all
    points of the simplex whose coordinates are multiples of ``step``. The winner has the
    highest top-1 accuracy; ties go to the lower mean negative log-likelihood, then to the
    weights closest to uniform.
    """
    arrs = _check_probs(prob_list, min_streams=1)
    y = np.asarray(labels).astype(np.int64)
    if y.shape != (arrs[0].shape[0],):
        raise InputError(f"labels must have shape ({arrs[0].shape[0]},), got {y.shape}")
    k = len(arrs)
    if k == 1:
        return np.ones(1)
    steps = round(1.0 / step)
    if steps < 1 or abs(steps * step - 1.0) > 1e-9:
        raise InputError(f"step must divide 1 (e.g. 0.1, 0.05), got {step}")
    from math import comb

    if comb(steps + k - 1, k - 1) > max_candidates:
        raise InputError(f"{comb(steps + k - 1, k - 1)} weight candidates for {k} streams; use a larger step")
    grid = _simplex_grid(k, steps)                      # (G, K)
    stacked = np.stack(arrs)                            # (K, N, C)
    fused = np.tensordot(grid, stacked, axes=1)         # (G, N, C)
    acc = (fused.argmax(-1) == y).mean(axis=1)
    p_true = np.take_along_axis(fused, y[None, :, None], axis=2)[..., 0]
    nll = -np.log(np.clip(p_true, 1e-12, None)).mean(axis=1)
    dist = np.linalg.norm(grid - 1.0 / k, axis=1)
    best = np.lexsort((dist, nll, -acc))[0]
    return grid[best]


def early_concat(feat_list: Sequence, *, normalize_each: bool = True) -> np.ndarray:
    """Concatenate stream features along the feature (last) axis.

    All streams must share the leading shape ((N, S) or (N, V, S)). With ``normalize_each``
    (default) every stream's feature vectors are first L2-normalised along the last axis,
    so that neither stream dominates by scale (random/frozen nets' flow features grow with
    motion speed); the head may L2-normalise the concatenation again.
    """
    if len(feat_list) < 1:
        raise InputError("need at least one stream")
    arrs = [np.asarray(f) for f in feat_list]
    lead = arrs[0].shape[:-1]
    for i, a in enumerate(arrs):
        if a.ndim not in (3, 4):
            raise InputError(f"stream {i}: features must be (N, S, D) or (N, V, S, D), got {a.shape}")
        if a.shape[:-1] != lead:
            raise InputError(f"stream {i} has leading shape {a.shape[:-1]}, stream 0 has {lead}")
    arrs = [a.astype(np.float32, copy=False) for a in arrs]
    if normalize_each:
        arrs = [a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), np.float32(1e-12))
                for a in arrs]
    return np.concatenate(arrs, axis=-1)


#: fusion name -> class (a :class:`_Fusion` subclass), filled by :func:`register_fusion`
FUSIONS: Registry[type] = Registry("fusion")


def register_fusion(cls: type) -> type:
    """Class decorator registering a fusion under its ``name``."""
    return FUSIONS.register(cls.name, cls)


def score_fusions() -> list[str]:
    """Fusions of several streams' scores, in registration order (train-head compares them all
    on the validation split)."""
    return [name for name in FUSIONS if fusion_class(name).level == "scores"
            and fusion_class(name).combines]


def fusion_class(name: str) -> type:
    """The class of fusion ``name`` (importing its module when it is registered by reference)."""
    return resolve(FUSIONS[name])


def list_fusions() -> list[str]:
    return FUSIONS.names()


class _Fusion:
    """One interface for every fusion: ``level``, ``fit(prob_list, labels)``, ``predict(prob_list)``."""

    name = ""
    level = "scores"  # "scores": combine per-stream scores; "features": combine features
    combines = True   # False for "none", which passes one stream through

    def fit(self, prob_list, labels):
        """Learn fusion parameters from (validation) scores; returns self."""
        _check_probs(prob_list)
        return self

    def predict(self, prob_list) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def state(self) -> dict:
        """JSON-serialisable parameters (for reports / re-creation)."""
        return {"name": self.name}


@register_fusion
class NoFusion(_Fusion):
    """A single stream, unchanged. With several streams pass ``stream=i`` to pick one."""

    name = "none"
    combines = False

    def __init__(self, stream: int | None = None):
        self.stream = stream

    def predict(self, prob_list) -> np.ndarray:
        arrs = _check_probs(prob_list)
        if self.stream is None:
            if len(arrs) != 1:
                raise InputError(f"fusion 'none' got {len(arrs)} streams; pass stream=<index>")
            return arrs[0]
        if not 0 <= self.stream < len(arrs):
            raise InputError(f"stream {self.stream} out of range for {len(arrs)} streams")
        return arrs[self.stream]

    def state(self) -> dict:
        return {"name": self.name, "stream": self.stream}


@register_fusion
class LateAverage(_Fusion):
    """:func:`late_average`; nothing to fit."""

    name = "late-avg"

    def predict(self, prob_list) -> np.ndarray:
        return late_average(prob_list)


@register_fusion
class LateWeighted(_Fusion):
    """:func:`late_weighted` with fixed ``weights``, or weights fitted by :func:`fit_late_weights`."""

    name = "late-weighted"

    def __init__(self, weights: Sequence[float] | None = None, step: float = 0.05):
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.step = step

    def fit(self, prob_list, labels):
        self.weights = fit_late_weights(prob_list, labels, step=self.step)
        return self

    def predict(self, prob_list) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("late-weighted fusion has no weights: pass weights= or call fit()")
        return late_weighted(prob_list, self.weights)

    def state(self) -> dict:
        return {"name": self.name, "weights": None if self.weights is None else self.weights.tolist()}


@register_fusion
class SVMFusion(_Fusion):
    """Linear SVM on stacked per-stream L2-normalised class scores (Simonyan & Zisserman).

    Input features per video: ``concat_i(p_i / ||p_i||_2)`` of length K*C. :meth:`decision_function`
    gives SVM margins (N, C); :meth:`predict` returns their softmax, a score array usable
    with :func:`~flowstore.heads.evaluate.metrics` (same ranking as the margins). Classes
    missing from the fitting labels get a score of 0.
    """

    name = "svm"

    def __init__(self, C: float = 1.0, max_iter: int = 10_000, seed: int = 0):
        self.C = float(C)
        self.max_iter = int(max_iter)
        self.seed = int(seed)
        self.svm = None
        self.num_classes = None

    @staticmethod
    def stack(prob_list) -> np.ndarray:
        arrs = _check_probs(prob_list)
        return np.concatenate([l2_rows(a) for a in arrs], axis=1)

    def fit(self, prob_list, labels):
        from sklearn.svm import LinearSVC

        x = self.stack(prob_list)
        y = np.asarray(labels).astype(np.int64)
        if y.shape != (x.shape[0],):
            raise InputError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
        self.num_classes = np.asarray(prob_list[0]).shape[1]
        if y.min() < 0 or y.max() >= self.num_classes:
            raise InputError(f"labels out of range [0, {self.num_classes})")
        if len(np.unique(y)) < 2:
            raise InputError("SVM fusion needs at least two classes in the fitting labels")
        self.svm = LinearSVC(C=self.C, max_iter=self.max_iter, random_state=self.seed, dual="auto")
        self.svm.fit(x, y)
        return self

    def decision_function(self, prob_list) -> np.ndarray:
        if self.svm is None:
            raise RuntimeError("SVM fusion is not fitted; call fit() on validation scores first")
        x = self.stack(prob_list)
        if x.shape[1] != self.svm.n_features_in_:
            raise InputError(f"got {x.shape[1]} stacked scores, SVM was fitted on {self.svm.n_features_in_}")
        d = self.svm.decision_function(x)
        if d.ndim == 1:  # binary problem: sklearn returns the margin of classes_[1]
            d = np.stack([-d, d], axis=1)
        out = np.full((x.shape[0], self.num_classes), -np.inf)
        out[:, self.svm.classes_] = d
        return out

    def predict(self, prob_list) -> np.ndarray:
        d = self.decision_function(prob_list)
        d = d - d.max(axis=1, keepdims=True)
        e = np.exp(d)
        return e / e.sum(axis=1, keepdims=True)

    def state(self) -> dict:
        s = {"name": self.name, "C": self.C}
        if self.svm is not None:
            s.update(classes=self.svm.classes_.tolist(), coef=self.svm.coef_.tolist(),
                     intercept=self.svm.intercept_.tolist())
        return s


@register_fusion
class EarlyConcat(_Fusion):
    """Feature-level fusion: :meth:`combine_features` = :func:`early_concat`; train one head
    on the result. Score-level :meth:`predict` then expects that head's single score array."""

    name = "early-concat"
    level = "features"

    def __init__(self, normalize_each: bool = True):
        self.normalize_each = bool(normalize_each)

    def combine_features(self, feat_list) -> np.ndarray:
        return early_concat(feat_list, normalize_each=self.normalize_each)

    def predict(self, prob_list) -> np.ndarray:
        arrs = _check_probs(prob_list)
        if len(arrs) != 1:
            raise InputError("early-concat fusion scores come from ONE head trained on the "
                             f"concatenated features; got {len(arrs)} score arrays")
        return arrs[0]

    def state(self) -> dict:
        return {"name": self.name, "normalize_each": self.normalize_each}


def build_fusion(name: str, **kw) -> _Fusion:
    """Instantiate a fusion from :data:`FUSIONS` by name."""
    return fusion_class(name)(**kw)


# the learned fusions live in their own module (torch, imported when fitted); registered by
# reference so that list_fusions() and `train-head --fusion` offer them without importing it
for _name, _cls in (("late-perclass", "LatePerClass"), ("logits-mlp", "LogitsMLP"),
                    ("token-transformer", "TokenTransformer")):
    FUSIONS.register(_name, f"{__package__}.learned_fusion:{_cls}")
# mid-level fusion of spatial feature maps (map stores, `features --pool none`); it trains on the
# maps instead of per-stream heads
FUSIONS.register("mid-conv", f"{__package__}.midconv:MidConvFusion")
