"""Reused shared-memory batch buffers: a batch's memory is never overwritten while any tensor
(or view) of it is alive, slots come back when the batches are dropped, and a worker that runs
out of slots falls back to fresh memory instead of blocking."""
import gc
import time

import pytest
import torch
from torch.utils.data import default_collate

from flowstore.data.batch_memory import SLOT_KEY, BatchSlots
from flowstore.data.dataset import StoreClipDataset, make_loader
from flowstore.data.transforms import train_transform
from flowstore.decode import FrameResize
from flowstore.extract import ExtractConfig, plan_jobs, run_extract

SIZE = (64, 48)


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_videos):
    out = tmp_path_factory.mktemp("slots") / "store"
    cfg = ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=SIZE), workers=1)
    summary = run_extract(plan_jobs([shared_videos / c for c in ("part_0.mp4", "v_Basketball_g01_c01.avi")]), cfg,
                          show_progress=False, log=lambda m: None)
    assert summary.ok == 2
    return out


def _uint8_dataset(store, **kw):
    return StoreClipDataset(store, modality="both", sampling="tsn", flow_values="uint8", rgb_values="uint8",
                            clips_per_video=12, seed=4, **kw)


def _expected(ds, batch):
    return default_collate([ds[(i, 0)] for i in batch["index"].tolist()])


def _assert_equal(batch, expect):
    for key in ("flow", "rgb", "label", "index", "starts"):
        assert torch.equal(batch[key], expect[key]), key


def test_batches_kept_alive_are_never_overwritten(store):
    ds = _uint8_dataset(store)
    loader = make_loader(ds, batch_size=2, num_workers=2, shuffle=True, prefetch_factor=1)
    assert loader.batch_slots.slots_per_worker == 4
    kept = list(loader)  # 12 batches: more than the 2 x 4 slots, so workers must fall back
    assert sum(len(b["index"]) for b in kept) == 24
    views = [b["flow"][0] for b in kept]  # views of every batch, the dicts dropped
    del kept
    gc.collect()
    for _ in range(2):  # two more epochs reuse every slot that is free again
        for batch in loader:
            assert SLOT_KEY not in batch
    again = {int(i): v for batch in loader for i, v in zip(batch["index"], batch["flow"])}
    assert sorted(again) == list(range(24))
    # every view still holds its own batch's data
    for view, idx in zip(views, _first_indices(ds, loader)):
        assert torch.equal(view, ds[(idx, 0)]["flow"])


def _first_indices(ds, loader):
    """The first sample of every batch of epoch 0, in the sampler's order."""
    order = [i for i, _ in loader.sampler]
    return order[::loader.batch_size]


def test_slots_are_reused_and_released(store):
    ds = _uint8_dataset(store)
    loader = make_loader(ds, batch_size=3, num_workers=2, shuffle=True, prefetch_factor=2)
    state = loader.batch_slots.state
    for epoch in range(3):
        for batch in loader:
            _assert_equal(batch, _expected(ds, batch))
            # never more slots in use than a worker has
            assert int(state.sum()) <= state.numel()
    del batch
    gc.collect()
    assert int(state.sum()) == 0  # every slot back once its batch is gone


def test_collated_samples_use_slots_too(store):
    # with a transform, samples are collated (stacked into a slot) instead of decoded in place
    ds = StoreClipDataset(store, modality="flow", sampling="stack", length=4, clips_per_video=6, seed=1,
                          transform=train_transform(32))
    loader = make_loader(ds, batch_size=4, num_workers=2, shuffle=False, prefetch_factor=2)
    batches = list(loader)
    for batch in batches:
        expect = default_collate([ds[(i, 0)] for i in batch["index"].tolist()])
        assert batch.keys() == expect.keys()
        for key in expect:
            if key == "video":
                assert batch[key] == expect[key]
            else:
                assert torch.equal(batch[key], expect[key]), key
    assert int(loader.batch_slots.state.sum()) > 0
    del batches, batch
    gc.collect()
    assert int(loader.batch_slots.state.sum()) == 0


def test_without_recycling_a_plain_loader(store):
    ds = _uint8_dataset(store)
    loader = make_loader(ds, batch_size=4, num_workers=2, shuffle=False, prefetch_factor=2, recycle_batches=False)
    assert loader.batch_slots is None
    for batch in loader:
        _assert_equal(batch, _expected(ds, batch))


def test_worker_falls_back_when_every_slot_is_busy():
    slots = BatchSlots(1, 2)
    a, seg_a = slots.take(0, 100)
    b, seg_b = slots.take(0, 100)
    none, fresh = slots.take(0, 100)
    assert (a, b, none) == (0, 1, None) and fresh.numel() >= 100
    slots.release(0, a)
    again, seg = slots.take(0, 50)  # the freed slot, refilled in place
    assert again == a and seg.data_ptr() == seg_a.data_ptr()
    slots.release(0, b)
    bigger, seg = slots.take(0, 1000)  # too small a free slot is replaced by a bigger one
    assert bigger == b and seg.numel() >= 1000


