"""Frozen image backbones from timm, for RGB frames and for stacked optical flow.

Every backbone is a timm model built with ``num_classes=0``: its forward pass returns the
pooled feature vector ``(B, D)``. Backbones are always returned frozen (``requires_grad``
off) and in eval mode (BatchNorm uses its running statistics).

Builders take keyword arguments only::

    model, info = build_backbone("resnet18", in_chans=3, weights="random", seed=0)
    model, info = build_backbone("resnet50", in_chans=10, weights="resnet50.pth")  # flow, L = 5

``weights``:

``"random"``
    timm's random initialisation, seeded by ``seed`` (the caller's RNG state is untouched).
    Residual networks are built with ``zero_init_last=False``: with timm's default the last
    BatchNorm of every residual branch starts at zero, so a *random, frozen* ResNet's blocks
    are identities and its features are little more than the stem's. A flow backbone
    (``in_chans = 2L``) gets its own random first layer over the 2L channels.
a path
    A local weights file: ``.safetensors`` (read with safetensors) or anything else with
    ``torch.load(..., weights_only=True)`` (no pickled code runs). A checkpoint dict holding
    ``state_dict`` / ``model`` / ``state_dict_ema`` is unwrapped and a ``module.`` prefix
    (DataParallel) stripped; classifier weights are dropped (the backbone has no classifier).
    If the file's first convolution has 3 input channels and the backbone needs another
    number (a flow backbone with 2L channels), TSN's **cross-modality initialisation** is
    applied: the RGB filters are averaged over their input channels and the average is
    replicated over the new channels (:func:`cross_modality_weight`). The rest must match
    the architecture exactly (strict loading); a mismatch names the offending keys.

``info`` is a JSON-serialisable description for the feature store's provenance: timm name
and version, input channels, feature dimension, the weights' source and SHA-256 (of the
file, or of the random state dict's tensors), and how the first layer was initialised.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from ..errors import EnvironmentProblem, InputError
from ..io import file_sha256, load_weights_object
from ..registry import Registry

__all__ = [
    "BACKBONES",
    "build_backbone",
    "list_backbones",
    "register_backbone",
    "cross_modality_weight",
    "load_weights_file",
    "load_state_into",
    "freeze",
    "file_sha256",
    "state_dict_sha256",
    "WeightsError",
]


class WeightsError(InputError):
    """A weights file that is missing, unreadable or does not fit the backbone."""


def _timm_builder(timm_name: str, *, zero_init_last: bool | None = False) -> Callable[..., nn.Module]:
    def build(*, in_chans: int) -> nn.Module:
        timm = import_timm()

        kw = {"pretrained": False, "num_classes": 0, "in_chans": int(in_chans)}
        if zero_init_last is not None:
            kw["zero_init_last"] = zero_init_last
        return timm.create_model(timm_name, **kw)

    build.__doc__ = f"timm {timm_name!r}" + ("" if zero_init_last is None else f", zero_init_last={zero_init_last}")
    return build


#: backbone name -> keyword-only builder ``(*, in_chans) -> nn.Module`` (random weights,
#: ``num_classes=0``). Any other timm model name works too (see :func:`build_backbone`).
BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone")


def register_backbone(name: str, builder: Callable[..., nn.Module]) -> None:
    BACKBONES.register(name, builder)


def list_backbones() -> list[str]:
    """The registered backbones; ``build_backbone`` also takes any other timm model name."""
    return BACKBONES.names()


register_backbone("resnet18", _timm_builder("resnet18"))
register_backbone("resnet34", _timm_builder("resnet34"))
register_backbone("resnet50", _timm_builder("resnet50"))
register_backbone("resnet101", _timm_builder("resnet101"))
register_backbone("efficientnet_b0", _timm_builder("efficientnet_b0", zero_init_last=None))
register_backbone("efficientnet_b3", _timm_builder("efficientnet_b3", zero_init_last=None))
register_backbone("mobilenetv3_large_100", _timm_builder("mobilenetv3_large_100", zero_init_last=None))


def _make_model(name: str, *, in_chans: int) -> tuple[nn.Module, bool]:
    """The random-initialised model and whether it was built with ``zero_init_last=False``."""
    if name in BACKBONES:
        builder = BACKBONES[name]
        return builder(in_chans=in_chans), "zero_init_last" in (builder.__doc__ or "")
    timm = import_timm()

    if not timm.is_model(name):
        raise BACKBONES.unknown(name, also=" or any timm model name")
    try:  # residual families take zero_init_last; others reject the keyword
        return _timm_builder(name)(in_chans=in_chans), True
    except TypeError as exc:
        if "zero_init_last" not in str(exc):
            raise
        return _timm_builder(name, zero_init_last=None)(in_chans=in_chans), False


def state_dict_sha256(state: dict) -> str:
    """SHA-256 over the tensors of a state dict (names, dtypes, shapes and bytes, sorted by name)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cross_modality_weight(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """TSN cross-modality initialisation of a first convolution ``(O, 3, kh, kw)`` (or a 3D one,
    ``(O, 3, kt, kh, kw)``: I3D's flow stream): the mean over the input channels, replicated
    ``in_chans`` times -> ``(O, in_chans, kh, kw)``."""
    if weight.dim() not in (4, 5):
        raise InputError(f"expected a conv weight (O, I, kh, kw) or (O, I, kt, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    mean = weight.mean(dim=1, keepdim=True)
    return mean.repeat(1, int(in_chans), *([1] * (weight.dim() - 2))).contiguous()


_WRAPPERS = ("state_dict", "model", "state_dict_ema", "model_ema", "module", "model_state")


def load_weights_file(path) -> dict:
    """A state dict of tensors from ``.safetensors`` or a ``torch.save`` file (weights only)."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p} (use --weights random for a randomly "
                           "initialised backbone)")
    obj = load_weights_object(p, WeightsError)
    for _ in range(3):  # unwrap {"state_dict": {...}} style checkpoints
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{p} does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _first_conv_key(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("first_conv")
    if isinstance(name, (list, tuple)):
        name = name[0] if name else None
    if name:
        return f"{name}.weight"
    for key, value in model.state_dict().items():  # fallback: the first 4-D weight
        if value.dim() == 4:
            return key
    return None


def _classifier_prefixes(model: nn.Module) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier") or []
    if isinstance(names, str):
        names = [names]
    return [f"{n}." for n in names]


def import_timm():
    """``import timm``, or EnvironmentProblem (exit 2) saying how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise EnvironmentProblem(f"backbones need the 'timm' package, which is not installed ({exc}): "
                                 "pip install timm (or install flowstore with its default dependencies)") from None
    return timm


def load_state_into(model: nn.Module, state: dict, path, name: str, *, first: str | None,
                    drop=()) -> tuple[dict, str]:
    """Load ``state`` (read from ``path``) into ``model`` strictly, after dropping the keys under
    the classifier prefixes ``drop`` and adapting the first convolution ``first`` from 3 (RGB)
    to the model's input channels by cross-modality init. Returns the ``weights`` provenance
    (path, SHA-256) and how the first layer was initialised (``loaded`` | ``cross-modality``)."""
    path = Path(os.fspath(path))
    drop = tuple(drop)
    state = {k: v for k, v in state.items() if not (drop and k.startswith(drop))}
    first_layer = "loaded"
    if first is not None and first in state:
        w = state[first]
        want = model.state_dict()[first].shape
        if w.dim() in (4, 5) and w.shape[1] != want[1]:
            if w.shape[1] != 3:
                raise WeightsError(
                    f"{path}: first layer {first} has {w.shape[1]} input channels; the backbone "
                    f"needs {want[1]} and cross-modality init only adapts 3-channel (RGB) weights")
            state[first] = cross_modality_weight(w, want[1]).to(w.dtype)
            first_layer = "cross-modality"
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise WeightsError(f"{path} does not fit backbone {name!r}: {str(exc).splitlines()[-1].strip()}") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path} does not fit backbone {name!r}: missing {result.missing_keys[:5]}"
            f"{' ...' if len(result.missing_keys) > 5 else ''}, unexpected "
            f"{result.unexpected_keys[:5]}{' ...' if len(result.unexpected_keys) > 5 else ''}")
    return {"source": "file", "path": str(path.resolve()), "sha256": file_sha256(path)}, first_layer


