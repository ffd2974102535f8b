"""Frozen-backbone feature extraction from a flowstore store into a feature store.

For every committed video of the store and one stream (``rgb`` or ``flow``):

1. **Snippets.** TSN sampling with K segments (``num_segments``) and snippets of ``length``
   items (1 frame for rgb; L flows, 2L channels x0, y0, x1, y1, ... for flow). Each segment
   is sampled at T temporal positions (``temporal_views``): with ``A = count - length + 1``
   valid starts, view t of segment k starts at ``floor((k + (t + 1/2) / T) * A / K)`` --
   :func:`flowstore.data.sampling.evenly_spaced_starts` with ``K * T`` snippets, so T = 1 is
   exactly TSN's test sampling (the segment centres). ``stacking`` says what a flow snippet's
   2L channels are (``stack``, ``bidirectional``, ``trajectory``: :data:`flowstore.data.sampling.STACKINGS`,
   S&Z 2014 sec. 3.1); it is recorded as ``sampling.stacking`` in the provenance.
2. **Views.** Every snippet is optionally resized, then cut into C spatial views
   (``spatial_views``): 1 = the centre crop (or the whole frame without ``crop``), 2 = the
   centre and its mirror (flow: u negated), 10 = TSN's ten crops. Views are ``V = T * C``,
   index ``t * C + c``.
3. **Values.** RGB: [0, 1] then normalised with the backbone's mean/std (ImageNet for timm's
   ResNets); flow: ``q128`` ((q - 128) / 128, TSN/mmaction2's flow normalisation), ``pixels``
   or ``uint8`` values, optionally minus each field's or stack's mean vector
   (``mean_subtract``: camera-motion compensation). Reading and decoding use
   :class:`flowstore.data.dataset.StoreClipDataset` and :func:`flowstore.data.transforms.finalize`.
4. **Features.** The frozen backbone (:func:`flowstore.features.backbones.build_backbone`) maps
   each view/segment image to its pooled feature vector; results go to the feature store as
   ``(V, S=K, D)`` per video. Features are stored as computed (not normalised); heads
   L2-normalise them (``train-head --l2-normalize``, the default).
   ``pool="none"`` (``features --pool none``) keeps the backbone's last conv map instead of its
   pooled vector -- timm's ``forward_features``, before global pooling -- as float16
   ``(V, S, C, h, w)`` per video (a *map store*, for ``train-head --fusion mid-conv``); every
   video must then give the backbone one input size (``--crop``, or ``--resize WxH``).

Decoding runs on a background thread ahead of the forward passes; images of several videos
are batched together (``batch_size`` images per forward). Videos already in the output file
are never recomputed; rerunning after an interruption computes only the rest.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .backbones import build_backbone
from .store import FeatureStore, FeatureStoreError
from ..errors import InputError
from ..signals import StopRequested, stop_on_signals

__all__ = ["FeatureConfig", "FeatureSummary", "extract_features", "manifest_hashes", "snippet_starts",
           "STREAMS", "SPATIAL_VIEWS", "FLOW_INPUT_VALUES", "POOLS", "embed", "conv_map_shape"]

STREAMS = ("rgb", "flow")
SPATIAL_VIEWS = (1, 2, 10)
FLOW_INPUT_VALUES = ("q128", "pixels", "uint8")
#: ``avg``: the backbone's pooled vector (its forward pass); ``none``: its last conv map
POOLS = ("avg", "none")
MANIFEST_HASH_OF = ("SHA-256 of the canonical JSON (sorted keys, no spaces) of the store manifest as read "
                    "by flowstore.open_store: the header of manifest.json without its 'updated_at' "
                    "timestamp, with 'videos' = every committed video entry (manifest.json + "
                    "commits.jsonl) sorted by id; header_sha256 is the same without 'videos'")
#: manifest keys left out of the hashes: they change when a run touches the store, not its content
VOLATILE_KEYS = ("updated_at",)


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _sha256(obj) -> str:
    return hashlib.sha256(_canonical(obj)).hexdigest()


def manifest_hashes(manifest: dict) -> tuple[str, str]:
    """``(header_sha256, manifest_sha256)`` of a store manifest (see :data:`MANIFEST_HASH_OF`);
    the header hash leaves the video list out, so it stays fixed when videos are added."""
    header = {k: v for k, v in manifest.items() if k != "videos" and k not in VOLATILE_KEYS}
    full = dict(header, videos=sorted(manifest.get("videos", []), key=lambda v: v["id"]))
    return _sha256(header), _sha256(full)


def entry_sha256(entry: dict) -> str:
    return _sha256(entry)


def stored_features(fs: FeatureStore, reader) -> dict[str, str]:
    """The videos whose features ``fs`` holds already (id -> the hash of their store entry), so a
    rerun resumes; refused when one of them changed in the flow store since (its features would
    no longer match it)."""
    stored = fs.entry_hashes()
    changed = [v for v, h in stored.items() if v in reader and entry_sha256(reader.entry(v)) != h]
    if changed:
        raise FeatureStoreError(
            f"{len(changed)} video(s) changed in the store since their features were computed "
            f"(e.g. {changed[:3]}); pass --overwrite to recompute everything")
    return stored


def snippet_starts(count: int, num_segments: int, length: int, temporal_views: int) -> np.ndarray:
    """``(T, K)`` snippet starts: view t of segment k (see module docstring)."""
    from ..data.sampling import evenly_spaced_starts

    k, t = int(num_segments), int(temporal_views)
    return evenly_spaced_starts(count, k * t, length).reshape(k, t).T.copy()


@dataclasses.dataclass
class FeatureConfig:
    stream: str = "rgb"
    backbone: str = "resnet18"
    weights: str = "random"
    seed: int = 0
    num_segments: int = 3
    length: int | None = None          # None: 1 frame (rgb) / 5 flows (flow)
    temporal_views: int = 1
    spatial_views: int = 1
    resize: tuple[int, int] | int | None = None   # (w, h) or shorter side
    crop: tuple[int, int] | None = None           # (w, h)
    flow_values: str = "q128"
    mean_subtract: str | None = None
    dtype: str = "float32"
    batch_size: int = 64
    device: str = "cpu"
    decode_ahead: int = 8
    pool: str = "avg"
    stacking: str = "stack"            # what a flow snippet's 2L channels are (data.sampling.STACKINGS)

    def check(self) -> None:
        if self.stream not in STREAMS:
            raise InputError(f"unknown stream {self.stream!r}; choose from {list(STREAMS)}")
        if self.length is None:
            self.length = 1 if self.stream == "rgb" else 5
        if self.stream == "rgb" and self.length != 1:
            raise InputError("rgb features use one frame per snippet (--length 1)")
        if self.length < 1 or self.num_segments < 1 or self.temporal_views < 1 or self.batch_size < 1:
            raise InputError("length, segments, temporal views and batch size must be >= 1")
        if self.spatial_views not in SPATIAL_VIEWS:
            raise InputError(f"spatial views must be one of {list(SPATIAL_VIEWS)}, got {self.spatial_views}")
        if self.spatial_views == 10 and self.crop is None:
            raise InputError("10 spatial views (ten-crop) need a crop size (--crop)")
        if self.flow_values not in FLOW_INPUT_VALUES:
            raise InputError(f"unknown flow values {self.flow_values!r}; choose from {list(FLOW_INPUT_VALUES)}")
        if self.mean_subtract not in (None, "field", "stack"):
            raise InputError(f"mean subtraction must be field, stack or none, got {self.mean_subtract!r}")
        if self.dtype not in ("float32", "float16"):
            raise InputError(f"dtype must be float32 or float16, got {self.dtype!r}")
        if self.pool not in POOLS:
            raise InputError(f"unknown pool {self.pool!r}; choose from {list(POOLS)}")
        if self.pool == "none":
            self.dtype = "float16"  # a map is h * w times a vector; float16 halves that
        from ..data.sampling import STACKINGS

        STACKINGS[self.stacking]  # an unknown name: "unknown stacking ...; choose from [...]"
        if self.stream == "rgb" and self.stacking != "stack":
            raise InputError(f"{self.stacking} stacking is a way of stacking flow; --stream rgb reads frames "
                             "(drop --stacking)")
        from ..data import transforms as T
        from ..devices import check_devices

        if self.resize is not None:
            T.ResizeClip(self.resize)  # raises on a size that is not positive pixels
        if self.crop is not None:
            self.crop = T.CenterCrop(self.crop).size
        check_devices([self.device])  # a device that is not here: exit 2 before any file is made

    def check_fits(self, reader) -> None:
        """The crop fits every video's (resized) frames, and maps (``pool="none"``) have one size:
        refused before any work, not per video."""
        from ..data import transforms as T
        from ..data.source import check_stacking

        if self.stream == "flow":
            check_stacking(reader, self.stacking, self.length)  # backward flow held, L even, stride 1
        if self.pool == "none" and len(self.input_sizes(reader)) > 1:
            sizes = sorted(self.input_sizes(reader))
            raise InputError(f"--pool none stores one map size, but the videos give the backbone {len(sizes)} input "
                             f"sizes (e.g. {sizes[:3]} as (w, h)); pass --crop WxH or --resize WxH")
        if self.crop is None:
            return
        for video in reader.videos:
            w, h = reader.frame_size(video)
            if self.resize is not None:
                w, h = T.ResizeClip(self.resize).target(w, h)
            if self.crop[0] > w or self.crop[1] > h:
                after = f" after --resize {self.resize}" if self.resize is not None else ""
                raise InputError(f"--crop {self.crop[0]}x{self.crop[1]} does not fit video {video!r}: its frames are "
                                 f"{w}x{h}{after}; the crop must be at most the frame size (crop <= {w}x{h})")

    def input_sizes(self, reader) -> set:
        """The ``(w, h)`` backbone input sizes of the store's videos (after resize and crop)."""
        from ..data import transforms as T

        if self.crop is not None:
            return {tuple(self.crop)} if reader.videos else set()
        sizes = set()
        for video in reader.videos:
            w, h = reader.frame_size(video)
            sizes.add(T.ResizeClip(self.resize).target(w, h) if self.resize is not None else (w, h))
        return sizes

    @property
    def in_chans(self) -> int:
        return 3 if self.stream == "rgb" else 2 * int(self.length)

    @property
    def num_views(self) -> int:
        return self.temporal_views * self.spatial_views


