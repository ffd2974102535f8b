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
from .readahead import ReadAhead
from .sampling import DEFAULT_STACKING, STACKINGS, check_sampling, default_length, sample_starts
from .source import ShardOpener, check_stacking, decode_snippets, open_source, read_snippets, source_name
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Clip, finalize

MODALITIES = ("rgb", "flow", "both")


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


class ClipDatasetBase(ReadAhead):
    """Configuration, sample list and the loading of one clip; the arguments are
    :class:`~flowstore.data.dataset.StoreClipDataset`'s."""

    def __init__(self, store, labels=None, *, videos: Sequence[str] | None = None, modality: str = "flow",
                 sampling: str = "tsn", stacking: str = DEFAULT_STACKING, num_segments: int = 3, length: int | None = None, train: bool = True,
                 test_views: int | None = None, transform=None, flow_values: str = "pixels",
                 mean_subtract: str | None = None, rgb_values: str = "float", rgb_mean=IMAGENET_MEAN,
                 rgb_std=IMAGENET_STD, clips_per_video: int = 1, seed: int = 0, min_flows: int = 1,
                 read_ahead: int = 8, read_threads: int = 2):
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
        self._stacking = check_stacking(self.store, stacking, self.length) if modality != "rgb" else STACKINGS[stacking]
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
        return read_snippets(self.store, video, starts, self.length, self.modality, self.stacking)

    def decode(self, video: str, raw: dict, out: Clip | None = None) -> Clip:
        """Decoded uint8 channel-first snippets from :meth:`fetch`'s records (the CPU half);
        written into ``out``'s arrays when given (e.g. a slot of a batch in shared memory)."""
        return decode_snippets(self.store, video, raw, self.length, out)

    def load(self, video: str, starts: np.ndarray) -> Clip:
        """Read and decode the snippets at ``starts`` (uint8, channel-first)."""
        return self.decode(video, self.fetch(video, starts))

    # -- one sample: plan (cheap) -> fetch (I/O) -> decode + transform (CPU) -----------------
    def plan(self, index: int, epoch: int) -> SamplePlan:
        if not 0 <= index < self.num_samples:
            raise OutOfRangeError(f"sample {index} out of range (0..{self.num_samples - 1})")
        rng = sample_rng(self.seed, epoch, index)
        video = self.videos[index // self.clips_per_video]
        return SamplePlan(index, video, self.starts(index, rng), rng)

    def finish(self, plan: SamplePlan, raw: dict) -> dict:
        clip = self.decode(plan.video, raw)
        if self.transform is not None:
            clip = self.transform(clip, plan.rng)
        out = finalize(clip, self.store.quant, flow_mode=self.flow_values, mean_subtract=self.mean_subtract,
                       rgb_mode=self.rgb_values, rgb_mean=_tile(self.rgb_mean, clip.rgb),
                       rgb_std=_tile(self.rgb_std, clip.rgb), mean_groups=self._stacking.mean_groups)
        out.update(label=self.labels[plan.video], video=plan.video, index=plan.index,
                   starts=torch.from_numpy(plan.starts))
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


__all__ = ["MODALITIES", "ClipDatasetBase", "SamplePlan", "sample_rng"]
