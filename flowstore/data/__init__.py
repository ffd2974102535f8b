"""Two-stream loaders straight from a flowstore store.

* :mod:`~flowstore.data.sampling`: TSN segments, Simonyan–Zisserman stacks, single frames, test views
* :mod:`~flowstore.data.transforms`: multi-scale crop, flip (u negated), resize, 10-crop, values
* :mod:`~flowstore.data.labels`: mmaction2 lists, UCF101 and HMDB51 splits, demo labels
* :mod:`~flowstore.data.dataset`: the map-style dataset (and an overview of processes and randomness)
* :mod:`~flowstore.data.samplers`: the sampler across ranks, the iterable dataset
* :mod:`~flowstore.data.loader`: DataLoader wiring (``make_loader``, ``StoreLoader``, ``collate``)
* :mod:`~flowstore.data.clips`: what both datasets share (plan, fetch, decode of one sample)
* :mod:`~flowstore.data.source`: opening a record source, reading and decoding snippet records
* :mod:`~flowstore.data.readahead`: reader threads and the lookahead to the next batch
* :mod:`~flowstore.data.batch_memory`: shared-memory batch buffers reused by the workers
* :mod:`~flowstore.data.rawframes`: export to / read from mmaction2's rawframes layout
"""
from .dataset import StoreClipDataset
from .labels import (
    Annotations, LabelError, read_class_index, read_demo_labels, read_hmdb51, read_mmaction_list, read_ucf101,
)
from .loader import StoreLoader, make_loader, prepare_fork, set_epoch, worker_init
from .rawframes import RawframesReader, export_rawframes
from .samplers import ClipSampler, StoreIterableDataset
from .transforms import (
    CenterCrop, Clip, Compose, MultiScaleCrop, RandomHorizontalFlip, ResizeClip, TenCrop, eval_transform,
    train_transform,
)

__all__ = [
    "Annotations", "CenterCrop", "Clip", "ClipSampler", "Compose", "LabelError", "MultiScaleCrop",
    "RandomHorizontalFlip", "RawframesReader", "ResizeClip", "StoreClipDataset", "StoreIterableDataset", "StoreLoader",
    "TenCrop",
    "eval_transform", "export_rawframes", "make_loader", "prepare_fork", "read_class_index", "read_demo_labels",
    "read_hmdb51", "read_mmaction_list", "read_ucf101", "set_epoch", "train_transform", "worker_init",
]
