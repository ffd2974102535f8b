"""Frozen video-backbone features of clips into a feature store (``flowstore clip-features``).

For every committed video of the store and one stream (``rgb`` clips ``(T, 3, H, W)`` or
``flow`` clips ``(T, 2, H, W)``):

1. **Clips.** ``N_t`` (``temporal_views``) clips of ``clip_len`` items every ``frame_interval``
   items, evenly spread as mmaction2's ``SampleFrames`` in test mode
   (:mod:`flowstore.data.clip_sampling`); defaults are the backbone's published settings.
2. **Views.** Each clip's frames are resized (shorter side ``resize``) and cut into ``N_s``
   (``spatial_views``) crops of ``crop`` (:mod:`flowstore.data.views`: 1 centre, 3 ThreeCrop,
   10 ten-crop, others along the long side). ``V = N_t * N_s`` views, index ``t * N_s + s``.
3. **Values.** RGB in [0, 1] normalised with the backbone's mean/std; flow ``q128``
   ((q - 128) / 128), ``pixels`` or ``uint8``.
4. **Features.** The frozen backbone (:func:`~flowstore.features.video_backbones.build_video_backbone`)
   maps each view ``(C, T, H, W)`` to ``D`` numbers; a video is stored as ``(V, S = 1, D)`` in
   the same feature store as the 2D features (:mod:`flowstore.features.store`), so ``train-head``,
   fusion and ``evaluate`` read it unchanged; ``starts`` holds the ``N_t`` clip offsets.

Videos are read and decoded by the :class:`~flowstore.data.video_clips.StoreVideoClipDataset`
through a torch ``DataLoader`` (``workers`` processes decode ahead; 0 decodes in this process)
and batched across videos, ``batch_size`` clips per forward pass on the device. The summary
reports clips/s of the forward passes and of the whole run; the provenance records the
backbone's clip shape, frame interval, parameters, FLOPs per clip and weights, and ``timing``
(seconds per clip, used by ``evaluate --views-grid``). Reruns compute only missing videos.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from ..errors import InputError
from .extract import FLOW_INPUT_VALUES, FeatureConfig, _provenance, entry_sha256, stored_features
from .store import FeatureStore
from .video_backbones import VIDEO_BACKBONES, build_video_backbone

__all__ = ["ClipFeatureConfig", "ClipFeatureSummary", "extract_clip_features"]


@dataclasses.dataclass
class ClipFeatureConfig:
    stream: str = "rgb"
    backbone: str = "x3d_xs"
    weights: str = "random"
    seed: int = 0
    clip_len: int | None = None          # None: the backbone's default
    frame_interval: int | None = None
    temporal_views: int = 1              # N_t
    spatial_views: int = 1               # N_s
    resize: int | tuple[int, int] | None = None   # shorter side (None: the backbone's), or (w, h)
    crop: int | tuple[int, int] | None = None     # (None: the backbone's)
    flow_values: str = "q128"
    dtype: str = "float32"
    batch_size: int = 8                  # clips per forward pass
    device: str = "cpu"
    workers: int = 0

    def check(self) -> None:
        spec = VIDEO_BACKBONES[self.backbone]
        if self.stream not in ("rgb", "flow"):
            raise InputError(f"unknown stream {self.stream!r}; choose from ['flow', 'rgb']")
        self.clip_len = spec.clip_len if self.clip_len is None else int(self.clip_len)
        self.frame_interval = spec.frame_interval if self.frame_interval is None else int(self.frame_interval)
        self.resize = spec.resize if self.resize is None else self.resize
        self.crop = spec.crop if self.crop is None else self.crop
        if min(self.clip_len, self.frame_interval, self.temporal_views, self.spatial_views, self.batch_size) < 1:
            raise InputError("clip length, frame interval, views and batch size must be >= 1")
        if self.workers < 0:
            raise InputError("workers must be >= 0")
        if self.flow_values not in FLOW_INPUT_VALUES:
            raise InputError(f"unknown flow values {self.flow_values!r}; choose from {list(FLOW_INPUT_VALUES)}")
        if self.dtype not in ("float32", "float16"):
            raise InputError(f"dtype must be float32 or float16, got {self.dtype!r}")

    @property
    def in_chans(self) -> int:
        return 3 if self.stream == "rgb" else 2

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_views


@dataclasses.dataclass
class ClipFeatureSummary:
    out: str
    total: int = 0
    computed: int = 0
    skipped: int = 0
    clips: int = 0              # backbone inputs (views) run this time
    forward_calls: int = 0
    forward_seconds: float = 0.0
    seconds: float = 0.0
    shape: tuple = ()

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.forward_seconds if self.forward_seconds > 0 else 0.0

    def lines(self) -> list[str]:
        rate = (f"; {self.clips_per_second:.2f} clips/s forward, {self.clips / self.seconds:.2f} clips/s overall"
                if self.clips and self.seconds > 0 else "")
        return [f"clip-features: {self.computed} video(s) computed, {self.skipped} already stored, {self.total} "
                f"in the store; {self.clips} clips in {self.seconds:.1f} s{rate}",
                f"clip-features: {self.out} holds (N, V, S, D) = {tuple(self.shape)}"]


def _dataset(reader, cfg: ClipFeatureConfig, mean, std):
    from ..data.video_clips import StoreVideoClipDataset
    from ..data.views import SpatialViews

    return StoreVideoClipDataset(reader, None, modality=cfg.stream, clip_len=cfg.clip_len,
                                 frame_interval=cfg.frame_interval, num_clips=cfg.temporal_views, train=False,
                                 transform=SpatialViews(cfg.spatial_views, cfg.crop, resize=cfg.resize),
                                 flow_values=cfg.flow_values, rgb_mean=mean, rgb_std=std, read_ahead=0)


def _clip_provenance(reader, cfg: ClipFeatureConfig, info: dict) -> dict:
    base = FeatureConfig(stream=cfg.stream, backbone=cfg.backbone, length=1, dtype=cfg.dtype)
    prov = _provenance(reader, base, info, info["mean"], info["std"], None)
    crop = cfg.crop if isinstance(cfg.crop, int) else list(cfg.crop)
    prov.update(
        sampling={"mode": "clip", "clip_len": cfg.clip_len, "frame_interval": cfg.frame_interval,
                  "num_clips": cfg.temporal_views, "out_of_bound": "loop",
                  "rule": "mmaction2 SampleFrames test mode: offsets round(k * max_offset / (n - 1)), "
                          "max_offset = max(count - ((clip_len - 1) * frame_interval + 1), 0); n = 1: "
                          "max_offset // 2",
                  "count": "frames" if cfg.stream == "rgb" else "flows"},
        views={"temporal": cfg.temporal_views, "spatial": cfg.spatial_views, "total": cfg.num_views,
               "spatial_mode": {1: "center", 3: "three-crop", 10: "ten-crop"}.get(cfg.spatial_views, "long-side"),
               "order": "view = t * spatial + s"},
        input={"resize": cfg.resize if not isinstance(cfg.resize, tuple) else list(cfg.resize), "crop": crop,
               "layout": "(C, T, H, W)", "channels": 3 if cfg.stream == "rgb" else "2: u, v",
               "values": (f"rgb in [0, 1], (x - mean) / std, mean={info['mean']}, std={info['std']}"
                          if cfg.stream == "rgb" else cfg.flow_values)},
        features_are="pooled video-backbone outputs as computed (not normalised); shape (V, S=1, D) per video",
    )
    return prov


def extract_clip_features(store, out, cfg: ClipFeatureConfig, *, overwrite: bool = False,
                          show_progress: bool = True, log=None) -> ClipFeatureSummary:
    """Compute the clip features of every committed video of ``store`` not yet in ``out``."""
    from .. import open_store

    cfg.check()
    log = log or (lambda msg: None)
    reader = store if hasattr(store, "manifest") else open_store(store)
    start = time.perf_counter()
    device = torch.device(cfg.device)
    crop = (cfg.crop, cfg.crop) if isinstance(cfg.crop, int) else tuple(cfg.crop)
    model, info = build_video_backbone(cfg.backbone, in_chans=cfg.in_chans, weights=cfg.weights, seed=cfg.seed,
                                       device=device, clip_len=cfg.clip_len, crop=crop,
                                       frame_interval=cfg.frame_interval)
    provenance = _clip_provenance(reader, cfg, info)
    fs = FeatureStore.create_or_resume(out, provenance, num_views=cfg.num_views, num_segments=1,
                                       feature_dim=info["feature_dim"], temporal_views=cfg.temporal_views,
                                       dtype=cfg.dtype, overwrite=overwrite)
    summary = ClipFeatureSummary(out=str(out), total=len(reader.videos))
    try:
        provenance["created"] = fs.provenance.get("created", provenance["created"])
        stored = stored_features(fs, reader)
        ds = _dataset(reader, cfg, info["mean"], info["std"])
        todo = [i for i, v in enumerate(ds.videos) if v not in stored]
        summary.skipped = len(reader.videos) - len(todo)
        if todo:
            _run(model, ds, todo, fs, cfg, reader, device, summary, show_progress)
            provenance["timing"] = {"seconds_per_clip": summary.forward_seconds / summary.clips,
                                    "clips_per_second": summary.clips_per_second, "device": str(device),
                                    "batch_size": cfg.batch_size, "torch_threads": torch.get_num_threads()}
        elif "timing" in fs.provenance:
            provenance["timing"] = fs.provenance["timing"]
        fs.update_provenance(provenance)
        summary.shape = fs.shape
    finally:
        fs.close()
    summary.seconds = time.perf_counter() - start
    return summary


@torch.inference_mode()
def _run(model, ds, todo, fs, cfg, reader, device, summary, show_progress) -> None:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    key = cfg.stream
    loader = DataLoader(ds, batch_size=None, sampler=todo, num_workers=cfg.workers,
                        prefetch_factor=4 if cfg.workers else None)
    bar = tqdm(total=len(todo), unit="video", desc=f"clip-features {key}", disable=not show_progress)
    pending: list[tuple[str, torch.Tensor, np.ndarray, int]] = []

    def flush():
        if not pending:
            return
        batch = torch.cat([p[1] for p in pending])
        feats = []
        t0 = time.perf_counter()
        for i in range(0, batch.shape[0], cfg.batch_size):
            x = batch[i:i + cfg.batch_size].to(device, non_blocking=True)
            feats.append(model(x).float().cpu())
            summary.forward_calls += 1
        summary.forward_seconds += time.perf_counter() - t0
        feats = torch.cat(feats).numpy()
        rows = feats.reshape(len(pending), cfg.num_views, 1, feats.shape[-1])
        starts = np.stack([p[2] for p in pending]).astype(np.int32)
        fs.append([p[0] for p in pending], rows, starts, [p[3] for p in pending],
                  [entry_sha256(reader.entry(p[0])) for p in pending])
        summary.clips += batch.shape[0]
        summary.computed += len(pending)
        bar.update(len(pending))
        pending.clear()

    for sample in loader:
        x = sample[key].float().permute(0, 2, 1, 3, 4).contiguous()      # (V, C, T, H, W)
        if pending and pending[0][1].shape[1:] != x.shape[1:]:
            flush()
        video = sample["video"]
        pending.append((video, x, sample["starts"].numpy().reshape(cfg.temporal_views, 1), ds._count(video)))
        if sum(p[1].shape[0] for p in pending) >= cfg.batch_size:
            flush()
    flush()
    bar.close()