@dataclasses.dataclass
class FeatureSummary:
    out: str
    total: int = 0            # videos in the store
    computed: int = 0         # videos computed by this run
    skipped: int = 0          # already in the feature store
    images: int = 0           # backbone inputs (views x segments) run this time
    forward_calls: int = 0
    seconds: float = 0.0
    shape: tuple = ()         # (N, V, S, D), or (N, V, S, C, h, w) for maps, after the run
    kind: str = "vectors"     # "vectors" or "maps" (--pool none)
    bytes_per_video: int = 0  # one video's row as stored: prod(shape[1:]) * itemsize
    file_bytes: int = 0       # the feature file's size on disk after the run

    def lines(self) -> list[str]:
        rate = f", {self.images / self.seconds:.0f} images/s" if self.seconds > 0 and self.images else ""
        axes = "(N, V, S, C, h, w)" if self.kind == "maps" else "(N, V, S, D)"
        n = self.shape[0] if self.shape else 0
        on_disk = f", {_size(self.file_bytes / n)} per video on disk incl. the HDF5 overhead" if n else ""
        return [f"features: {self.computed} video(s) computed, {self.skipped} already stored, "
                f"{self.total} in the store; {self.images} images in {self.seconds:.1f} s{rate}",
                f"features: {self.out} holds {self.kind} {axes} = {tuple(self.shape)}: "
                f"{_size(self.bytes_per_video)} per video as stored{on_disk} ({_size(self.file_bytes)} in all)"]


