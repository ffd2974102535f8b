"""Datasets and loaders over real stores: shapes per mode, flip through the dataset, workers,
determinism, exactly-once iteration across workers x ranks, rawframes export, bench-loader CLI."""
import json
import pickle

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch.utils.data import DataLoader, default_collate

import flowstore
from flowstore.data.dataset import (
    ClipSampler, StoreClipDataset, StoreIterableDataset, make_loader, sample_rng, set_epoch,
)
from flowstore.data.labels import LabelError, read_mmaction_list
from flowstore.data.rawframes import RawframesReader, export_rawframes
from flowstore.data.sampling import sample_starts, snippet_indices
from flowstore.data.transforms import RandomHorizontalFlip, TenCrop, eval_transform, train_transform
from flowstore.decode import FrameResize
from flowstore.extract import ExtractConfig, plan_jobs, run_extract

SIZE = (64, 48)  # small frames keep Farneback and decoding fast
CLIPS = ("part_0.mp4", "v_Basketball_g01_c01.avi", "test.avi")


@pytest.fixture(scope="module")
def store(tmp_path_factory, shared_videos):
    """Three shared clips, one shard each (shard_size=1 rolls over after every video)."""
    out = tmp_path_factory.mktemp("loader") / "store"
    cfg = ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=SIZE), workers=1, shard_size=1)
    summary = run_extract(plan_jobs([shared_videos / c for c in CLIPS]), cfg, show_progress=False, log=lambda m: None)
    assert summary.ok == 3
    return out


@pytest.fixture(scope="module")
def translation_store(tmp_path_factory):
    """A real video of a smooth texture translating right by RATE px/frame, and its store."""
    root = tmp_path_factory.mktemp("translate")
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (72, 200, 3), dtype=np.uint8), (0, 0), 2.0)
    W, H, T = 96, 72, 8
    path = root / "shift.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for t in range(T):
        x0 = 80 - RATE * t  # the window moves left, so the content moves right
        writer.write(np.ascontiguousarray(texture[:, x0:x0 + W]))
    writer.release()
    cfg = ExtractConfig(out=str(root / "store"), method="farneback", workers=1, flow_codec="png")
    run_extract(plan_jobs([path]), cfg, show_progress=False, log=lambda m: None)
    return root / "store"


RATE = 2


def test_shapes_and_indices_per_mode(store):
    reader = flowstore.open_store(store)
    W, H = SIZE
    cases = [
        (dict(modality="rgb", sampling="tsn"), {"rgb": (3, 3, H, W)}),
        (dict(modality="flow", sampling="tsn"), {"flow": (3, 10, H, W)}),
        (dict(modality="flow", sampling="stack"), {"flow": (1, 20, H, W)}),
        (dict(modality="flow", sampling="frame"), {"flow": (1, 2, H, W)}),
        (dict(modality="both", sampling="stack", length=4), {"flow": (1, 8, H, W), "rgb": (1, 3, H, W)}),
        (dict(modality="flow", sampling="stack", train=False, test_views=25, transform=TenCrop(32)),
         {"flow": (250, 20, 32, 32)}),
    ]
    for kwargs, shapes in cases:
        ds = StoreClipDataset(reader, **kwargs, seed=7)
        assert ds.videos == ["part_0", "test", "v_Basketball_g01_c01"]
        sample = ds[(1, 3)]
        for key, shape in shapes.items():
            assert tuple(sample[key].shape) == shape, (kwargs, key)
        assert sample["video"] == "test" and sample["label"] == -1 and sample["index"] == 1
        count = reader.num_frames("test") if kwargs["modality"] == "rgb" else reader.num_flows("test")
        expect = sample_starts(ds.sampling, count, length=ds.length, train=ds.train,
                               num_segments=3, test_views=ds.test_views, rng=sample_rng(7, 3, 1))
        np.testing.assert_array_equal(sample["starts"].numpy(), expect)


