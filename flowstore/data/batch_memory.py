"""Shared-memory batch buffers that DataLoader workers reuse instead of allocating per batch.

A worker hands a batch to the main process in shared memory. PyTorch allocates a new segment
for every batch (``default_collate`` does, via ``_new_shared``), and on Linux that is costly:
the segment is created, zero-filled and faulted in page by page. Measured here for one batch of
8 flow stacks (8 x 20 x 256 x 340 uint8, 14 MB): 15-18 ms to allocate and fill a new segment
against 1.5 ms to refill one already mapped, i.e. ~100 us per 87 KB image, half as much as
decoding the image's JPEG (``benchmarks/loader.py`` and docs/benchmarks.md).

So each worker keeps a few segments ("slots") and refills them. A slot is reused only after the
main process has let go of every tensor built on it, which the main process signals through a
small shared table (``state[worker, slot]``: 1 = in use, 0 = free):

* worker (:func:`allocate`): takes one of its cached slots whose state is 0, or makes a new
  one while it has fewer than ``slots_per_worker``; otherwise it falls back to a fresh
  segment, exactly as PyTorch would (nothing blocks, e.g. when a user keeps every batch).
  The slot's id travels with the batch under :data:`SLOT_KEY`.
* main (:meth:`BatchSlots.lease`, called by :class:`~flowstore.data.dataset.StoreLoader` for
  every batch): re-wraps the batch's tensors so that their memory is owned by one lease
  object; when the last tensor (or view of one) is garbage-collected, the lease sets the
  slot's state back to 0. Pinned copies (``pin_memory=True``) do not point into the slot: the
  slot is released at once.

Only a worker of the loader that created the table writes to its row; only that loader's main
process releases. A worker that restarts (non-persistent workers) starts with no cached slots
and skips slot ids whose state is still 1 from its predecessor's batches.
"""
from __future__ import annotations

import contextlib
import ctypes
import math

import numpy as np
import torch
from ..errors import InputError

SLOT_KEY = "_flowstore_slot"
ALIGN = 64  # bytes: every tensor carved out of a slot starts on a cache line

# the table of the loader whose worker this process is (set by the loader's worker_init_fn)
_worker_slots: "BatchSlots | None" = None
_worker_id: int = -1


class BatchSlots:
    """The shared state table of one loader, ``slots_per_worker`` slots for each worker."""

    def __init__(self, num_workers: int, slots_per_worker: int):
        if num_workers < 1 or slots_per_worker < 1:
            raise InputError("BatchSlots needs at least one worker and one slot per worker")
        self.state = torch.zeros((num_workers, slots_per_worker), dtype=torch.int32).share_memory_()
        self._state = self.state.numpy()
        self._cache: dict[int, torch.Tensor] = {}  # worker-local: slot id -> uint8 segment

    def __getstate__(self):  # a spawned worker gets the table (fd-shared by torch), not the cache
        return {"state": self.state}

    def __setstate__(self, d):
        self.state = d["state"]
        self._state = self.state.numpy()
        self._cache = {}

    @property
    def slots_per_worker(self) -> int:
        return int(self.state.shape[1])

    # -- worker side ---------------------------------------------------------------------------
    def take(self, worker: int, nbytes: int) -> tuple[int | None, torch.Tensor]:
        """A free slot of at least ``nbytes`` bytes: ``(slot id, uint8 segment)``; ``(None,
        fresh segment)`` when every slot is in use."""
        row = self._state[worker]
        best = None
        for slot, seg in self._cache.items():
            if row[slot] == 0 and seg.numel() >= nbytes and (best is None or seg.numel() < self._cache[best].numel()):
                best = slot
        if best is None:
            free = [s for s in range(len(row)) if row[s] == 0 and s not in self._cache]
            if free:  # room for another slot
                best = free[0]
            else:
                small = [s for s, seg in self._cache.items() if row[s] == 0]
                if not small:
                    return None, _new_segment(nbytes)
                best = small[0]  # a free slot too small for this batch: replace it
            self._cache[best] = _new_segment(nbytes)
        row[best] = 1
        return best, self._cache[best]

    def reserve(self, worker: int, nbytes: int) -> int:
        """Create (and fault in) every slot the worker does not have yet, ``nbytes`` each, as
        the first batches would; returns how many. Benchmarks call it before timing."""
        row = self._state[worker]
        made = 0
        for slot in range(len(row)):
            if slot not in self._cache and row[slot] == 0:
                self._cache[slot] = _new_segment(nbytes).fill_(0)
                made += 1
        return made

    # -- main side -----------------------------------------------------------------------------
    def release(self, worker: int, slot: int) -> None:
        self._state[worker, slot] = 0

    def lease(self, batch):
        """A batch from a worker with its slot-backed tensors re-wrapped so that the slot is
        released when the last of them is gone (at once if they were copied, e.g. pinned)."""
        if not isinstance(batch, dict) or SLOT_KEY not in batch:
            return batch
        worker, slot = (int(x) for x in batch.pop(SLOT_KEY))
        shared = [k for k, v in batch.items() if torch.is_tensor(v) and not v.is_pinned() and v.device.type == "cpu"]
        if not shared:
            self.release(worker, slot)
            return batch
        lease = _Lease(self, worker, slot, [batch[k] for k in shared])
        for k in shared:
            batch[k] = _leased_view(batch[k], lease)
        return batch