def freeze(model: nn.Module, device) -> nn.Module:
    """``requires_grad`` off, eval mode (BatchNorm uses its running statistics), on ``device``."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model.to(device)


def build_backbone(name: str, *, in_chans: int = 3, weights: str | os.PathLike = "random",
                   seed: int = 0, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """A frozen timm backbone in eval mode and its provenance ``info`` (see module docstring)."""
    timm = import_timm()

    in_chans = int(in_chans)
    if in_chans < 1:
        raise InputError(f"in_chans must be >= 1, got {in_chans}")
    random_init = isinstance(weights, str) and weights == "random"
    if not random_init:
        state = load_weights_file(weights)  # a missing file fails before the model is built
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model, no_zero_init = _make_model(name, in_chans=in_chans)
    first = _first_conv_key(model)
    info = {
        "name": name,
        "timm": timm.__version__,
        "in_chans": in_chans,
        "feature_dim": int(model.num_features),
        "zero_init_last": False if no_zero_init else None,  # None: the family has no such option
    }
    if random_init:
        info["weights"] = {"source": "random", "seed": int(seed),
                           "sha256": state_dict_sha256(model.state_dict())}
        info["first_layer"] = "random"
    else:
        info["weights"], info["first_layer"] = load_state_into(model, state, weights, name, first=first,
                                                               drop=_classifier_prefixes(model))
    return freeze(model, device), info

