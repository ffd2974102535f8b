"""Frozen video (3D) backbones for clips: torchvision's video models and pytorchvideo's X3D.

They sit beside the timm image backbones of :mod:`flowstore.features.backbones` in their own
table, :data:`VIDEO_BACKBONES` (:func:`list_video_backbones`), because they take clips
``(B, C, T, H, W)`` instead of images. Every model returns its pooled feature vector ``(B, D)``
(classifier removed) and is returned frozen and in eval mode.

========================  ==============================  ======  ==========  ===========
name                      source                          D       clip T x i  crop (side)
========================  ==============================  ======  ==========  ===========
r3d_18 mc3_18 r2plus1d_18 ``torchvision.models.video``    512     16 x 2      112 (128)
s3d                       ``torchvision.models.video``    1024    16 x 2      224 (256)
mvit_v1_b mvit_v2_s       ``torchvision.models.video``    768     16 x 4      224 (256), fixed
swin3d_t swin3d_s         ``torchvision.models.video``    768     32 x 2      224 (256)
swin3d_b                  ``torchvision.models.video``    1024    32 x 2      224 (256)
x3d_xs x3d_s x3d_m x3d_l  ``pytorchvideo.models.x3d``     2048    4x12 13x6   182 182
                                                                  16x5 16x5   256 356
========================  ==============================  ======  ==========  ===========

The clip defaults are each model's published inference settings (``T`` frames every ``i``
frames, a centre crop of the side after resizing the short side); any clip of at least a
few frames works except MViT, whose position embeddings fix its input at 16 x 224 x 224.
Two heads are made size-agnostic: S3D's ``AvgPool3d((2, 7, 7))`` and X3D's ``ProjectedPool``
average pool (a kernel fixed by the clip size) become a global average pool -- the same
numbers at the published input size. X3D's feature is its head's 2048-d ``post_conv``
output (the layer before the classifier).

``weights``: ``"random"`` (the library's initialisation, seeded) or a local file read without
unpickling code (:func:`~flowstore.features.backbones.load_weights_file`: ``.safetensors``
or ``torch.load(weights_only=True)``; ``state_dict`` / ``model_state`` wrappers and a
``module.`` prefix removed; the classifier's keys dropped; strict otherwise). No weights
are ever downloaded.

Flow clips ``(B, 2, T, H, W)`` (``in_chans = 2``): the first convolution takes 2 channels,
initialised from the RGB filters by averaging over the colour channels and replicating the
mean (I3D's flow stream; :func:`~flowstore.features.backbones.cross_modality_weight`). A weights
file with a 2-channel first layer loads as it is.

The provenance ``info`` records the clip shape ``[C, T, H, W]``, the frame interval, the
parameter count and the FLOPs of one clip as ``torch.utils.flop_counter.FlopCounterMode``
counts them (2 per multiply-add; papers, fvcore and ptflops count 1, so their "GFLOPs" are
half of these), counted on the ``meta`` device (no computation), and the weights' file and
SHA-256.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from typing import Callable

import torch
from torch import nn

from ..errors import InputError
from ..registry import Registry
from .backbones import cross_modality_weight, freeze, load_state_into, load_weights_file, state_dict_sha256

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
HALF_MEAN = (0.45, 0.45, 0.45)
HALF_STD = (0.225, 0.225, 0.225)


@dataclasses.dataclass(frozen=True)
class VideoBackbone:
    """One registered video backbone: how to build it (3-channel, random, classifier removed)
    and its published inference settings."""

    name: str
    family: str                      # "torchvision" | "pytorchvideo"
    make: Callable[[], nn.Module]
    first_conv: str                  # module path of the first convolution
    classifier: tuple[str, ...]      # state-dict prefixes of the classifier (dropped on load)
    feature_dim: int
    clip_len: int
    frame_interval: int
    crop: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fixed_input: bool = False        # only clip_len x crop x crop works (MViT)


#: name -> :class:`VideoBackbone`
VIDEO_BACKBONES: Registry[VideoBackbone] = Registry("video backbone")


def register_video_backbone(spec: VideoBackbone) -> None:
    VIDEO_BACKBONES.register(spec.name, spec)


def list_video_backbones() -> list[str]:
    return VIDEO_BACKBONES.names()


def _torchvision(name: str, strip: Callable[[nn.Module], None]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        from torchvision.models import video

        model = getattr(video, name)(weights=None)
        strip(model)
        return model

    return make


def _strip_fc(m):
    m.fc = nn.Identity()


def _strip_head(m):
    m.head = nn.Identity()


def _strip_s3d(m):
    m.avgpool = nn.AdaptiveAvgPool3d(1)
    m.classifier = nn.Identity()


def _x3d(clip_len: int, crop: int, depth_factor: float) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        try:
            from pytorchvideo.models.x3d import create_x3d
        except ImportError:
            raise InputError("X3D needs pytorchvideo: pip install 'flowstore[video]' and then "
                             "pip install --no-deps pytorchvideo==0.1.5") from None
        model = create_x3d(input_clip_length=clip_len, input_crop_size=crop, depth_factor=depth_factor)
        head = model.blocks[-1]
        head.pool.pool = nn.AdaptiveAvgPool3d(1)
        head.dropout = nn.Identity()
        head.proj = nn.Identity()
        head.activation = None
        head.output_pool = nn.AdaptiveAvgPool3d(1)
        return model

    return make


for _n in ("r3d_18", "mc3_18", "r2plus1d_18"):
    register_video_backbone(VideoBackbone(_n, "torchvision", _torchvision(_n, _strip_fc), "stem.0", ("fc.",), 512,
                                          16, 2, 112, 128, KINETICS_MEAN, KINETICS_STD))
register_video_backbone(VideoBackbone("s3d", "torchvision", _torchvision("s3d", _strip_s3d), "features.0.0.0",
                                      ("classifier.",), 1024, 16, 2, 224, 256, KINETICS_MEAN, KINETICS_STD))
for _n in ("mvit_v1_b", "mvit_v2_s"):
    register_video_backbone(VideoBackbone(_n, "torchvision", _torchvision(_n, _strip_head), "conv_proj", ("head.",),
                                          768, 16, 4, 224, 256, HALF_MEAN, HALF_STD, fixed_input=True))
for _n, _d in (("swin3d_t", 768), ("swin3d_s", 768), ("swin3d_b", 1024)):
    register_video_backbone(VideoBackbone(_n, "torchvision", _torchvision(_n, _strip_head), "patch_embed.proj",
                                          ("head.",), _d, 32, 2, 224, 256, HALF_MEAN, HALF_STD))
for _n, _t, _i, _c, _depth in (("x3d_xs", 4, 12, 182, 2.2), ("x3d_s", 13, 6, 182, 2.2), ("x3d_m", 16, 5, 256, 2.2),
                               ("x3d_l", 16, 5, 356, 5.0)):
    register_video_backbone(VideoBackbone(_n, "pytorchvideo", _x3d(_t, _c, _depth), "blocks.0.conv.conv_t",
                                          ("blocks.5.proj.",), 2048, _t, _i, _c, _c, HALF_MEAN, HALF_STD))


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _adapt_first_conv(model: nn.Module, path: str, in_chans: int) -> None:
    """Replace the first Conv3d by one over ``in_chans`` channels, its filters the mean of the
    RGB ones replicated (cross-modality init)."""
    old = model.get_submodule(path)
    if not isinstance(old, nn.Conv3d) or old.in_channels != 3:
        raise InputError(f"{path} is not a 3-channel Conv3d ({old!r})")
    new = nn.Conv3d(in_chans, old.out_channels, old.kernel_size, stride=old.stride, padding=old.padding,
                    dilation=old.dilation, groups=old.groups, bias=old.bias is not None,
                    device=old.weight.device, dtype=old.weight.dtype)
    if old.weight.device.type != "meta":
        with torch.no_grad():
            new.weight.copy_(cross_modality_weight(old.weight, in_chans))
            if old.bias is not None:
                new.bias.copy_(old.bias)
    _set_module(model, path, new)


def _construct(spec: VideoBackbone, in_chans: int) -> nn.Module:
    model = spec.make()
    if in_chans != 3:
        _adapt_first_conv(model, spec.first_conv, in_chans)
    return model


def clip_flops(model: nn.Module, shape) -> int:
    """FLOPs of one forward pass on an input of ``shape`` (``FlopCounterMode``: 2 per
    multiply-add), counted on a ``meta`` copy of the model (nothing is computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = copy.deepcopy(model).to("meta") if next(model.parameters()).device.type != "meta" else model
    meta.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        meta(torch.empty(tuple(shape), device="meta"))
    return int(counter.get_total_flops())


def clip_shape(spec: VideoBackbone, in_chans: int, clip_len: int | None = None, crop=None) -> list[int]:
    """``[C, T, H, W]`` of one clip: the backbone's defaults unless given (``crop`` int or (w, h))."""
    t = spec.clip_len if clip_len is None else int(clip_len)
    w, h = (spec.crop, spec.crop) if crop is None else ((crop, crop) if isinstance(crop, int) else tuple(crop))
    if spec.fixed_input and (t, w, h) != (spec.clip_len, spec.crop, spec.crop):
        raise InputError(f"{spec.name} takes only {spec.clip_len}-frame {spec.crop}x{spec.crop} clips "
                         f"(its position embeddings are fixed), got {t} frames at {w}x{h}")
    return [int(in_chans), int(t), int(h), int(w)]


def build_video_backbone(name: str, *, in_chans: int = 3, weights: str | os.PathLike = "random", seed: int = 0,
                         device: str | torch.device = "cpu", clip_len: int | None = None, crop=None,
                         frame_interval: int | None = None, count_flops: bool = True) -> tuple[nn.Module, dict]:
    """A frozen video backbone in eval mode and its provenance ``info`` (see the module docstring)."""
    spec = VIDEO_BACKBONES[name]
    in_chans = int(in_chans)
    if in_chans not in (2, 3):
        raise InputError(f"video backbones take RGB (3) or flow (2) clips, got in_chans={in_chans}")
    shape = clip_shape(spec, in_chans, clip_len, crop)
    random_init = isinstance(weights, str) and weights == "random"
    if not random_init:
        state = load_weights_file(weights)  # a missing file fails before the model is built
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _construct(spec, in_chans)
    info = {
        "name": name, "kind": "video", "family": spec.family, "library": _library_version(spec.family),
        "in_chans": in_chans, "feature_dim": spec.feature_dim, "input_layout": "(B, C, T, H, W)",
        "clip_shape": shape, "frame_interval": int(spec.frame_interval if frame_interval is None else frame_interval),
        "defaults": {"clip_len": spec.clip_len, "frame_interval": spec.frame_interval, "crop": spec.crop,
                     "resize": spec.resize},
        "mean": list(spec.mean), "std": list(spec.std),
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    if random_init:
        info["weights"] = {"source": "random", "seed": int(seed), "sha256": state_dict_sha256(model.state_dict())}
        info["first_layer"] = "random" if in_chans == 3 else "random, cross-modality"
    else:
        info["weights"], info["first_layer"] = load_state_into(model, state, weights, name,
                                                               first=f"{spec.first_conv}.weight",
                                                               drop=spec.classifier)
    if count_flops:
        with torch.device("meta"):
            flops = clip_flops(_construct(spec, in_chans), [1, *shape])
        info["flops_per_clip"] = flops
        info["gflops_per_clip"] = round(flops / 1e9, 4)
        info["flops_counted_by"] = "torch.utils.flop_counter.FlopCounterMode (2 FLOPs per multiply-add)"
    return freeze(model, device), info


def _library_version(family: str) -> str:
    if family == "pytorchvideo":
        import pytorchvideo

        return f"pytorchvideo {pytorchvideo.__version__}"
    import torchvision

    return f"torchvision {torchvision.__version__}"


__all__ = [
    "VIDEO_BACKBONES", "VideoBackbone", "build_video_backbone", "clip_flops", "clip_shape", "list_video_backbones",
    "register_video_backbone",
]
