"""Lightweight classification heads over frozen per-segment features.

Every head takes per-segment features of shape ``(B, S, D)`` (a 2-D ``(B, D)`` input is
treated as ``S = 1``) and returns class logits ``(B, C)``. Segment consensus (TSN-style
averaging, or a temporal transformer) happens inside the head, so callers never average
segments themselves.

Heads are built by name through the :data:`~flowstore.heads.registry.HEADS` registry, with
keyword-only arguments::

    head = build_head("mlp", in_dim=2048, num_classes=101, num_segments=3, hidden=512)

Every built head carries ``head.config`` -- a JSON-serialisable dict holding exactly the
arguments of :func:`build_head` -- which :mod:`flowstore.heads.io` stores next to the
``state_dict`` so a checkpoint can be rebuilt without pickling any object.

``l2_normalize=True`` (accepted by every head) L2-normalises each segment's feature vector
(the last axis, per view and segment) inside ``forward``, so the same preprocessing applies
in training, in evaluation and after reloading a checkpoint. The unit vector is then
multiplied by the constant ``sqrt(D)`` (unit RMS per component): this keeps the inputs at
the scale PyTorch's default initialisation and AdamW learning rates (~1e-3) are tuned for --
a plain unit-norm input makes a linear head on D=2048 features learn ~45x slower -- while
only the feature direction reaches the head, i.e. the features stay invariant to scale
(e.g. to the motion speed a random frozen net's flow features grow with).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F
from ..errors import InputError
from .registry import HEADS, head_builder

__all__ = [
    "HEADS",
    "build_head",
    "ConsensusHead",
    "TemporalTransformerHead",
    "l2_normalize_features",
]


def l2_normalize_features(x: torch.Tensor, eps: float = 1e-12, *, rms: bool = False) -> torch.Tensor:
    """L2-normalise each feature vector along the last axis (zero vectors stay zero); with
    ``rms=True`` scale the result by ``sqrt(D)`` so each component has unit RMS."""
    y = F.normalize(x, p=2.0, dim=-1, eps=eps)
    return y * math.sqrt(x.shape[-1]) if rms else y


class _HeadBase(nn.Module):
    """Shared input handling: shape checks and optional per-segment L2 normalisation."""

    def __init__(self, *, in_dim: int, num_classes: int, num_segments: int, l2_normalize: bool):
        super().__init__()
        if int(in_dim) < 1 or int(num_classes) < 1 or int(num_segments) < 1:
            raise InputError(
                f"in_dim, num_classes and num_segments must be >= 1, got "
                f"{in_dim}, {num_classes}, {num_segments}"
            )
        self.in_dim = int(in_dim)
        self.num_classes = int(num_classes)
        self.num_segments = int(num_segments)
        self.l2_normalize = bool(l2_normalize)
        self.config: dict = {}  # filled by build_head

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.dim() != 3:
            raise InputError(
                f"{type(self).__name__} expects features (B, S, D) or (B, D), got shape "
                f"{tuple(x.shape)}; fold views into the batch (see evaluate.predict_scores)"
            )
        if x.shape[-1] != self.in_dim:
            raise InputError(f"feature dim {x.shape[-1]} != head in_dim {self.in_dim}")
        if self.l2_normalize:
            x = l2_normalize_features(x, rms=True)
        return x


class ConsensusHead(_HeadBase):
    """Average the segment features (TSN average consensus), then classify.

    ``hidden=None`` gives a linear classifier (dropout -> Linear); ``hidden=H`` an MLP
    (Linear(D, H) -> GELU -> dropout -> Linear(H, C)). Any number of segments is accepted
    at test time (averaging is order- and count-invariant).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        num_classes: int,
        num_segments: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        l2_normalize: bool = False,
    ):
        super().__init__(
            in_dim=in_dim, num_classes=num_classes, num_segments=num_segments,
            l2_normalize=l2_normalize,
        )
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        if hidden is None:
            self.mlp = None
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(self.in_dim, self.num_classes)
        else:
            hidden = int(hidden)
            if hidden < 1:
                raise InputError(f"hidden must be >= 1, got {hidden}")
            self.mlp = nn.Sequential(nn.Linear(self.in_dim, hidden), nn.GELU())
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(hidden, self.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x).mean(dim=1)  # segment consensus: average
        if self.mlp is not None:
            x = self.mlp(x)
        return self.fc(self.dropout(x))


