"""DataLoader wiring for the flowstore datasets: :func:`make_loader`, :class:`StoreLoader`
(reused shared-memory batch buffers, a :class:`~flowstore.data.readahead.Lookahead` per batch),
:func:`collate`, :func:`set_epoch` and the fork/worker set-up of OpenCV and torch threads."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, default_collate, get_worker_info

from ..errors import InputError
from .batch_memory import SLOT_KEY, BatchSlots, batch_buffers, set_worker_slots
from .clips import ClipDatasetBase
from .readahead import LookaheadBatches
from .samplers import ClipSampler


class Batch(dict):
    """A batch collated inside a worker by :meth:`~flowstore.data.dataset.StoreClipDataset.decode_batch`."""


def _map_style_clips(dataset) -> bool:
    """A :class:`~flowstore.data.dataset.StoreClipDataset`: a clip dataset that is not iterable."""
    return isinstance(dataset, ClipDatasetBase) and not isinstance(dataset, IterableDataset)


def collate(batch):
    """``collate_fn`` of :func:`make_loader`: a :class:`Batch` is already collated; a list of
    sample dicts is collated as default_collate does, its tensors stacked straight into a
    reused shared-memory slot inside a worker (see :mod:`flowstore.data.batch_memory`)."""
    if isinstance(batch, Batch):
        return dict(batch)
    if not batch or not isinstance(batch[0], dict) or get_worker_info() is None:
        return default_collate(batch)
    first = batch[0]
    stacked = [k for k, v in first.items()
               if torch.is_tensor(v) and all(torch.is_tensor(s.get(k)) and s[k].shape == v.shape
                                             and s[k].dtype == v.dtype for s in batch)]
    with batch_buffers([((len(batch), *first[k].shape), first[k].dtype) for k in stacked]) as (tensors, slot):
        for k, out in zip(stacked, tensors):
            torch.stack([s[k] for s in batch], out=out)
    rest = default_collate([{k: v for k, v in s.items() if k not in stacked} for s in batch])
    out = dict(zip(stacked, tensors))
    out = {k: out[k] if k in out else rest[k] for k in first}
    if slot is not None:
        out[SLOT_KEY] = slot
    return out


class StoreLoader(DataLoader):
    """A DataLoader whose workers reuse shared-memory batch buffers (:mod:`flowstore.data.
    batch_memory`) instead of allocating a segment per batch; otherwise a plain DataLoader.
    Batches come out as plain dicts of tensors. ``recycle_batches=False`` turns reuse off.
    ``device_step`` (e.g. a :class:`~flowstore.data.device_clips.DeviceStep`, what
    :func:`make_loader` gives a dataset that defers work to a device) is applied to every batch."""

    def __init__(self, dataset, *, recycle_batches: bool = True, device_step=None, **kwargs):
        workers = int(kwargs.get("num_workers", 0) or 0)
        slots = None
        if recycle_batches and workers > 0:
            prefetch = kwargs.get("prefetch_factor") or 2
            # in flight per worker: prefetch_factor batches; held by the user: the current
            # batch and the previous one (alive until the loop variable is reassigned)
            slots = BatchSlots(workers, prefetch + 3)
            kwargs["worker_init_fn"] = _SlotWorkerInit(slots, kwargs.get("worker_init_fn"))
        super().__init__(dataset, **kwargs)
        self.batch_slots = slots
        self.device_step = device_step

    def __iter__(self):
        batches = super().__iter__()
        if self.batch_slots is not None:
            batches = map(self.batch_slots.lease, batches)
        if self.device_step is not None:
            batches = map(self.device_step, batches)
        return batches

    @property
    def _index_sampler(self):
        # DataLoader's own hook for the batches it sends to workers: add a Lookahead to each
        sampler = super()._index_sampler
        if (self.num_workers > 0 and self._auto_collation and getattr(self, "in_order", True)
                and _map_style_clips(self.dataset) and self.dataset.read_ahead > 0):
            return LookaheadBatches(sampler, self.num_workers)
        return sampler


class _SlotWorkerInit:
    """worker_init_fn of a :class:`StoreLoader`: tells the worker its slot table, then runs
    the user's worker_init_fn."""

    def __init__(self, slots: BatchSlots, inner=None):
        self.slots, self.inner = slots, inner

    def __call__(self, worker_id: int) -> None:
        set_worker_slots(self.slots, worker_id)
        if self.inner is not None:
            self.inner(worker_id)


