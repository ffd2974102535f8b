"""Two-stream datasets straight from a flowstore store (``torch.utils.data``).

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
* Map-style: :class:`ClipSampler` hands ``(index, epoch)`` keys to the workers, so the epoch
  reaches persistent workers too; it shards samples across distributed ranks (strided,
  ``pad=False``: each sample exactly once per epoch).
* Reading overlaps decoding: each worker's reader threads fetch a batch's records while it
  decodes, and :class:`StoreLoader` appends to every batch a :class:`Lookahead` naming the
  same worker's next batch, whose records are read during this one (a cold page cache then
  costs little more than a warm one). Batches reach the main process in shared-memory
  buffers that each worker reuses (:mod:`flowstore.data.batch_memory`) instead of a new
  segment per batch as PyTorch does.
* :class:`StoreIterableDataset` splits the samples, grouped by shard, into contiguous ranges:
  one per (rank, worker), so each consumer reads few shards and every sample is yielded exactly
  once per epoch over all ranks and workers. Call ``set_epoch`` before each epoch (with
  ``persistent_workers=False``, the default of :func:`make_loader` for iterable datasets).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler, default_collate, get_worker_info

from ..codec import decode_gray, decode_rgb
from .batch_memory import SLOT_KEY, BatchSlots, batch_buffers, set_worker_slots
from .labels import as_label_map
from .sampling import check_sampling, default_length, sample_starts, snippet_indices
from .transforms import IMAGENET_MEAN, IMAGENET_STD, Clip, finalize
from ..errors import InputError, OutOfRangeError, UnknownNameError

MODALITIES = ("rgb", "flow", "both")
_OPEN_LOCK = threading.Lock()


def open_source(store):
    """A path opens a StoreReader; an already open reader (or rawframes/in-memory source) is used as is."""
    if isinstance(store, (str, os.PathLike)):
        from .. import open_store

        return open_store(store)
    return store


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


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random choice of sample ``index`` in ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class _ClipSource:
    """What both dataset kinds share: configuration, sample list and the loading of one clip."""

    def __init__(self, store, labels=None, *, videos: Sequence[str] | None = None, modality: str = "flow",
                 sampling: str = "tsn", num_segments: int = 3, length: int | None = None, train: bool = True,
                 test_views: int | None = None, transform=None, flow_values: str = "pixels",
                 mean_subtract: str | None = None, rgb_values: str = "float", rgb_mean=IMAGENET_MEAN,
                 rgb_std=IMAGENET_STD, clips_per_video: int = 1, seed: int = 0, min_flows: int = 1,
                 read_ahead: int = 8, read_threads: int = 2):
        if modality not in MODALITIES:
            raise InputError(f"unknown modality {modality!r}; choose from {list(MODALITIES)}")
        self.store = open_source(store)
        self.modality = modality
        self.sampling = check_sampling(sampling)
        self.length = default_length(sampling, modality) if length is None else int(length)
        if sampling == "frame" and self.length != 1:
            raise InputError("frame sampling has length 1")
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
        store_name = f"store {getattr(self.store, 'root', '')}".strip()
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
        self.read_ahead = int(read_ahead)
        self.read_threads = max(1, int(read_threads))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = None
        self._early: dict = {}  # records read ahead for the next batch: fetch key -> future
        self._opened: set[str] = set()
        self._opened_pid = None

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

    def _open_shard(self, video: str) -> None:
        """Open ``video``'s shard under a lock the first time in this process: StoreReader opens
        shards lazily, and two reader threads must not open the same one at once."""
        if getattr(self.store, "entry", None) is None:
            return
        pid = os.getpid()
        if self._opened_pid != pid:
            self._opened, self._opened_pid = set(), pid
        shard = self.shard_of(video)
        if shard not in self._opened:
            with _OPEN_LOCK:
                if shard not in self._opened:
                    self.store.flow_bytes(video, [])  # opens the shard handle, reads nothing
                    self._opened.add(shard)

    def fetch(self, video: str, starts: np.ndarray) -> dict:
        """The encoded records of the snippets at ``starts`` (the I/O half of :meth:`load`)."""
        src = self.store
        self._open_shard(video)
        starts = np.asarray(starts, np.int64)
        L = self.length
        raw = {"starts": starts}
        if self.modality in ("flow", "both"):
            idx = snippet_indices(starts, L, src.num_flows(video))
            raw["flow"] = src.flow_bytes(video, [int(i) for i in idx.ravel()])
            if src.quant.scheme == "minmax":
                raw["flow_range"] = np.stack([src.flow_range(video, int(i)) for i in idx.ravel()])
        if self.modality in ("rgb", "both"):
            n = src.num_frames(video)
            if self.modality == "rgb":
                idx = snippet_indices(starts, L, n)
            else:
                idx = np.minimum(starts + L // 2, n - 1)[:, None]
            raw["rgb"] = [[src.frame_bytes(video, int(i)) for i in row] for row in idx]
        return raw

    def decode(self, video: str, raw: dict, out: Clip | None = None) -> Clip:
        """Decoded uint8 channel-first snippets from :meth:`fetch`'s records (the CPU half);
        written into ``out``'s arrays when given (e.g. a slot of a batch in shared memory)."""
        src = self.store
        w, h = src.frame_size(video)
        S, L = len(raw["starts"]), self.length
        clip = Clip()
        if "flow" in raw:
            xs, ys = raw["flow"]
            flow = out.flow if out is not None and out.flow is not None else np.empty((S, 2 * L, h, w), np.uint8)
            codec = src.flow_codec
            for k, (bx, by) in enumerate(zip(xs, ys)):
                s, l = divmod(k, L)
                flow[s, 2 * l] = decode_gray(bx, codec, (h, w))
                flow[s, 2 * l + 1] = decode_gray(by, codec, (h, w))
            clip.flow = flow
            if "flow_range" in raw:
                clip.flow_range = raw["flow_range"].reshape(S, L, 4)
        if "rgb" in raw:
            rows = raw["rgb"]
            rgb = (out.rgb if out is not None and out.rgb is not None
                   else np.empty((S, 3 * len(rows[0]), h, w), np.uint8))
            for s, row in enumerate(rows):
                for l, data in enumerate(row):
                    rgb[s, 3 * l:3 * l + 3] = decode_rgb(data, src.frame_codec, (h, w)).transpose(2, 0, 1)
            clip.rgb = rgb
        return clip

    def load(self, video: str, starts: np.ndarray) -> Clip:
        """Read and decode the snippets at ``starts`` (uint8, channel-first)."""
        return self.decode(video, self.fetch(video, starts))

    # -- one sample: plan (cheap) -> fetch (I/O) -> decode + transform (CPU) -----------------
    def plan(self, index: int, epoch: int):
        if not 0 <= index < self.num_samples:
            raise OutOfRangeError(f"sample {index} out of range (0..{self.num_samples - 1})")
        rng = sample_rng(self.seed, epoch, index)
        video = self.videos[index // self.clips_per_video]
        return index, video, self.starts(index, rng), rng

    def finish(self, plan, raw: dict) -> dict:
        index, video, starts, rng = plan
        clip = self.decode(video, raw)
        if self.transform is not None:
            clip = self.transform(clip, rng)
        out = finalize(clip, self.store.quant, flow_mode=self.flow_values, mean_subtract=self.mean_subtract,
                       rgb_mode=self.rgb_values, rgb_mean=_tile(self.rgb_mean, clip.rgb),
                       rgb_std=_tile(self.rgb_std, clip.rgb))
        out.update(label=self.labels[video], video=video, index=index, starts=torch.from_numpy(starts))
        return out

    def get(self, index: int, epoch: int) -> dict:
        p = self.plan(index, epoch)
        return self.finish(p, self.fetch(p[1], p[2]))

    def get_many(self, plans, ahead=()) -> Iterator[dict]:
        """Samples of ``plans`` in order, their records read ahead by ``read_threads`` background
        threads (up to ``read_ahead`` samples ahead) while the current one is decoded, so I/O
        waits (e.g. on a cold page cache) overlap with decoding. Both sides mostly run without
        the GIL: cv2.imdecode releases it, and py-lmdb faults record pages in with it released.
        ``ahead``: see :meth:`fetched`."""
        for p, raw in self.fetched(plans, ahead):
            yield self.finish(p, raw)

    def fetched(self, plans, ahead=()) -> Iterator[tuple]:
        """``(plan, records)`` in order, read ahead as described in :meth:`get_many`.

        ``ahead``: plans of the batch this worker gets next (see :class:`Lookahead`); their
        records are read once every record of ``plans`` is queued, and used by the next call."""
        plans = iter(plans)
        if self.read_ahead <= 0:
            for p in plans:
                yield p, self.fetch(p[1], p[2])
            return
        pool = self._reader_pool()
        early, self._early = self._early, {}
        ahead = list(ahead)

        def start(p):
            fut = early.pop(_fetch_key(p), None)
            return fut if fut is not None else pool.submit(self.fetch, p[1], p[2])

        def start_ahead():  # queued behind this batch's own reads
            for p in ahead:
                self._early[_fetch_key(p)] = pool.submit(self.fetch, p[1], p[2])
            ahead.clear()

        pending: deque = deque()
        for p in plans:
            pending.append((p, start(p)))
            if len(pending) > self.read_ahead:
                break
        else:
            start_ahead()
        try:
            while pending:
                p, fut = pending.popleft()
                nxt = next(plans, None)
                if nxt is not None:
                    pending.append((nxt, start(nxt)))
                elif ahead:
                    start_ahead()
                yield p, fut.result()
        finally:
            for fut in early.values():  # read ahead for a batch that went elsewhere: drop
                fut.cancel()

    def _reader_pool(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():  # threads do not survive a fork
            self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="flowstore-read")
            self._pool_pid = os.getpid()
            self._early = {}
        return self._pool

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_early"] = {}
        state["_opened"], state["_opened_pid"] = set(), None
        return state

    def shard_of(self, video: str) -> str:
        entry = getattr(self.store, "entry", None)
        return str(entry(video).get("shard", "")) if entry is not None else ""


def _tile(values, rgb):
    """Per-channel mean/std repeated for RGB snippets of several frames (3L channels)."""
    if values is None or rgb is None:
        return values
    return tuple(values) * (rgb.shape[1] // 3)


class StoreClipDataset(_ClipSource, Dataset):
    """Map-style dataset: ``len = videos * clips_per_video``; ``ds[i]`` or ``ds[(i, epoch)]``.

    Arguments: ``store`` (path or open reader), ``labels`` (:class:`~flowstore.data.labels.Annotations`,
    ``{video: label}`` or None), ``modality`` rgb|flow|both, ``sampling`` tsn|stack|frame,
    ``num_segments`` (tsn K, default 3), ``length`` (snippet length; default 1 frame / 5 flows
    for tsn, 10 for stack), ``train`` (random offsets) or test (centres / ``test_views`` evenly
    spaced snippets), ``transform`` (see :mod:`flowstore.data.transforms`), ``flow_values``
    pixels|q128|uint8, ``mean_subtract`` None|field|stack, ``rgb_values`` float|uint8,
    ``clips_per_video``, ``seed``.
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

    def _direct(self, plans) -> bool:
        """Whether the batch is plain stacked uint8 clips of one shape (no transform to apply)."""
        if self.transform is not None or not plans:
            return False
        if self.modality != "rgb" and self.flow_values != "uint8":
            return False
        if self.modality != "flow" and self.rgb_values != "uint8":
            return False
        return (len({len(p[2]) for p in plans}) == 1
                and len({self.store.frame_size(p[1]) for p in plans}) == 1)

    def batch_shapes(self, batch_size: int, snippets: int, frame_size: tuple[int, int]) -> dict:
        """Shapes of the uint8 tensors :meth:`decode_batch` fills: ``{"flow": (B, S, 2L, H, W),
        "rgb": (B, S, 3L or 3, H, W)}`` as the modality has them; ``frame_size`` is (W, H)."""
        w, h = frame_size
        L = self.length
        shapes = {}
        if self.modality in ("flow", "both"):
            shapes["flow"] = (batch_size, snippets, 2 * L, h, w)
        if self.modality in ("rgb", "both"):
            shapes["rgb"] = (batch_size, snippets, 3 * (L if self.modality == "rgb" else 1), h, w)
        return shapes

    def decode_batch(self, plans, ahead=()) -> "Batch":
        """Decode a batch straight into its stacked tensors: the same result as
        ``collate([self.get(...) for ...])`` without per-sample arrays or a copy into the batch."""
        shapes = self.batch_shapes(len(plans), len(plans[0][2]), self.store.frame_size(plans[0][1]))
        batch = Batch()
        with batch_buffers([(shape, torch.uint8) for shape in shapes.values()]) as (tensors, slot):
            batch.update(zip(shapes, tensors))
            if slot is not None:
                batch[SLOT_KEY] = slot
            for j, (p, raw) in enumerate(self.fetched(plans, ahead)):
                if "flow_range" in raw:  # minmax ranges do not travel with uint8 batches
                    raw.pop("flow_range")
                self.decode(p[1], raw, Clip(rgb=batch["rgb"][j].numpy() if "rgb" in batch else None,
                                            flow=batch["flow"][j].numpy() if "flow" in batch else None))
        batch["label"] = torch.tensor([self.labels[p[1]] for p in plans], dtype=torch.int64)
        batch["video"] = [p[1] for p in plans]
        batch["index"] = torch.tensor([p[0] for p in plans], dtype=torch.int64)
        batch["starts"] = torch.from_numpy(np.stack([np.asarray(p[2], np.int64) for p in plans]))
        return batch


def _fetch_key(plan) -> tuple:
    index, video, starts = plan[0], plan[1], plan[2]
    return index, video, np.asarray(starts, np.int64).tobytes()


class Lookahead(tuple):
    """Appended to a batch's keys by :class:`StoreLoader`: the keys of the batch the same
    worker receives next, so the worker reads its records while decoding this batch (without
    it, every batch would start with an unhidden read). A wrong guess only costs the read."""


class _LookaheadBatches:
    """A batch sampler's batches, each followed by a :class:`Lookahead` of batch ``b + workers``:
    with ``in_order`` (the default) a DataLoader hands batch ``b`` of an epoch to worker
    ``b % workers``."""

    def __init__(self, batches, workers: int):
        self.batches, self.workers = batches, int(workers)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        batches = [list(b) for b in self.batches]
        for b, keys in enumerate(batches):
            nxt = b + self.workers
            yield keys + [Lookahead(batches[nxt])] if nxt < len(batches) else keys


class Batch(dict):
    """A batch collated inside a worker by :meth:`StoreClipDataset.decode_batch`."""


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
    Batches come out as plain dicts of tensors. ``recycle_batches=False`` turns reuse off."""

    def __init__(self, dataset, *, recycle_batches: bool = True, **kwargs):
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

    def __iter__(self):
        batches = super().__iter__()
        if self.batch_slots is None:
            return batches
        return map(self.batch_slots.lease, batches)

    @property
    def _index_sampler(self):
        # DataLoader's own hook for the batches it sends to workers: add a Lookahead to each
        sampler = super()._index_sampler
        if (self.num_workers > 0 and self._auto_collation and getattr(self, "in_order", True)
                and isinstance(self.dataset, StoreClipDataset) and self.dataset.read_ahead > 0):
            return _LookaheadBatches(sampler, self.num_workers)
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


class ClipSampler(Sampler):
    """Yields ``(index, epoch)`` for :class:`StoreClipDataset`: a per-epoch seeded permutation
    (or the identity without ``shuffle``), strided across ranks. ``pad=True`` repeats samples so
    every rank gets the same count (DDP needs that); the default gives each sample exactly once."""

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


class StoreIterableDataset(_ClipSource, IterableDataset):
    """Iterable dataset: every sample exactly once per epoch over all ranks x workers.

    The samples are grouped by shard (shards in a per-epoch seeded order when ``shuffle``, and
    samples shuffled within their shard), and the sequence is cut into ``world_size *
    num_workers`` contiguous ranges whose sizes differ by at most one; consumer
    ``rank * num_workers + worker_id`` reads its range. Same arguments as
    :class:`StoreClipDataset`, plus ``shuffle``, ``rank`` and ``world_size``.
    """

    def __init__(self, store, labels=None, *, shuffle: bool = True, rank: int | None = None,
                 world_size: int | None = None, **kwargs):
        super().__init__(store, labels, **kwargs)
        self.shuffle = shuffle
        self.rank, self.world_size = distributed_info(rank, world_size)

    def epoch_order(self) -> list[int]:
        """All sample indices of the current epoch, grouped by shard."""
        groups: dict[str, list[int]] = {}
        for vi, video in enumerate(self.videos):
            groups.setdefault(self.shard_of(video), []).extend(
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
    per sample, see :func:`sample_rng`)."""
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
                pad: bool = False, recycle_batches: bool = True, **kwargs) -> StoreLoader:
    """A DataLoader wired for flowstore datasets: workers open their own store handles, one
    decode thread each, prefetching ``prefetch_factor`` batches per worker, memory pinned when
    CUDA is available, batches handed over in reused shared-memory buffers
    (``recycle_batches``; see :class:`StoreLoader`). Map-style datasets get a
    :class:`ClipSampler` (``shuffle``, ranks). Unless a ``collate_fn`` is given, batches are
    collated by :func:`collate`, and uint8 clips without a transform are decoded straight into
    the batch (``dataset.batch_in_worker = True``)."""
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
    if "collate_fn" not in common and isinstance(dataset, (StoreClipDataset, StoreIterableDataset)):
        common["collate_fn"] = collate
        if isinstance(dataset, StoreClipDataset):
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


__all__ = [
    "MODALITIES", "Batch", "ClipSampler", "Lookahead", "StoreClipDataset", "StoreIterableDataset", "StoreLoader",
    "collate", "distributed_info", "make_loader", "open_source", "prepare_fork", "sample_rng", "set_epoch",
    "worker_init",
]
