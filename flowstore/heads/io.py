"""Head checkpoints without pickled objects.

A checkpoint is two files side by side:

- ``<name>.pt``: ``torch.save(model.state_dict())`` -- tensors only, loaded back with
  ``torch.load(..., weights_only=True)``;
- ``<name>.json``: ``{"format": "flowstore-head", "version": 1, "head": head.config,
  "extra": {...}}`` where ``head.config`` is the :func:`~flowstore.heads.models.build_head`
  call that rebuilds the architecture, and ``extra`` is free JSON metadata (class names,
  training config, metrics, ...).

``path`` may be given with or without the ``.pt`` suffix.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .models import build_head
from ..errors import InputError
from ..io import atomic_write

__all__ = ["save_head", "load_head", "read_head_config", "checkpoint_paths"]

FORMAT = "flowstore-head"
VERSION = 1


def checkpoint_paths(path) -> tuple[Path, Path]:
    """``(weights .pt, config .json)`` paths for a checkpoint name."""
    p = Path(os.fspath(path))
    if p.suffix in (".pt", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".pt"), p.with_name(p.name + ".json")


def save_head(model: torch.nn.Module, path, *, extra: dict | None = None) -> tuple[Path, Path]:
    """Write ``<path>.pt`` (state_dict) and ``<path>.json`` (config + ``extra``); returns both paths.

    ``model`` must come from :func:`~flowstore.heads.models.build_head` (it needs ``.config``).
    """
    config = getattr(model, "config", None)
    if not config or "name" not in config:
        raise InputError("model has no build config; build heads with flowstore.heads.build_head")
    weights, cfg = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    doc = {"format": FORMAT, "version": VERSION, "head": config, "extra": extra or {},
           "torch": torch.__version__}
    text = json.dumps(doc, indent=2, sort_keys=True)  # fails early on non-JSON extra
    atomic_write(weights, lambda p: torch.save(state, p))
    atomic_write(cfg, lambda p: p.write_text(text + "\n", encoding="utf-8"))
    return weights, cfg


def read_head_config(path) -> dict:
    """The checkpoint's JSON document (``head`` build config and ``extra`` metadata)."""
    _, cfg = checkpoint_paths(path)
    doc = json.loads(cfg.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise InputError(f"{cfg} is not a flowstore head checkpoint")
    if doc.get("version", 0) > VERSION:
        raise InputError(f"{cfg} has checkpoint version {doc['version']}; this flowstore reads <= {VERSION}")
    return doc


def load_head(path, *, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the head from ``<path>.json`` and load ``<path>.pt`` (strictly, weights only).

    The model is returned in eval mode; its metadata is at ``read_head_config(path)["extra"]``."""
    weights, _ = checkpoint_paths(path)
    doc = read_head_config(path)
    config = dict(doc["head"])
    name = config.pop("name")
    model = build_head(name, **config)
    state = torch.load(weights, map_location=map_location, weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()
