"""Head checkpoints without pickled objects.

A checkpoint is two files side by side:

- ``<name>.pt``: ``torch.save(model.state_dict())`` -- tensors only, loaded back with
  ``torch.load(..., weights_only=True)``;
- ``<name>.json``: ``{"format": "flowstore-head", "version": 1, "head": head.config,
  "extra": {...}}`` where ``head.config`` is the :func:`~flowstore.heads.models.build_head`
  call that rebuilds the architecture, and ``extra`` is free JSON metadata (class names,
  training config, metrics, ...).

``path`` may be given with or without the ``.pt`` suffix.

Reading never trusts either file: a missing, cut-short or garbled file, a JSON document without
a usable build config, or weights whose names and shapes do not fit that config all raise
:class:`ModelFileError` (or :class:`~flowstore.errors.MissingFileError`) naming the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .models import build_head
from ..errors import InputError, MissingFileError
from ..io import atomic_write

__all__ = ["ModelFileError", "save_head", "save_tensors", "load_tensors", "load_head", "read_head_config", "read_json_file", "checkpoint_paths"]

FORMAT = "flowstore-head"
VERSION = 1


class ModelFileError(InputError):
    """A head checkpoint or model-directory file that is damaged or does not fit the rest."""


def read_json_file(path: Path, what: str) -> dict:
    """A JSON object from ``path`` (a head's ``.json``, a model directory's ``config.json`` ...);
    a missing, unreadable or garbled file, or one that is not an object, is a clear error."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MissingFileError(f"{what} is missing: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read {what} ({exc})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: {what} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                             "the file is damaged or cut short") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: {what} must be a JSON object, got {type(doc).__name__}")
    return doc


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
    doc = read_json_file(cfg, "head config")
    if doc.get("format") != FORMAT:
        raise ModelFileError(f"{cfg} is not a flowstore head checkpoint")
    version = doc.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{cfg}: version must be an integer, got {version!r}")
    if version > VERSION:
        raise ModelFileError(f"{cfg} has checkpoint version {version}; this flowstore reads <= {VERSION}")
    head = doc.get("head")
    if not isinstance(head, dict) or not isinstance(head.get("name"), str):
        raise ModelFileError(f"{cfg}: 'head' must be the head's build config (an object with a 'name')")
    for key in ("in_dim", "num_classes", "num_segments"):
        value = head.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelFileError(f"{cfg}: head.{key} must be a positive integer, got {value!r}")
    if not isinstance(doc.get("extra", {}), dict):
        raise ModelFileError(f"{cfg}: 'extra' must be an object")
    return doc


def _build(doc: dict, cfg: Path) -> torch.nn.Module:
    from .registry import HEADS

    config = dict(doc["head"])
    name = config.pop("name")
    if name not in HEADS:
        raise ModelFileError(f"{cfg}: {HEADS.unknown(name).message}")
    try:
        return build_head(name, **config)
    except (TypeError, ValueError) as exc:  # an option the builder does not take, or a bad value
        raise ModelFileError(f"{cfg}: cannot build the {name} head from its config ({exc})") from None


def _load_state(weights: Path, map_location) -> dict:
    if not weights.is_file():
        raise MissingFileError(f"head weights are missing: {weights}")
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds (zip, unpickling, EOF) for a damaged file
        # torch's first sentence says what failed; the rest is advice (e.g. weights_only=False) we do not give
        detail = (str(exc).splitlines() or [""])[0].split(". ")[0][:120]
        raise ModelFileError(f"{weights}: cannot read the head weights ({type(exc).__name__}: {detail}); "
                             "the file is damaged or cut short") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelFileError(f"{weights} does not hold a state dict (names -> tensors)")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # a trained head never has them: changed bytes, or a run that diverged
        raise ModelFileError(f"{weights}: non-finite values (NaN or inf) in {bad[:3]}")
    return state


def _check_state(model: torch.nn.Module, state: dict, weights: Path, cfg: Path) -> None:
    """The weights' names and shapes are exactly the ones the config builds."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing {k}" for k in want if k not in have]
    problems += [f"unexpected {k}" for k in have if k not in want]
    problems += [f"{k} is {list(have[k])}, the config gives {list(want[k])}"
                 for k in want if k in have and have[k] != want[k]]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ModelFileError(f"{weights} does not match {cfg.name}: {'; '.join(problems[:3])}{more}")


def load_head(path, *, map_location: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild the head from ``<path>.json`` and load ``<path>.pt`` (strictly, weights only).

    The model is returned in eval mode; its metadata is at ``read_head_config(path)["extra"]``."""
    weights, cfg = checkpoint_paths(path)
    doc = read_head_config(path)
    model = _build(doc, cfg)
    state = _load_state(weights, map_location)
    _check_state(model, state, weights, cfg)
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()


def save_tensors(state: dict, path) -> Path:
    """Write a dict of tensors (e.g. a learned fusion's state_dict) to ``path`` atomically; read it
    back with :func:`load_tensors`."""
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in state.items()}
    atomic_write(path, lambda p: torch.save(state, p))
    return path


def load_tensors(path, *, map_location: str | torch.device = "cpu") -> dict:
    """A dict of tensors written by :func:`save_tensors` (weights only; a missing, damaged or
    non-finite file is a :class:`ModelFileError` / :class:`~flowstore.errors.MissingFileError`)."""
    return _load_state(Path(os.fspath(path)), map_location)
