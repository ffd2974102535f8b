"""Fine-tuning (``train-head --init-from MODEL_DIR``): start a head from one trained on another
dataset (Simonyan & Zisserman's "fine-tuning a network trained on UCF101 on HMDB51").

:func:`read_init` reads the model directory's one head (``head.pt``: a single-stream model or a
multi-task one); :func:`plan_init` checks it against the new training run -- the same head type,
the same feature dimension (else an error naming both feature files) -- and says which weights
start from it: all of them when the classes are the same (same names, same order), every one
but the output layer otherwise (the output layer is re-created: its rows meant other classes).
The copying itself is :func:`load_matching` (by name and shape).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import InputError, MissingFileError

__all__ = ["InitFrom", "load_matching", "output_keys", "plan_init", "read_init"]

#: build arguments that depend on the data, not on the head's architecture
_DATA_ARGUMENTS = ("name", "in_dim", "num_classes", "num_segments", "task_classes", "l2_normalize")


def load_matching(model: nn.Module, state: dict) -> list[str]:
    """Copy every tensor of ``state`` whose name and shape the model has (fine-tuning: the body of
    a head trained on another dataset; an output layer of another size stays fresh). Returns the
    names copied; none at all is an error."""
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not take:
        raise InputError("--init-from: no weight of that head fits this one (another head type or feature dimension)")
    model.load_state_dict(take, strict=False)
    return sorted(take)


def output_keys(config: dict) -> set[str]:
    """The output layer's tensor names of a head built from ``config`` (``head.config``): the
    ones whose shape changes with the class count (every dataset's layer of a multi-task head)."""
    from .models import build_head

    cfg = dict(config)
    name = cfg.pop("name")
    if "task_classes" in cfg and cfg["task_classes"] is not None:
        return {k for k in build_head(name, **cfg).state_dict() if k.startswith("outputs.")}
    a = build_head(name, **cfg).state_dict()
    b = build_head(name, **{**cfg, "num_classes": cfg["num_classes"] + 1}).state_dict()
    return {k for k in a if tuple(a[k].shape) != tuple(b[k].shape)}


@dataclass
class InitFrom:
    """The head of a model directory to start from."""

    model_dir: str
    config: dict          # the head's build config (head.config)
    state: dict           # its weights
    classes: list         # the classes it was trained on (a multi-task head: every dataset's, in order)
    features: str         # the feature file it was trained on (the first dataset's)


def read_init(model_dir) -> InitFrom:
    """The one head of ``model_dir`` (a train-head output directory)."""
    from .io import load_head, read_json_file

    d = Path(os.fspath(model_dir))
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise MissingFileError(f"--init-from {d}: not a train-head output directory (no config.json)")
    cfg = read_json_file(cfg_path, "model config")
    if not (d / "head.pt").is_file():
        raise InputError(f"--init-from {d}: it has no single head.pt (a fused model keeps one head per stream); "
                         "start from a model trained on one --features file")
    head = load_head(d / "head")
    classes = [c for t in cfg["tasks"] for c in t["classes"]] if cfg.get("tasks") else list(cfg.get("classes") or [])
    streams = cfg.get("streams") or [{}]
    return InitFrom(str(d), dict(head.config), head.state_dict(), classes, str(streams[0].get("features")))


def plan_init(init: InitFrom, head: str, head_kwargs: dict, *, in_dim: int, features: str,
              classes: list) -> tuple[dict, dict, str]:
    """``(state, head_kwargs, note)``: the weights to start from, the head options (the
    architecture of ``init``; a conflicting option given is an error) and what the output says."""
    if init.config["name"] != head:
        raise InputError(f"--init-from {init.model_dir} holds a {init.config['name']} head; fine-tune it with "
                         f"--head {init.config['name']} (not {head})")
    if int(init.config["in_dim"]) != int(in_dim):
        raise InputError(f"--init-from {init.model_dir}: its head takes {init.config['in_dim']}-dimensional features "
                         f"({init.features}), but {features} has {in_dim}-dimensional ones; fine-tune on features of "
                         "the same backbone")
    options = {k: v for k, v in init.config.items() if k not in _DATA_ARGUMENTS}
    for key, value in head_kwargs.items():
        if key in options and options[key] != value:
            raise InputError(f"--{key} {value} differs from the --init-from head's {options[key]} "
                             f"({init.model_dir}); drop it to fine-tune that head")
    kwargs = {**head_kwargs, **options}
    state = dict(init.state)
    if list(init.classes) == list(classes):
        note = f"every weight starts from {init.model_dir} (the same {len(classes)} classes: the output layer too)"
    else:
        for key in output_keys(init.config):
            state.pop(key, None)
        why = (f"{len(init.classes)} classes there, {len(classes)} here" if len(init.classes) != len(classes)
               else "the same number of classes, but other names or another order")
        note = f"the output layer is new ({why}); every other weight starts from {init.model_dir}"
    return state, kwargs, note
