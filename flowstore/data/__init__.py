"""Two-stream loaders straight from a flowstore store.

* :mod:`~flowstore.data.sampling`: TSN segments, Simonyan–Zisserman stacks, single frames, test views
* :mod:`~flowstore.data.transforms`: multi-scale crop, flip (u negated), resize, 10-crop, values
* :mod:`~flowstore.data.labels`: mmaction2 lists, UCF101 and HMDB51 splits, demo labels
* :mod:`~flowstore.data.dataset`: map-style and iterable datasets, sampler, DataLoader wiring
* :mod:`~flowstore.data.batch_memory`: shared-memory batch buffers reused by the workers
* :mod:`~flowstore.data.rawframes`: export to / read from mmaction2's rawframes layout
* :mod:`~flowstore.data.bench`: ``flowstore bench-loader``
"""
from .dataset import (
    ClipSampler, StoreClipDataset, StoreIterableDataset, StoreLoader, make_loader, prepare_fork, set_epoch,
    worker_init,
)
from .labels import (
    Annotations, LabelError, read_class_index, read_demo_labels, read_hmdb51, read_mmaction_list, read_ucf101,
)
from .rawframes import RawframesReader, export_rawframes
from .transforms import (
    CenterCrop, Clip, Compose, MultiScaleCrop, RandomHorizontalFlip, Resize, TenCrop, eval_transform,
    train_transform,
)

__all__ = [
    "Annotations", "CenterCrop", "Clip", "ClipSampler", "Compose", "LabelError", "MultiScaleCrop",
    "RandomHorizontalFlip", "RawframesReader", "Resize", "StoreClipDataset", "StoreIterableDataset", "StoreLoader",
    "TenCrop",
    "eval_transform", "export_rawframes", "make_loader", "prepare_fork", "read_class_index", "read_demo_labels",
    "read_hmdb51", "read_mmaction_list", "read_ucf101", "set_epoch", "train_transform", "worker_init",
]