def _size(n: float) -> str:
    """A byte count for people: 512 B, 1.5 KiB, 2.3 MiB ..."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _spatial_clips(clip, cfg: FeatureConfig):
    """The C spatial views of a decoded clip (a list of Clips with the same snippets)."""
    from ..data import transforms as T

    if cfg.resize is not None:
        clip = T.ResizeClip(cfg.resize)(clip)
    if cfg.spatial_views == 10:
        w, h = cfg.crop
        out = []
        for x, y, cw, ch, flipped in T.ten_crop_boxes(*clip.size, w, h):
            c = T.crop(clip, x, y, cw, ch)
            out.append(T.hflip(c) if flipped else c)
        return out
    if cfg.crop is not None:
        clip = T.CenterCrop(cfg.crop)(clip)
    return [clip] if cfg.spatial_views == 1 else [clip, T.hflip(clip)]


class _Preparer:
    """Reads, decodes and prepares the backbone inputs of one video (runs on a worker thread)."""

    def __init__(self, reader, cfg: FeatureConfig, rgb_mean, rgb_std):
        from ..data.dataset import StoreClipDataset

        self.reader, self.cfg = reader, cfg
        self.rgb_mean, self.rgb_std = rgb_mean, rgb_std
        self.ds = StoreClipDataset(reader, None, modality=cfg.stream, sampling="tsn", stacking=cfg.stacking,
                                   num_segments=cfg.num_segments, length=cfg.length, train=False,
                                   flow_values=cfg.flow_values,
                                   mean_subtract=cfg.mean_subtract, read_ahead=0)

    def count(self, video: str) -> int:
        return self.reader.num_frames(video) if self.cfg.stream == "rgb" else self.reader.num_flows(video)

    def __call__(self, video: str):
        from ..data.sampling import STACKINGS
        from ..data.transforms import Clip, finalize

        cfg = self.cfg
        count = self.count(video)
        starts = snippet_starts(count, cfg.num_segments, cfg.length, cfg.temporal_views)  # (T, K)
        clip = self.ds.load(video, starts.reshape(-1))
        views = _spatial_clips(clip, cfg)                       # C clips of T*K snippets
        merged = Clip(
            rgb=None if views[0].rgb is None else np.concatenate([np.ascontiguousarray(v.rgb) for v in views]),
            flow=None if views[0].flow is None else np.concatenate([np.ascontiguousarray(v.flow) for v in views]),
            flow_range=None if views[0].flow_range is None else np.concatenate([v.flow_range for v in views]),
            flow_mirror=views[0].flow_mirror,
        )
        values = finalize(merged, self.reader.quant, flow_mode=cfg.flow_values, mean_subtract=cfg.mean_subtract,
                          rgb_mode="float", rgb_mean=self.rgb_mean, rgb_std=self.rgb_std,
                          mean_groups=STACKINGS[cfg.stacking].mean_groups)[cfg.stream]
        x = values.float() if values.dtype != torch.float32 else values
        c_sp, t, k = len(views), cfg.temporal_views, cfg.num_segments
        x = x.reshape(c_sp, t, k, *x.shape[1:]).transpose(0, 1).reshape(t * c_sp * k, *x.shape[1:])
        return video, x.contiguous(), starts, count


def _provenance(reader, cfg: FeatureConfig, backbone_info: dict, rgb_mean, rgb_std, created: str | None) -> dict:
    from .. import __version__

    header_sha, manifest_sha = manifest_hashes(reader.manifest)
    m = reader.manifest
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {
        "format": "flowstore-features",
        "flowstore_version": __version__,
        "torch": torch.__version__,
        "created": created or now,
        "updated": now,
        "stream": cfg.stream,
        "backbone": backbone_info,
        "sampling": {
            "mode": "tsn", "num_segments": cfg.num_segments, "length": cfg.length,
            "temporal_views": cfg.temporal_views,
            "rule": "view t of segment k starts at floor((k + (t + 1/2) / T) * A / K), A = count - length + 1",
            "count": "frames" if cfg.stream == "rgb" else "flows",
            **({"stacking": cfg.stacking} if cfg.stream == "flow" else {}),
        },
        "views": {
            "temporal": cfg.temporal_views, "spatial": cfg.spatial_views, "total": cfg.num_views,
            "spatial_mode": {1: "center", 2: "center+flip", 10: "ten-crop"}[cfg.spatial_views],
            "order": "view = t * spatial + c",
        },
        "input": {
            "resize": list(cfg.resize) if isinstance(cfg.resize, tuple) else cfg.resize,
            "crop": None if cfg.crop is None else list(cfg.crop),
            "channels": 3 if cfg.stream == "rgb" else f"2L = {2 * cfg.length}: x0, y0, x1, y1, ...",
            "values": (f"rgb in [0, 1], (x - mean) / std, mean={list(rgb_mean)}, std={list(rgb_std)}"
                       if cfg.stream == "rgb" else cfg.flow_values),
            "mean_subtract": cfg.mean_subtract if cfg.stream == "flow" else None,
        },
        "dtype": cfg.dtype,
        "pool": cfg.pool,
        "store": {
            "path": str(Path(reader.root).resolve()),
            "backend": reader.backend,
            "flow": m.get("flow"),
            "quantization": m.get("quantization"),
            "frames": m.get("frames"),
            "resize": m.get("resize"),
            "stride": reader.stride,
            "num_videos": len(reader.videos),
            "header_sha256": header_sha,
            "manifest_sha256": manifest_sha,
            "manifest_hash_of": MANIFEST_HASH_OF,
        },
        "features_are": ("pooled backbone outputs as computed (not normalised); shape (V, S, D) per video"
                         if cfg.pool == "avg" else
                         "the backbone's last conv map (timm forward_features, before global pooling) as computed, "
                         "float16; shape (V, S, C, h, w) per video"),
    }


def rgb_normalisation(model) -> tuple[tuple, tuple]:
    """``(mean, std)`` of the backbone's RGB inputs (its timm config; ImageNet's by default)."""
    pcfg = getattr(model, "pretrained_cfg", None) or {}
    return (tuple(float(x) for x in pcfg.get("mean", (0.485, 0.456, 0.406))),
            tuple(float(x) for x in pcfg.get("std", (0.229, 0.224, 0.225))))


def extract_features(store, out, cfg: FeatureConfig, *, overwrite: bool = False, show_progress: bool = True,
                     log=None, executor: str = "local", executor_options: dict | None = None) -> FeatureSummary:
    """Compute the features of every committed video of ``store`` not yet in ``out``.

    ``executor="ray"``: Ray actors (one per worker slot, each with its own backbone) compute
    them, the driver appends them to ``out`` (see :mod:`.distributed`); options as for
    :class:`flowstore.extract.ray_executor.RayExecutor`.
    """
    from .. import open_store

    cfg.check()
    if executor != "local":
        from .distributed import check_executor

        check_executor(executor, executor_options or {})
    log = log or (lambda msg: None)
    reader = store if hasattr(store, "manifest") else open_store(store)
    cfg.check_fits(reader)
    start = time.perf_counter()
    device = torch.device(cfg.device)
    model, info = build_backbone(cfg.backbone, in_chans=cfg.in_chans, weights=cfg.weights, seed=cfg.seed,
                                 device=device)
    rgb_mean, rgb_std = rgb_normalisation(model)
    provenance = _provenance(reader, cfg, info, rgb_mean, rgb_std, None)
    map_shape = None
    if cfg.pool == "none":
        sizes = cfg.input_sizes(reader)
        if not sizes:
            raise InputError(f"--pool none: {reader.root} has no videos to size the maps by")
        map_shape = conv_map_shape(model, cfg, *next(iter(sizes)), device)
        provenance["map"] = {"shape": None if map_shape is None else list(map_shape),
                             "layer": "timm forward_features: the last conv stage, before global pooling"}
    fs = FeatureStore.create_or_resume(out, provenance, num_views=cfg.num_views, num_segments=cfg.num_segments,
                                       feature_dim=info["feature_dim"], temporal_views=cfg.temporal_views,
                                       dtype=cfg.dtype, overwrite=overwrite,
                                       map_shape=map_shape)
    summary = FeatureSummary(out=str(out), total=len(reader.videos))
    try:
        provenance["created"] = fs.provenance.get("created", provenance["created"])
        stored = stored_features(fs, reader)
        gone = [v for v in stored if v not in reader]
        if gone:
            log(f"warning: {len(gone)} video(s) of {out} are no longer in the store (e.g. {gone[:3]}); kept")
        preparer = _Preparer(reader, cfg, rgb_mean, rgb_std)
        todo = [v for v in reader.videos if v not in stored and preparer.count(v) >= 1]
        empty = [v for v in reader.videos if v not in stored and preparer.count(v) < 1]
        if empty:
            log(f"warning: {len(empty)} video(s) have no {'frames' if cfg.stream == 'rgb' else 'flows'}, "
                f"skipped (e.g. {empty[:3]})")
        summary.skipped = len(reader.videos) - len(todo) - len(empty)
        if todo:
            try:
                with stop_on_signals() as signals:
                    if executor != "local":
                        from .distributed import run_on_ray

                        run_on_ray(todo, fs, cfg, reader, summary, show_progress, _ray_setup, _ray_call,
                                   signals=signals, **(executor_options or {}))
                    else:
                        _run(model, preparer, todo, fs, cfg, reader, device, summary, show_progress, signals)
            except StopRequested as exc:  # the videos appended so far are kept; a rerun does the rest
                fs.update_provenance(provenance)
                raise exc.stopped(len(stored) + summary.computed) from None
        fs.update_provenance(provenance)
        summary.shape, summary.kind, summary.bytes_per_video = fs.shape, fs.kind, fs.bytes_per_video
    finally:
        fs.close()
    summary.file_bytes = Path(out).stat().st_size
    summary.seconds = time.perf_counter() - start
    return summary


@dataclasses.dataclass
class FeatureRows:
    """The features of some videos, ready for :meth:`FeatureStore.append` (``columns()``)."""

    videos: list
    feats: np.ndarray      # (n, V, S, D), or (n, V, S, C, h, w) for maps
    starts: np.ndarray     # (n, T, S) int32
    counts: list
    hashes: list
    images: int = 0
    forward_calls: int = 0

    def columns(self) -> tuple:
        return self.videos, self.feats, self.starts, self.counts, self.hashes


def embed(model, x: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """The backbone's output for images ``x``: pooled ``(B, D)``, or (``pool="none"``) its last
    conv map ``(B, C, h, w)`` -- timm's ``forward_features``, which the pooled forward pools."""
    if cfg.pool == "avg":
        return model(x)
    out = model.forward_features(x)
    if out.dim() != 4:
        raise InputError(f"--pool none needs a convolutional backbone; {cfg.backbone}'s last stage gives shape "
                         f"{tuple(out.shape)}, not (B, C, h, w)")
    return out