def test_stack_holds_the_stored_flows_interleaved(store):
    reader = flowstore.open_store(store)
    ds = StoreClipDataset(reader, modality="flow", sampling="stack", flow_values="uint8", seed=1)
    s = ds[2]
    idx = snippet_indices(s["starts"].numpy(), 10, reader.num_flows(s["video"]))[0]
    for l, i in enumerate(idx):
        q = reader.flow_q(s["video"], int(i))
        np.testing.assert_array_equal(s["flow"][0, 2 * l].numpy(), q[..., 0])
        np.testing.assert_array_equal(s["flow"][0, 2 * l + 1].numpy(), q[..., 1])
    px = StoreClipDataset(reader, modality="flow", sampling="stack", seed=1)[2]["flow"]
    np.testing.assert_allclose(px[0, 0].numpy(), reader.flow(s["video"], int(idx[0]))[..., 0], atol=1e-5)
    rgb = StoreClipDataset(reader, modality="rgb", sampling="frame", rgb_values="uint8", train=False)[0]
    i = int(rgb["starts"][0])
    np.testing.assert_array_equal(rgb["rgb"][0].permute(1, 2, 0).numpy(), reader.frame(rgb["video"], i))


def test_flip_of_a_known_translation_negates_u_through_the_dataset(translation_store):
    common = dict(modality="flow", sampling="stack", length=3, train=False, flow_values="pixels")
    plain = StoreClipDataset(translation_store, **common)[0]["flow"][0].numpy()
    flipped = StoreClipDataset(translation_store, transform=RandomHorizontalFlip(p=1.0), **common)[0]["flow"][0].numpy()
    inner = (slice(12, -12), slice(12, -12))
    for l in range(3):
        u, v = plain[2 * l][inner], plain[2 * l + 1][inner]
        assert abs(np.median(u) - RATE) < 0.3 and abs(np.median(v)) < 0.3  # the known motion
        fu, fv = flipped[2 * l][:, ::-1][inner], flipped[2 * l + 1][:, ::-1][inner]
        assert abs(np.median(fu) + RATE) < 0.3
        np.testing.assert_allclose(fu, -u, atol=1e-4)  # exactly negated (bound quantization)
        np.testing.assert_allclose(fv, v, atol=1e-6)


def test_workers_are_deterministic_and_open_their_own_handles(store):
    reader = flowstore.open_store(store)
    reader.frame_bytes("test", 0)  # the parent holds an open handle before the fork
    assert reader._handles and not pickle.loads(pickle.dumps(reader))._handles
    ds = StoreClipDataset(reader, modality="flow", sampling="tsn", transform=train_transform(32),
                          clips_per_video=4, seed=3)

    def epoch(loader, e):
        set_epoch(loader, e)
        out = {}
        for batch in loader:
            for k, i in enumerate(batch["index"].tolist()):
                out[i] = batch["flow"][k]
        return out

    inline = make_loader(ds, batch_size=3, num_workers=0, shuffle=True)
    parallel = make_loader(ds, batch_size=3, num_workers=2, shuffle=True, prefetch_factor=2)
    a0, b0 = epoch(inline, 0), epoch(parallel, 0)
    b1 = epoch(parallel, 1)  # persistent workers: the epoch travels with the sampler's keys
    assert sorted(a0) == sorted(b0) == list(range(12))
    for i in a0:
        assert torch.equal(a0[i], b0[i])
    assert any(not torch.equal(b0[i], b1[i]) for i in b0)
    assert reader.frame_bytes("test", 0)  # the parent's handle still works after the workers ran


@pytest.mark.parametrize("modality", ["flow", "both"])
def test_batches_decoded_in_workers_equal_collated_samples(store, modality):
    ds = StoreClipDataset(store, modality=modality, sampling="tsn", flow_values="uint8", rgb_values="uint8",
                          clips_per_video=3, seed=2)
    loader = make_loader(ds, batch_size=4, num_workers=2, shuffle=True, prefetch_factor=2)
    assert ds.batch_in_worker
    seen = []
    for batch in loader:
        expect = default_collate([ds[(i, 0)] for i in batch["index"].tolist()])
        assert batch.keys() == expect.keys() and batch["video"] == expect["video"]
        for key in expect:
            if key != "video":
                assert torch.equal(batch[key], expect[key]), key
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(9))


