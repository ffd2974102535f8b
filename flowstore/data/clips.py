"""What both dataset kinds share: their configuration, the sample list, and one sample's way
from plan (cheap) to records (I/O, :mod:`flowstore.data.source`) to a transformed dict (CPU).

Every random choice of sample ``i`` in epoch ``e`` comes from :func:`sample_rng`, so results
do not depend on the number of workers, on which worker loads a sample or on the load order.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from ..errors import InputError, OutOfRangeError, UnknownNameError
from .labels import as_label_map
from .device_flow import FRAMES_KEY
from .readahead import ReadAhead
from .sampling import DEFAULT_STACKING, STACKINGS, check_sampling, default_length, sample_starts
from .source import (ShardOpener, check_stacking, decode_snippets, open_source, read_records, read_snippets,
                     record_indices, source_name)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Clip, finalize

MODALITIES = ("rgb", "flow", "both")
#: where a sample's flow comes from: the store's flow records, or computed from its RGB frames
#: on a device (:mod:`flowstore.data.device_flow`)
FLOW_SOURCES = ("stored", "online")
#: the key of a sample's epoch when it is finished on the device (:mod:`flowstore.data.device_clips`
#: rebuilds the sample's generator from it)
EPOCH_KEY = "epoch"


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random choice of sample ``index`` in ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class SamplePlan(NamedTuple):
    """What one sample reads, fixed before any I/O: its video and snippet starts (0-based), and
    the generator of its remaining random choices (crops, flips; None where nothing is random)."""

    index: int
    video: str
    starts: np.ndarray
    rng: np.random.Generator | None
    epoch: int = 0


class ClipDatasetBase(ReadAhead):
    """Configuration, sample list and the loading of one clip; the arguments are
    :class:`~flowstore.data.dataset.StoreClipDataset`'s."""

    def __init__(self, store, labels=None, *, videos: Sequence[str] | None = None, modality: str = "flow",
                 sampling: str = "tsn", stacking: str = DEFAULT_STACKING, num_segments: int = 3, length: int | None = None, train: bool = True,
                 test_views: int | None = None, transform=None, flow_values: str = "pixels",
                 mean_subtract: str | None = None, rgb_values: str = "float", rgb_mean=IMAGENET_MEAN,
                 rgb_std=IMAGENET_STD, clips_per_video: int = 1, seed: int = 0, min_flows: int = 1,
                 read_ahead: int = 8, read_threads: int = 2, flow: str = "stored", method: str | None = None,
                 engine: str | None = None, flow_params: dict | None = None, flow_device: str | None = None,
                 decode_device: str | None = None):
        if modality not in MODALITIES:
            raise InputError(f"unknown modality {modality!r}; choose from {list(MODALITIES)}")
        super().__init__(read_ahead, read_threads)
        self.store = open_source(store)
        self.modality = modality
        self.sampling = check_sampling(sampling)
        self.length = default_length(sampling, modality) if length is None else int(length)
        if sampling == "frame" and self.length != 1:
            raise InputError("frame sampling has length 1")
        if stacking != DEFAULT_STACKING and modality == "rgb":
            raise InputError(f"{stacking} stacking is a way of stacking flow; modality 'rgb' reads frames")
        self.stacking = stacking
        if modality == "rgb":
            self._stacking = STACKINGS[stacking]
        elif flow == "online":  # computed, not read: only what the stacking itself requires
            from .device_flow import check_online_stacking

            self._stacking = check_online_stacking(self.store, stacking, self.length)
        else:
            self._stacking = check_stacking(self.store, stacking, self.length)
        self.num_segments = int(num_segments)
        self.train = bool(train)
        self.test_views = test_views
        self.transform = transform
        self.flow_values = flow_values
        self.mean_subtract = mean_subtract
        self.rgb_values = rgb_values
        self.rgb_mean, self.rgb_std = rgb_mean, rgb_std
        if clips_per_video < 1:
            raise InputError("clips_per_video must be >= 1")
        self.clips_per_video = int(clips_per_video)
        self.seed = int(seed)
        self.epoch = 0
        store_name = source_name(self.store)
        vids, self.labels = as_label_map(labels, self.store.videos, store_name)
        if videos is not None:
            wanted = set(videos)
            unknown = wanted - set(self.store.videos)
            if unknown:
                raise UnknownNameError(f"videos not in {store_name}: {sorted(unknown)[:5]}")
            vids = [v for v in vids if v in wanted]
        if self.modality != "rgb":
            vids = [v for v in vids if self.store.num_flows(v) >= min_flows]
        self.videos: list[str] = vids
        self._open_shard = ShardOpener()
        if flow not in FLOW_SOURCES:
            raise InputError(f"unknown flow source {flow!r}; choose from {list(FLOW_SOURCES)}")
        if flow == "online" and self.modality == "rgb":
            raise InputError("flow='online' needs modality 'flow' or 'both'")
        self.flow = flow
        self.flow_method = dict(method=method, engine=engine, params=flow_params)
        self.flow_device = flow_device
        self.decode_device = None
        if decode_device is not None:
            from .device_decode import check_decode_device

            self.decode_device = check_decode_device(decode_device, self.store)

    # -- work deferred to the device (flow="online", decode_device) ---------------------------
    @property
    def deferred(self) -> bool:
        """Whether a batch is finished on the device by :class:`~flowstore.data.device_clips.DeviceStep`."""
        return self.flow == "online" or self.decode_device is not None

    def device_for_step(self) -> str:
        from .device_flow import default_device

        return self.decode_device or self.flow_device or default_device()

    def flow_on_device(self, device: str | None = None):
        """The :class:`~flowstore.data.device_flow.FlowOnDevice` of ``flow="online"``: the
        store's quantization and stride; ``method``/``engine``/``flow_params`` as given (the
        store's own method and parameters by default)."""
        from .device_flow import FlowOnDevice

        return FlowOnDevice.for_store(self.store, device=device or self.device_for_step(), **self.flow_method)

    @property
    def stride(self) -> int:
        return int(getattr(self.store, "stride", 1))

    def flow_frame_indices(self, video: str, starts) -> np.ndarray:
        from .device_flow import stack_frame_indices

        return stack_frame_indices(starts, self.length, self.stride, self.store.num_frames(video))

    def flow_pairs(self, videos, starts) -> np.ndarray:
        """``(B, S, L)`` first-frame positions of each sample's flows within its frames."""
        from .device_flow import stack_pairs

        return np.stack([stack_pairs(s, self.length, self.store.num_flows(v)) for v, s in zip(videos, starts)])

    # -- samples ---------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """All samples of an epoch: ``videos * clips_per_video``."""
        return len(self.videos) * self.clips_per_video

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _count(self, video: str) -> int:
        return self.store.num_frames(video) if self.modality == "rgb" else self.store.num_flows(video)

    def starts(self, index: int, rng: np.random.Generator) -> np.ndarray:
        video = self.videos[index // self.clips_per_video]
        return sample_starts(self.sampling, self._count(video), length=self.length, train=self.train,
                             num_segments=self.num_segments, test_views=self.test_views, rng=rng)

    def shard_of(self, video: str) -> str | None:
        return self.store.shard_of(video)

    def fetch(self, video: str, starts: np.ndarray) -> dict:
        """The encoded records of the snippets at ``starts`` (the I/O half of :meth:`load`)."""
        self._open_shard(self.store, video)
        if self.flow != "online":
            return read_snippets(self.store, video, starts, self.length, self.modality, self.stacking)
        _, frames = record_indices(self.store, video, starts, self.length, self.modality)
        raw = read_records(self.store, video, starts, None, frames)  # the RGB of "both"
        raw[FRAMES_KEY] = read_records(self.store, video, starts, None, self.flow_frame_indices(video, starts))["rgb"]
        return raw

    def decode(self, video: str, raw: dict, out: Clip | None = None) -> Clip:
        """Decoded uint8 channel-first snippets from :meth:`fetch`'s records (the CPU half);
        written into ``out``'s arrays when given (e.g. a slot of a batch in shared memory)."""
        clip = decode_snippets(self.store, video, {k: v for k, v in raw.items() if k != FRAMES_KEY}, self.length, out)
        if FRAMES_KEY in raw:  # online flow: the frames, as a (S, 3F, H, W) stack in clip.flow's place
            clip.flow = self.decode_frames(video, raw, None if out is None else out.flow)
        return clip

    def decode_frames(self, video: str, raw: dict, out: np.ndarray | None = None) -> np.ndarray:
        """The frames of online flow, uint8 ``(S, 3 (L + stride), H, W)``."""
        rows = raw[FRAMES_KEY]
        if out is None:
            w, h = self.store.frame_size(video)
            out = np.empty((len(rows), 3 * len(rows[0]), h, w), np.uint8)
        return decode_snippets(self.store, video, {"starts": raw["starts"], "rgb": rows}, 1, Clip(rgb=out)).rgb

    def load(self, video: str, starts: np.ndarray) -> Clip:
        """Read and decode the snippets at ``starts`` (uint8, channel-first)."""
        return self.decode(video, self.fetch(video, starts))

    # -- one sample: plan (cheap) -> fetch (I/O) -> decode + transform (CPU) -----------------
    def plan(self, index: int, epoch: int) -> SamplePlan:
        if not 0 <= index < self.num_samples:
            raise OutOfRangeError(f"sample {index} out of range (0..{self.num_samples - 1})")
        rng = sample_rng(self.seed, epoch, index)
        video = self.videos[index // self.clips_per_video]
        return SamplePlan(index, video, self.starts(index, rng), rng, int(epoch))

    def finish(self, plan: SamplePlan, raw: dict) -> dict:
        if self.deferred:
            return self.finish_deferred(plan, raw)
        clip = self.decode(plan.video, raw)
        if self.transform is not None:
            clip = self.transform(clip, plan.rng)
        out = finalize(clip, self.store.quant, flow_mode=self.flow_values, mean_subtract=self.mean_subtract,
                       rgb_mode=self.rgb_values, rgb_mean=_tile(self.rgb_mean, clip.rgb),
                       rgb_std=_tile(self.rgb_std, clip.rgb), mean_groups=self._stacking.mean_groups)
        out.update(label=self.labels[plan.video], video=plan.video, index=plan.index,
                   starts=torch.from_numpy(plan.starts))
        return out

    def finish_deferred(self, plan: SamplePlan, raw: dict) -> dict:
        """A sample whose transform and values (and flow, or decoding) happen on the device:
        uint8 arrays or encoded records, and the epoch that rebuilds its generator there."""
        if self.decode_device is not None:
            from .device_decode import pack_sample

            out = pack_sample(self, plan.video, raw)
        else:
            clip = self.decode(plan.video, raw)
            out = {}
            if clip.rgb is not None:
                out["rgb"] = torch.from_numpy(clip.rgb)
            if clip.flow is not None:
                out[FRAMES_KEY if self.flow == "online" else "flow"] = torch.from_numpy(clip.flow)
            if clip.flow_range is not None:
                out["flow_range"] = torch.from_numpy(np.ascontiguousarray(clip.flow_range))
        out.update(label=self.labels[plan.video], video=plan.video, index=plan.index,
                   starts=torch.from_numpy(plan.starts))
        out[EPOCH_KEY] = plan.epoch
        return out

    def get(self, index: int, epoch: int) -> dict:
        plan = self.plan(index, epoch)
        return self.finish(plan, self.fetch(plan.video, plan.starts))

    def get_many(self, plans, ahead=()) -> Iterator[dict]:
        """Samples of ``plans`` in order, their records read ahead (see
        :meth:`~flowstore.data.readahead.ReadAhead.fetched`) while the current one is decoded."""
        for plan, raw in self.fetched(plans, ahead):
            yield self.finish(plan, raw)


def _tile(values, rgb):
    """Per-channel mean/std repeated for RGB snippets of several frames (3L channels)."""
    if values is None or rgb is None:
        return values
    return tuple(values) * (rgb.shape[1] // 3)


__all__ = ["EPOCH_KEY", "FLOW_SOURCES", "MODALITIES", "ClipDatasetBase", "SamplePlan", "sample_rng"]