class TemporalTransformerHead(_HeadBase):
    """A small pre-norm transformer encoder over the segment tokens.

    Each segment feature is projected to ``dim``, learned positional embeddings are added
    (so segment ORDER matters, unlike average consensus), and the sequence is pooled with
    a learned CLS token (``pooling="cls"``) or by averaging the output tokens
    (``pooling="mean"``). Inputs must have exactly ``num_segments`` segments.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        num_classes: int,
        num_segments: int,
        dim: int = 256,
        layers: int = 2,
        heads: int = 4,
        dropout: float = 0.1,
        pooling: str = "cls",
        mlp_ratio: float = 2.0,
        l2_normalize: bool = False,
    ):
        super().__init__(
            in_dim=in_dim, num_classes=num_classes, num_segments=num_segments,
            l2_normalize=l2_normalize,
        )
        dim, layers, heads = int(dim), int(layers), int(heads)
        if pooling not in ("cls", "mean"):
            raise InputError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        if dim < 1 or layers < 1 or heads < 1 or dim % heads:
            raise InputError(f"need dim >= 1, layers >= 1 and dim % heads == 0; got "
                             f"dim={dim}, layers={layers}, heads={heads}")
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        self.pooling = pooling
        self.proj = nn.Linear(self.in_dim, dim)
        n_tokens = self.num_segments + (1 if pooling == "cls" else 0)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pooling == "cls" else None
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens, dim))
        self.embed_dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model=dim, nhead=heads, dim_feedforward=max(1, int(round(dim * mlp_ratio))),
            dropout=dropout, activation="gelu", batch_first=True, norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, self.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)
        if x.shape[1] != self.num_segments:
            raise InputError(
                f"transformer head was built for {self.num_segments} segments, got {x.shape[1]}"
            )
        tokens = self.proj(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        tokens = self.embed_dropout(tokens + self.pos_embed)
        tokens = self.norm(self.encoder(tokens))
        pooled = tokens[:, 0] if self.pooling == "cls" else tokens.mean(dim=1)
        return self.fc(self.dropout(pooled))


def linear_head(*, in_dim, num_classes, num_segments, dropout=0.0, l2_normalize=False):
    """Average consensus -> (dropout) -> Linear."""
    return ConsensusHead(in_dim=in_dim, num_classes=num_classes, num_segments=num_segments,
                         hidden=None, dropout=dropout, l2_normalize=l2_normalize)


def mlp_head(*, in_dim, num_classes, num_segments, hidden=512, dropout=0.5, l2_normalize=False):
    """Average consensus -> Linear(D, hidden) -> GELU -> dropout -> Linear."""
    return ConsensusHead(in_dim=in_dim, num_classes=num_classes, num_segments=num_segments,
                         hidden=hidden, dropout=dropout, l2_normalize=l2_normalize)


def transformer_head(*, in_dim, num_classes, num_segments, dim=256, layers=2, heads=4,
                     dropout=0.1, pooling="cls", mlp_ratio=2.0, l2_normalize=False):
    """Temporal transformer over segment tokens (learned positions, CLS or mean pooling)."""
    return TemporalTransformerHead(
        in_dim=in_dim, num_classes=num_classes, num_segments=num_segments, dim=dim,
        layers=layers, heads=heads, dropout=dropout, pooling=pooling, mlp_ratio=mlp_ratio,
        l2_normalize=l2_normalize,
    )


def build_head(name: str, *, in_dim: int, num_classes: int, num_segments: int, **kw) -> nn.Module:
    """Build a registered head; the returned module has a JSON-able ``.config`` dict such that
    ``build_head(**head.config)`` rebuilds the same architecture."""
    model = head_builder(name)(in_dim=int(in_dim), num_classes=int(num_classes),
                               num_segments=int(num_segments), **kw)
    model.config = {"name": name, "in_dim": int(in_dim), "num_classes": int(num_classes),
                    "num_segments": int(num_segments), **kw}
    return model