def test_reader_threads_open_shards_safely(store):
    # a fresh reader: several reader threads hit unopened shards at once (LMDB refuses a second open)
    for _ in range(6):
        ds = StoreClipDataset(flowstore.open_store(store), modality="flow", sampling="frame", clips_per_video=4,
                              read_ahead=12, read_threads=4, flow_values="uint8")
        batch = ds.__getitems__([(i, 0) for i in range(12)])
        assert [b["index"] for b in batch] == list(range(12))
        assert batch[5]["video"] == ds.videos[1]


def test_hdf5_minmax_store_through_workers(tmp_path, shared_videos):
    from flowstore.quantize import QuantSpec

    out = tmp_path / "h5"
    cfg = ExtractConfig(out=str(out), backend="hdf5", method="farneback", quant=QuantSpec("minmax"),
                        resize=FrameResize(size=SIZE), workers=1)
    run_extract(plan_jobs([shared_videos / "part_0.mp4"]), cfg, show_progress=False, log=lambda m: None)
    reader = flowstore.open_store(out)
    ds = StoreClipDataset(reader, modality="flow", sampling="stack", length=4, clips_per_video=4, seed=9)
    batches = list(make_loader(ds, batch_size=2, num_workers=2, shuffle=False, prefetch_factor=2))
    assert [i for b in batches for i in b["index"].tolist()] == [0, 1, 2, 3]
    b = batches[1]
    start = int(b["starts"][0, 0])
    for l in range(4):  # per-flow min/max ranges travel with the records: dequantized in pixels
        np.testing.assert_allclose(b["flow"][0, 0, 2 * l].numpy(), reader.flow("part_0", start + l)[..., 0], atol=1e-4)
        np.testing.assert_allclose(b["flow"][0, 0, 2 * l + 1].numpy(), reader.flow("part_0", start + l)[..., 1], atol=1e-4)


def test_clip_sampler_splits_ranks_exactly_once():
    seen = []
    for rank in range(2):
        sampler = ClipSampler(11, shuffle=True, seed=5, rank=rank, world_size=2)
        sampler.set_epoch(2)
        keys = list(sampler)
        assert all(e == 2 for _, e in keys) and len(keys) == len(sampler)
        seen += [i for i, _ in keys]
    assert sorted(seen) == list(range(11))
    padded = [len(list(ClipSampler(11, rank=r, world_size=2, pad=True))) for r in range(2)]
    assert padded == [6, 6]


