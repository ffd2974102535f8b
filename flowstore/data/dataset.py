"""The map-style two-stream dataset, :class:`StoreClipDataset`, straight from a flowstore store.

::

    from flowstore.data import StoreClipDataset, make_loader, read_demo_labels, set_epoch, train_transform

    labels = read_demo_labels("demo/labels.csv", split="train")
    ds = StoreClipDataset("demo/store", labels, modality="flow", sampling="stack",
                          transform=train_transform(224), train=True)
    loader = make_loader(ds, batch_size=32, num_workers=8, shuffle=True, seed=0)
    for epoch in range(10):
        set_epoch(loader, epoch)
        for batch in loader:          # batch["flow"]: (B, S, 2L, 224, 224), batch["label"]: (B,)
            ...

A sample is a dict: ``"rgb"`` float32 ``(S, 3L, H, W)`` and/or ``"flow"`` ``(S, 2L, H, W)``
(x/y interleaved), ``"label"`` (int, -1 without labels), ``"video"`` (store id), ``"index"``
(sample number) and ``"starts"`` (S snippet starts, 0-based). S is the number of snippets
(K segments for tsn, 1 for stack/frame in training; the test views in testing; times 10 after
:class:`~flowstore.data.transforms.TenCrop`). With ``modality="both"`` each snippet's RGB
frame is the one in the middle of its flow snippet, ``start + length // 2``.

Processes and randomness
------------------------
* The store is opened in the main process for its manifest only; every DataLoader worker opens
  its own LMDB/HDF5 handles on first use after the fork (StoreReader drops handles when pickled
  or forked), and decodes with OpenCV from the encoded bytes (one thread per worker).
* Every random choice of sample ``i`` in epoch ``e`` (segment offsets, crops, flips) comes from
  ``numpy.random.default_rng([seed, e, i])``: results do not depend on the number of workers,
  on which worker loads a sample, or on the order samples are loaded.
* Map-style: :class:`~flowstore.data.samplers.ClipSampler` hands ``(index, epoch)`` keys to the workers, so the epoch
  reaches persistent workers too; it shards samples across distributed ranks (strided,
  ``pad=False``: each sample exactly once per epoch).
* Reading overlaps decoding: each worker's reader threads fetch a batch's records while it
  decodes, and :class:`~flowstore.data.loader.StoreLoader` appends to every batch a
  :class:`~flowstore.data.readahead.Lookahead` naming the
  same worker's next batch, whose records are read during this one (a cold page cache then
  costs little more than a warm one). Batches reach the main process in shared-memory
  buffers that each worker reuses (:mod:`flowstore.data.batch_memory`) instead of a new
  segment per batch as PyTorch does.
* :class:`~flowstore.data.samplers.StoreIterableDataset` splits the samples, grouped by shard, into contiguous ranges:
  one per (rank, worker), so each consumer reads few shards and every sample is yielded exactly
  once per epoch over all ranks and workers. Call ``set_epoch`` before each epoch (with
  ``persistent_workers=False``, the default of :func:`~flowstore.data.loader.make_loader` for
  iterable datasets).

Work on the device
------------------
``flow="online"`` (with ``method``, ``engine``, ``flow_params``, ``flow_device``) computes flow
during training instead of reading it: workers read and decode the ``L + stride`` RGB frames of
each stack, and the flow is computed on the device by the engine ``extract`` uses, quantized
with the store's settings and transformed exactly as stored flow
(:mod:`~flowstore.data.device_flow`); every stacking works (bidirectional computes its backward
flows on swapped pairs, so the store needs none; trajectory resamples on the host). ``decode_device="cuda"`` moves JPEG decoding to the device
(nvJPEG, :mod:`~flowstore.data.device_decode`), falling back to the CPU with a warning. Either
way the transform and values are applied on the device, each sample with its own generator, by
a :class:`~flowstore.data.device_clips.DeviceStep` that :func:`~flowstore.data.loader.make_loader`
applies to every batch (with your own DataLoader: ``step = DeviceStep(ds); batch = step(batch)``)::

    ds = StoreClipDataset("demo/store", labels, sampling="stack", transform=train_transform(224),
                          flow="online", method="tvl1", engine="torch", flow_device="cuda")
    for batch in make_loader(ds, batch_size=32, num_workers=8):
        batch["flow"]             # (B, 1, 20, 224, 224) float32 on cuda, as stored flow would be

The sampler, the iterable dataset and the loader live in their own modules
(:mod:`~flowstore.data.samplers`, :mod:`~flowstore.data.loader`); their names are importable from
here as well.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .batch_memory import SLOT_KEY, batch_buffers
from .device_flow import FRAMES_KEY
from .clips import EPOCH_KEY, MODALITIES, ClipDatasetBase, SamplePlan, sample_rng
from .loader import Batch, StoreLoader, collate, make_loader, prepare_fork, set_epoch, worker_init
from .readahead import Lookahead
from .samplers import ClipSampler, StoreIterableDataset, distributed_info
from .source import open_source
from .transforms import Clip


class StoreClipDataset(ClipDatasetBase, Dataset):
    """Map-style dataset: ``len = videos * clips_per_video``; ``ds[i]`` or ``ds[(i, epoch)]``.

    Arguments: ``store`` (path or open reader), ``labels`` (:class:`~flowstore.data.labels.Annotations`,
    ``{video: label}`` or None), ``modality`` rgb|flow|both, ``sampling`` tsn|stack|frame,
    ``stacking`` stack|bidirectional|trajectory (what a flow snippet's 2L channels are, S&Z 2014
    sec. 3.1; see :mod:`flowstore.data.sampling`, "Stackings": bidirectional needs a store
    extracted with ``--direction both``, trajectory a stride-1 store),
    ``num_segments`` (tsn K, default 3), ``length`` (snippet length; default 1 frame / 5 flows
    for tsn, 10 for stack), ``train`` (random offsets) or test (centres / ``test_views`` evenly
    spaced snippets), ``transform`` (see :mod:`flowstore.data.transforms`), ``flow_values``
    pixels|q128|uint8, ``mean_subtract`` None|field|stack, ``rgb_values`` float|uint8,
    ``clips_per_video``, ``seed``; ``flow`` stored|online (``method``, ``engine``,
    ``flow_params``, ``flow_device``: the online flow's engine, by default the store's method and
    parameters) and ``decode_device`` (see "Work on the device" above).
    """

    def __getitem__(self, key) -> dict:
        return self.get(*self._key(key))

    #: set by :func:`make_loader` (with :func:`collate` as the loader's collate_fn): uint8 clips
    #: without a transform are decoded straight into the batch, in shared memory in a worker
    batch_in_worker = False

    def __getitems__(self, keys):
        """A batch (what DataLoader workers call): records read ahead while decoding. Returns
        the samples, or with :attr:`batch_in_worker` possibly a :class:`Batch` already collated.
        A trailing :class:`Lookahead` lists the keys of this worker's next batch."""
        keys = list(keys)
        ahead = keys.pop() if keys and isinstance(keys[-1], Lookahead) else ()
        plans = [self.plan(*self._key(key)) for key in keys]
        ahead = [self.plan(*self._key(key)) for key in ahead] if self.read_ahead > 0 else ()
        if self.batch_in_worker and self._direct(plans):
            return self.decode_batch(plans, ahead)
        return list(self.get_many(plans, ahead))

    def _key(self, key) -> tuple[int, int]:
        index, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        return int(index), int(epoch)

    def _direct(self, plans: list[SamplePlan]) -> bool:
        """Whether the batch is plain stacked uint8 clips of one shape (no transform to apply)."""
        if not plans or self.decode_device is not None:  # encoded records travel as bytes
            return False
        if not self.deferred:  # online flow: transform and values come on the device
            if self.transform is not None:
                return False
            if self.modality != "rgb" and self.flow_values != "uint8":
                return False
            if self.modality != "flow" and self.rgb_values != "uint8":
                return False
            if self._stacking.trajectory and self.store.quant.scheme == "minmax":
                return False  # the trajectory needs the ranges, which uint8 batches do not carry
        return (len({len(p.starts) for p in plans}) == 1
                and len({self.store.frame_size(p.video) for p in plans}) == 1)

    def batch_shapes(self, batch_size: int, snippets: int, frame_size: tuple[int, int]) -> dict:
        """Shapes of the uint8 tensors :meth:`decode_batch` fills: ``{"flow": (B, S, 2L, H, W),
        "rgb": (B, S, 3L or 3, H, W)}`` as the modality has them; ``frame_size`` is (W, H)."""
        w, h = frame_size
        L = self.length
        shapes = {}
        if self.modality in ("flow", "both") and self.flow == "online":
            shapes[FRAMES_KEY] = (batch_size, snippets, 3 * (L + self.stride), h, w)
        elif self.modality in ("flow", "both"):
            shapes["flow"] = (batch_size, snippets, 2 * L, h, w)
        if self.modality in ("rgb", "both"):
            shapes["rgb"] = (batch_size, snippets, 3 * (L if self.modality == "rgb" else 1), h, w)
        return shapes

    def decode_batch(self, plans: list[SamplePlan], ahead=()) -> Batch:
        """Decode a batch straight into its stacked tensors: the same result as
        ``collate([self.get(...) for ...])`` without per-sample arrays or a copy into the batch."""
        shapes = self.batch_shapes(len(plans), len(plans[0].starts), self.store.frame_size(plans[0].video))
        batch = Batch()
        with batch_buffers([(shape, torch.uint8) for shape in shapes.values()]) as (tensors, slot):
            batch.update(zip(shapes, tensors))
            if slot is not None:
                batch[SLOT_KEY] = slot
            for j, (p, raw) in enumerate(self.fetched(plans, ahead)):
                if "flow_range" in raw:  # minmax ranges do not travel with uint8 batches
                    raw.pop("flow_range")
                flow = batch.get("flow", batch.get(FRAMES_KEY))
                self.decode(p.video, raw, Clip(rgb=batch["rgb"][j].numpy() if "rgb" in batch else None,
                                               flow=flow[j].numpy() if flow is not None else None))
        batch["label"] = torch.tensor([self.labels[p.video] for p in plans], dtype=torch.int64)
        batch["video"] = [p.video for p in plans]
        batch["index"] = torch.tensor([p.index for p in plans], dtype=torch.int64)
        batch["starts"] = torch.from_numpy(np.stack([np.asarray(p.starts, np.int64) for p in plans]))
        if self.deferred:
            batch[EPOCH_KEY] = torch.tensor([p.epoch for p in plans], dtype=torch.int64)
        return batch


__all__ = [
    "MODALITIES", "Batch", "ClipSampler", "Lookahead", "SamplePlan", "StoreClipDataset", "StoreIterableDataset",
    "StoreLoader", "collate", "distributed_info", "make_loader", "open_source", "prepare_fork", "sample_rng",
    "set_epoch", "worker_init",
]