def prepare_fork() -> None:
    """Call in the main process before DataLoader workers fork (:func:`make_loader` does):
    OpenCV is set to one thread here, which stops its thread pool. A child forked while that
    pool runs inherits it without its threads and can deadlock inside OpenCV (e.g. in
    cv2.setNumThreads); mmengine sets ``cv2.setNumThreads(0)`` for the same reason. The main
    process keeps one OpenCV thread afterwards."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: one OpenCV/torch thread per worker, and numpy/random
    seeded from torch's per-worker seed (for user transforms; flowstore's own randomness is
    per sample, see :func:`~flowstore.data.clips.sample_rng`)."""
    import random

    import cv2

    if cv2.getNumThreads() != 1:  # 1 already when the parent called prepare_fork()
        cv2.setNumThreads(1)
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(dataset, batch_size: int = 1, *, shuffle: bool = True, num_workers: int = 2, seed: int | None = None,
                drop_last: bool = False, pin_memory: bool | None = None, prefetch_factor: int | None = 4,
                persistent_workers: bool | None = None, rank: int | None = None, world_size: int | None = None,
                pad: bool = False, recycle_batches: bool = True, decode_device: str | None = None,
                **kwargs) -> StoreLoader:
    """A DataLoader wired for flowstore datasets: workers open their own store handles, one
    decode thread each, prefetching ``prefetch_factor`` batches per worker, memory pinned when
    CUDA is available, batches handed over in reused shared-memory buffers
    (``recycle_batches``; see :class:`StoreLoader`). Map-style datasets get a
    :class:`~flowstore.data.samplers.ClipSampler` (``shuffle``, ranks). Unless a ``collate_fn``
    is given, batches are collated by :func:`collate`, and uint8 clips without a transform are
    decoded straight into the batch (``dataset.batch_in_worker = True``).

    ``decode_device`` (e.g. ``"cuda"``) sets the dataset's: JPEG records are decoded there
    (:mod:`flowstore.data.device_decode`). A dataset that defers work to a device (that, or
    ``flow="online"``) gets a :class:`~flowstore.data.device_clips.DeviceStep`: batches come
    out finished on the device."""
    if decode_device is not None:
        from .device_decode import check_decode_device

        dataset.decode_device = check_decode_device(decode_device, dataset.store)
    if isinstance(dataset, ClipDatasetBase) and dataset.deferred and "device_step" not in kwargs:
        from .device_clips import DeviceStep

        kwargs["device_step"] = DeviceStep(dataset)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    if num_workers > 0:
        prepare_fork()
    common = dict(batch_size=batch_size, num_workers=num_workers, drop_last=drop_last, pin_memory=pin_memory,
                  worker_init_fn=worker_init, recycle_batches=recycle_batches, **kwargs)
    if num_workers > 0:
        common["prefetch_factor"] = prefetch_factor
    else:
        common.pop("worker_init_fn")
    if "collate_fn" not in common and isinstance(dataset, ClipDatasetBase):
        common["collate_fn"] = collate
        if _map_style_clips(dataset):
            dataset.batch_in_worker = True  # uint8 clips are decoded straight into the batch
    if isinstance(dataset, IterableDataset):
        if rank is not None or world_size is not None:
            raise InputError("set rank/world_size on the StoreIterableDataset itself")
        common["persistent_workers"] = bool(persistent_workers) and num_workers > 0
        return StoreLoader(dataset, **common)
    sampler = ClipSampler(len(dataset), shuffle=shuffle, seed=dataset.seed if seed is None else seed,
                          rank=rank, world_size=world_size, pad=pad)
    common["persistent_workers"] = (num_workers > 0) if persistent_workers is None else persistent_workers
    return StoreLoader(dataset, sampler=sampler, **common)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Start epoch ``epoch``: the sampler's permutation and the dataset's random choices."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


__all__ = ["Batch", "StoreLoader", "collate", "make_loader", "prepare_fork", "set_epoch", "worker_init"]
