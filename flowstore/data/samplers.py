"""Which samples each consumer reads in an epoch: :class:`ClipSampler` for the map-style
dataset, and :class:`StoreIterableDataset`, which orders and splits the samples itself.

Both split across distributed ranks (:func:`distributed_info`) so that every sample is read
exactly once per epoch (unless ``pad=True``, which DDP needs), seeded per epoch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import IterableDataset, Sampler, get_worker_info

from ..errors import InputError
from .clips import ClipDatasetBase


def distributed_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """``(rank, world_size)``: the given values, else torch.distributed's when initialised, else (0, 1)."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = 0 if rank is None else rank
            world_size = 1 if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise InputError(f"rank {rank} is not in 0..{world_size - 1}")
    return int(rank), int(world_size)


class ClipSampler(Sampler):
    """Yields ``(index, epoch)`` for :class:`~flowstore.data.dataset.StoreClipDataset`: a
    per-epoch seeded permutation (or the identity without ``shuffle``), strided across ranks, so
    the epoch reaches persistent workers too. ``pad=True`` repeats samples so every rank gets
    the same count (DDP needs that); the default gives each sample exactly once."""

    def __init__(self, num_samples: int, *, shuffle: bool = True, seed: int = 0, rank: int | None = None,
                 world_size: int | None = None, pad: bool = False):
        self.num_samples = int(num_samples)
        self.shuffle = shuffle
        self.seed = int(seed)
        self.rank, self.world_size = distributed_info(rank, world_size)
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        n = self.num_samples
        order = (np.random.default_rng([self.seed, self.epoch, 0x5A3]).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.pad and n % self.world_size:
            order = np.concatenate([order, order[: self.world_size - n % self.world_size]])
        return order[self.rank::self.world_size]

    def __iter__(self):
        epoch = self.epoch
        return iter([(int(i), epoch) for i in self.order()])

    def __len__(self) -> int:
        n = self.num_samples
        if self.pad:
            return -(-n // self.world_size)
        return len(range(self.rank, n, self.world_size))


class StoreIterableDataset(ClipDatasetBase, IterableDataset):
    """Iterable dataset: every sample exactly once per epoch over all ranks x workers.

    The samples are grouped by shard (shards in a per-epoch seeded order when ``shuffle``, and
    samples shuffled within their shard), and the sequence is cut into ``world_size *
    num_workers`` contiguous ranges whose sizes differ by at most one; consumer
    ``rank * num_workers + worker_id`` reads its range. Same arguments as
    :class:`~flowstore.data.dataset.StoreClipDataset`, plus ``shuffle``, ``rank`` and
    ``world_size``.
    """

    def __init__(self, store, labels=None, *, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None, **kwargs):
        super().__init__(store, labels, **kwargs)
        self.shuffle = shuffle
        self.rank, self.world_size = distributed_info(rank, world_size)

    def epoch_order(self) -> list[int]:
        """All sample indices of the current epoch, grouped by shard (one group for a source
        without shards)."""
        groups: dict[str, list[int]] = {}
        for vi, video in enumerate(self.videos):
            groups.setdefault(self.shard_of(video) or "", []).extend(
                range(vi * self.clips_per_video, (vi + 1) * self.clips_per_video))
        names = sorted(groups)
        rng = np.random.default_rng([self.seed, self.epoch, 0x17E])
        if self.shuffle:
            names = [names[i] for i in rng.permutation(len(names))]
        order = []
        for name in names:
            members = groups[name]
            if self.shuffle:
                members = [members[i] for i in rng.permutation(len(members))]
            order.extend(members)
        return order

    def consumer_range(self, consumer: int, consumers: int, total: int) -> range:
        return range(consumer * total // consumers, (consumer + 1) * total // consumers)

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        order = self.epoch_order()
        consumer = self.rank * workers + worker
        epoch = self.epoch
        mine = self.consumer_range(consumer, self.world_size * workers, len(order))
        yield from self.get_many(self.plan(order[k], epoch) for k in mine)

    def __len__(self) -> int:
        """Samples of this rank over all its workers."""
        return len(self.consumer_range(self.rank, self.world_size, self.num_samples))


__all__ = ["ClipSampler", "StoreIterableDataset", "distributed_info"]