@torch.inference_mode()
def conv_map_shape(model, cfg: FeatureConfig, w: int, h: int, device) -> tuple[int, int, int]:
    """``(C, h, w)`` of the backbone's last conv map for ``w x h`` inputs (one dry forward)."""
    return tuple(embed(model, torch.zeros(1, cfg.in_chans, int(h), int(w), device=device), cfg).shape[1:])


@torch.inference_mode()
def forward(model, prepared: list, cfg: FeatureConfig, device, reader) -> FeatureRows:
    """Backbone features of prepared videos (``_Preparer`` outputs of one image size), in
    forward passes of ``cfg.batch_size`` images."""
    batch = torch.cat([p[1] for p in prepared]).to(device)
    feats, calls = [], 0
    for i in range(0, batch.shape[0], cfg.batch_size):
        feats.append(embed(model, batch[i:i + cfg.batch_size], cfg).float().cpu())
        calls += 1
    feats = torch.cat(feats).numpy()
    rows, offset = [], 0
    for video, x, starts, count in prepared:
        n = x.shape[0]
        rows.append(feats[offset:offset + n].reshape(cfg.num_views, cfg.num_segments, *feats.shape[1:]))
        offset += n
    return FeatureRows([p[0] for p in prepared], np.stack(rows), np.stack([p[2] for p in prepared]).astype(np.int32),
                       [p[3] for p in prepared], [entry_sha256(reader.entry(p[0])) for p in prepared],
                       images=offset, forward_calls=calls)