class _Lease:
    """Owns a slot on the main side; frees it when garbage-collected."""

    __slots__ = ("slots", "worker", "slot", "tensors")

    def __init__(self, slots: BatchSlots, worker: int, slot: int, tensors):
        self.slots, self.worker, self.slot = slots, worker, slot
        self.tensors = tensors  # the received tensors keep the segment mapped

    def __del__(self):
        try:
            self.slots.release(self.worker, self.slot)
        except Exception:  # interpreter shutdown: the table may be gone already
            pass


def _leased_view(tensor: torch.Tensor, lease: _Lease) -> torch.Tensor:
    """The same memory as ``tensor``, as a tensor whose storage keeps ``lease`` alive."""
    tensor = tensor.contiguous()
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return tensor.clone()
    buf = (ctypes.c_char * nbytes).from_address(tensor.data_ptr())
    buf._lease = lease  # numpy keeps buf, torch.from_numpy keeps the array: views keep the lease
    arr = np.frombuffer(buf, dtype=torch.empty(0, dtype=tensor.dtype).numpy().dtype).reshape(tensor.shape)
    return torch.from_numpy(arr)


def _new_segment(nbytes: int) -> torch.Tensor:
    """A uint8 tensor of ``nbytes`` in a new shared-memory segment (what default_collate makes)."""
    nbytes = max(int(nbytes), 1)
    try:
        storage = torch.UntypedStorage._new_shared(nbytes, device="cpu")
        return torch.empty(0, dtype=torch.uint8).set_(storage)
    except (AttributeError, RuntimeError, TypeError):  # private torch API changed: share a copy
        return torch.empty(nbytes, dtype=torch.uint8).share_memory_()


def set_worker_slots(slots: BatchSlots | None, worker_id: int) -> None:
    """Called in a worker by its loader's worker_init_fn."""
    global _worker_slots, _worker_id
    _worker_slots, _worker_id = slots, int(worker_id)


def reserve_worker_slots(nbytes: int) -> int:
    """In a worker of a loader with slots: :meth:`BatchSlots.reserve` for this worker (else 0)."""
    return 0 if _worker_slots is None else _worker_slots.reserve(_worker_id, nbytes)


@contextlib.contextmanager
def batch_buffers(specs):
    """:func:`allocate` for building one batch: ``with batch_buffers(specs) as (tensors, slot)``;
    the slot goes back to the worker's free ones if building the batch fails."""
    tensors, slot = allocate(specs)
    try:
        yield tensors, slot
    except BaseException:
        if slot is not None and _worker_slots is not None:
            _worker_slots.release(*slot)
        raise


def _layout(specs) -> tuple[list[int], list[int], int]:
    """Byte sizes and offsets of ``specs``' tensors in one segment, and the segment's size."""
    sizes = [math.prod(shape) * torch.empty(0, dtype=dtype).element_size() for shape, dtype in specs]
    offsets, total = [], 0
    for n in sizes:
        offsets.append(total)
        total += -(-n // ALIGN) * ALIGN
    return sizes, offsets, total


def batch_nbytes(specs) -> int:
    """Bytes of the slot that one batch of ``specs`` (``[(shape, dtype), ...]``) takes."""
    return _layout(specs)[2]


def allocate(specs) -> tuple[list[torch.Tensor], tuple[int, int] | None]:
    """Tensors of ``specs`` (``[(shape, dtype), ...]``) for one batch, and the slot key to put
    under :data:`SLOT_KEY` (None when not in a worker with slots: then plain tensors, in a
    fresh shared segment inside a worker, on the heap outside)."""
    from torch.utils.data import get_worker_info

    if get_worker_info() is None:
        return [torch.empty(shape, dtype=dtype) for shape, dtype in specs], None
    sizes, offsets, total = _layout(specs)
    slot = None
    if _worker_slots is not None:
        slot, segment = _worker_slots.take(_worker_id, total)
    else:
        segment = _new_segment(total)
    out = [segment[o:o + n].view(dtype).view(shape) for (shape, dtype), o, n in zip(specs, offsets, sizes)]
    return out, (None if slot is None else (_worker_id, slot))


__all__ = [
    "SLOT_KEY", "BatchSlots", "allocate", "batch_buffers", "batch_nbytes", "reserve_worker_slots", "set_worker_slots",
]