# -- read-ahead across batches ---------------------------------------------------------------
class _WhoLoads(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.utils.data.get_worker_info().id


def test_dataloader_hands_batch_b_to_worker_b_mod_workers():
    # the assumption behind Lookahead: in_order DataLoaders assign batches round-robin, every epoch
    loader = torch.utils.data.DataLoader(_WhoLoads(), batch_size=3, num_workers=2, persistent_workers=True,
                                         prefetch_factor=3)
    for _ in range(2):
        workers = [int(batch[0]) for batch in loader]
        assert workers == [b % 2 for b in range(len(workers))]


def test_lookahead_reads_the_next_batch_once(store):
    from flowstore.data.dataset import Lookahead

    ds = _uint8_dataset(store, read_ahead=4)
    calls = []
    fetch = ds.fetch
    ds.fetch = lambda video, starts: calls.append(video) or fetch(video, starts)
    first, second = [(i, 0) for i in range(4)], [(i, 0) for i in range(4, 8)]
    a = ds.__getitems__(first + [Lookahead(second)])
    assert len(calls) == 8  # the next batch's records were read too
    b = ds.__getitems__(second)
    assert len(calls) == 8  # ... and used, not read again
    for batch in (a, b):
        for sample in batch:
            expect = ds[(sample["index"], 0)]
            assert torch.equal(sample["flow"], expect["flow"]) and torch.equal(sample["rgb"], expect["rgb"])
    # batches larger than the read-ahead window: every read-ahead record is used, none read twice
    # (slow reads keep most of the next batch's reads queued when it starts)
    calls.clear()
    ds = _uint8_dataset(store, read_ahead=2, read_threads=1)
    ds.fetch = lambda video, starts: calls.append(video) or time.sleep(0.02) or fetch(video, starts)
    big1, big2 = [(i, 1) for i in range(12)], [(i, 1) for i in range(12, 24)]
    ds.__getitems__(big1 + [Lookahead(big2)])
    c = ds.__getitems__(big2)
    assert len(calls) == 24 and [s["index"] for s in c] == list(range(12, 24))
    for sample in c[::5]:
        assert torch.equal(sample["flow"], ds[(sample["index"], 1)]["flow"])
    ds.fetch = lambda video, starts: calls.append(video) or fetch(video, starts)
    # a wrong guess (the batch went to another worker) is dropped, and costs only the read
    ds.__getitems__(first + [Lookahead(second)])
    calls.clear()
    c = ds.__getitems__([(i, 0) for i in range(8, 12)])
    assert len(calls) == 4 and [s["index"] for s in c] == [8, 9, 10, 11]
    assert ds._early == {}


def test_loader_adds_lookahead_per_worker(store):
    from flowstore.data.dataset import Lookahead

    ds = _uint8_dataset(store)
    loader = make_loader(ds, batch_size=5, num_workers=2, shuffle=True)
    batches = list(loader._index_sampler)
    assert len(batches) == len(loader) == 5
    plain = [b[:-1] if isinstance(b[-1], Lookahead) else b for b in batches]
    for b, keys in enumerate(batches[:-2]):
        assert isinstance(keys[-1], Lookahead) and list(keys[-1]) == plain[b + 2]
    assert not any(isinstance(k, Lookahead) for k in batches[-1] + batches[-2])
    off = make_loader(_uint8_dataset(store, read_ahead=0), batch_size=5, num_workers=2)
    assert not any(isinstance(b[-1], Lookahead) for b in off._index_sampler)


def test_failed_batch_gives_its_slot_back(monkeypatch):
    from flowstore.data.batch_memory import batch_buffers, set_worker_slots

    slots = BatchSlots(1, 2)
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())  # as inside a worker
    set_worker_slots(slots, 0)
    try:
        with pytest.raises(RuntimeError, match="corrupt"):
            with batch_buffers([((2, 3), torch.uint8), ((2,), torch.float32)]) as (tensors, slot):
                assert slot == (0, 0) and int(slots.state[0, 0]) == 1
                assert [t.shape for t in tensors] == [(2, 3), (2,)]
                raise RuntimeError("corrupt record")
        assert int(slots.state.sum()) == 0
    finally:
        set_worker_slots(None, -1)


def test_batches_larger_than_the_read_ahead_window_through_workers(store):
    ds = _uint8_dataset(store, read_ahead=2)
    loader = make_loader(ds, batch_size=7, num_workers=2, shuffle=True, prefetch_factor=2)
    seen = []
    for batch in loader:
        _assert_equal(batch, _expected(ds, batch))
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(24))