# Ray actors of `--executor ray` (flowstore.features.distributed): one backbone each
def _ray_setup(store_root: str, cfg, threads: int):
    from .. import open_store

    torch.set_num_threads(max(1, threads))
    device = torch.device(cfg.device)
    model, _ = build_backbone(cfg.backbone, in_chans=cfg.in_chans, weights=cfg.weights, seed=cfg.seed, device=device)
    reader = open_store(store_root)
    return model, _Preparer(reader, cfg, *rgb_normalisation(model)), reader, device, cfg


def _ray_call(state, videos: tuple):
    model, preparer, reader, device, cfg = state
    prepared = [preparer(v) for v in videos]
    groups: dict = {}  # one forward per image size
    for p in prepared:
        groups.setdefault(tuple(p[1].shape[1:]), []).append(p)
    return [forward(model, group, cfg, device, reader) for group in groups.values()]


@torch.inference_mode()
def _run(model, preparer, todo, fs, cfg, reader, device, summary, show_progress, signals=None) -> None:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="video", desc=f"features {cfg.stream}", disable=not show_progress)
    pending: deque = deque()          # (video, x, starts, count) waiting for a forward pass
    pending_images = 0
    it = iter(todo)
    with ThreadPoolExecutor(1, thread_name_prefix="flowstore-features") as pool:
        futures: deque = deque()

        def refill():
            while len(futures) < max(1, cfg.decode_ahead):
                v = next(it, None)
                if v is None:
                    return
                futures.append(pool.submit(preparer, v))

        def flush():
            nonlocal pending_images
            if not pending:
                return
            rows = forward(model, list(pending), cfg, device, reader)
            with signals.deferred() if signals is not None else contextlib.nullcontext():  # whole appends only
                fs.append(*rows.columns())
            summary.images += rows.images
            summary.forward_calls += rows.forward_calls
            summary.computed += len(pending)
            bar.update(len(pending))
            pending.clear()
            pending_images = 0

        try:
            refill()
            while futures:
                item = futures.popleft().result()
                refill()
                if pending and pending[0][1].shape[1:] != item[1].shape[1:]:
                    flush()  # videos of another size: batch them separately
                pending.append(item)
                pending_images += item[1].shape[0]
                if pending_images >= cfg.batch_size:
                    flush()
            flush()
        except StopRequested:
            for future in futures:  # do not decode the videos queued ahead
                future.cancel()
            raise
    bar.close()