def test_iterable_every_sample_once_per_epoch_across_2_workers_x_2_ranks(store):
    reader = flowstore.open_store(store)
    shard = {v: reader.entry(v)["shard"] for v in reader.videos}
    assert len(set(shard.values())) == 3
    for e in (0, 1):
        seen, per_consumer = [], {}
        for rank in range(2):
            ds = StoreIterableDataset(reader, modality="flow", sampling="frame", clips_per_video=5, seed=1,
                                      rank=rank, world_size=2, flow_values="uint8")
            ds.set_epoch(e)
            loader = DataLoader(ds, batch_size=2, num_workers=2)
            for batch in loader:
                seen += batch["index"].tolist()
                # the worker is not in the batch; consecutive batches alternate between workers
                per_consumer.setdefault(rank, []).extend(batch["video"])
        assert sorted(seen) == list(range(15)), e  # exactly once over ranks x workers
    order = ds.epoch_order()
    # grouped by shard: the sequence visits each shard in one run
    runs = [shard[ds.videos[i // 5]] for i in order]
    assert sum(1 for a, b in zip(runs, runs[1:]) if a != b) == 2


def test_iterable_consumer_ranges_split_shards():
    ds = StoreIterableDataset.__new__(StoreIterableDataset)
    ranges = [ds.consumer_range(c, 4, 15) for c in range(4)]
    assert [len(r) for r in ranges] == [3, 4, 4, 4]
    assert sorted(i for r in ranges for i in r) == list(range(15))


def test_labels_and_unknown_videos(store, tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_text("test 164 1\nv_Basketball_g01_c01.avi 141 0\n")
    ds = StoreClipDataset(store, read_mmaction_list(lst), modality="flow", sampling="frame")
    assert ds.videos == ["test", "v_Basketball_g01_c01"] and [ds[i]["label"] for i in range(2)] == [1, 0]
    lst.write_text("test 164 1\nv_Nope 10 0\n")
    with pytest.raises(LabelError, match=r"train.txt:2: video 'v_Nope' is not in store"):
        StoreClipDataset(store, read_mmaction_list(lst))


def test_rawframes_export_is_the_same_data(store, tmp_path):
    reader = flowstore.open_store(store)
    out = export_rawframes(reader, tmp_path / "raw", labels={"test": 3})
    d = out / "part_0"
    assert (d / "img_00001.jpg").read_bytes() == reader.frame_bytes("part_0", 0)
    assert (d / "flow_x_00031.jpg").read_bytes() == reader.flow_bytes("part_0", [30])[0][0]
    assert (d / "flow_y_00031.jpg").exists() and not (d / "flow_x_00032.jpg").exists()
    assert not (d / "img_00033.jpg").exists() and (d / "img_00032.jpg").exists()
    assert "test 164 3\n" in (out / "rgb_list.txt").read_text()
    assert "test 163 3\n" in (out / "flow_list.txt").read_text()
    raw = RawframesReader(out)
    kwargs = dict(modality="both", sampling="tsn", transform=train_transform(32), seed=4)
    a, b = StoreClipDataset(reader, **kwargs)[1], StoreClipDataset(raw, **kwargs)[1]
    assert torch.equal(a["flow"], b["flow"]) and torch.equal(a["rgb"], b["rgb"])


def test_eval_views_through_a_loader(store):
    ds = StoreClipDataset(store, modality="rgb", sampling="tsn", train=False, test_views=5,
                          transform=eval_transform(32, resize_to=40))
    batch = next(iter(make_loader(ds, batch_size=2, num_workers=0, shuffle=False)))
    assert tuple(batch["rgb"].shape) == (2, 50, 3, 32, 32)


def test_bench_loader_help_and_a_tiny_run(store, tmp_path):
    from flowstore.cli.bench_loader import command
    from flowstore.cli.main import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["bench-loader", "--help"])
    assert res.exit_code == 0, res.output
    assert "decode limit" in res.output and "--json" in res.output and "--workers" in res.output
    res = runner.invoke(command, [str(store), "--workers", "0", "--rounds", "1", "--epochs", "1",
                                  "--max-clips", "3", "--json", "--details", str(tmp_path / "d.json"),
                                  "--rawframes", str(tmp_path / "raw")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert list(out) == ["decode_limit", "flowstore", "rawframes", "flowstore_cold", "rawframes_cold", "workers"]
    assert out["workers"] == 0 and all(out[k] > 0 for k in out if k != "workers")
    details = json.loads((tmp_path / "d.json").read_text())
    assert details["details"]["flowstore_cold"]["resident_after_evict"] < 0.05
    assert details["details"]["rawframes_cold"]["resident_after_evict"] < 0.05
    assert (tmp_path / "raw" / "test" / "flow_x_00001.jpg").exists()  # --rawframes keeps the tree
    assert details["details"]["flowstore"]["worker_rss_mb"] > 0


def test_every_reader_is_a_record_source(store, tmp_path):
    from flowstore.bench.loader import InMemorySource
    from flowstore.data.source import open_source, record_indices
    from flowstore.store.source import RecordSource

    reader = flowstore.open_store(store)
    video = reader.videos[0]
    tree = RawframesReader(export_rawframes(reader, tmp_path / "raw", sync=False))
    flows, frames = record_indices(reader, video, np.array([0, 3]), 2, "both")
    assert flows.tolist() == [[0, 1], [3, 4]] and frames.tolist() == [[1], [4]]
    memory = InMemorySource(reader, {video: ({1, 4}, {0, 1, 3, 4})})
    for source in (reader, tree, memory):
        assert isinstance(source, RecordSource) and open_source(source) is source
    assert reader.shard_of(video) == reader.entry(video)["shard"]
    assert tree.shard_of(video) is None and memory.shard_of(video) is None and memory.root == reader.root
    with pytest.raises(ValueError, match="not a store path or a RecordSource"):
        open_source(object())
