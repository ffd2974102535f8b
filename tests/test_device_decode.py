"""decode_device: JPEG records decoded by torchvision's decode_jpeg (here on the CPU; nvJPEG in
tests/test_cuda_device_decode.py) give the clips cv2 decoding gives, transforms applied after."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from flowstore import open_store
from flowstore.data import StoreClipDataset, make_loader, train_transform
from flowstore.data import device_decode
from flowstore.data.device_decode import decode_jpeg_batch
from flowstore.decode import FrameResize
from flowstore.extract import ExtractConfig, VideoJob, run_extract

W, H = 64, 48


def extract(out, video, **settings):
    cfg = ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=(W, H)), workers=1, **settings)
    summary = run_extract([VideoJob("clip", str(video))], cfg, show_progress=False)
    assert summary.ok == 1, summary.failures
    return str(out)


@pytest.fixture(scope="module")
def jpeg_store(tmp_path_factory, shared_videos):
    return extract(tmp_path_factory.mktemp("jpeg"), shared_videos / "part_0.mp4")


def record_tolerance(store) -> dict:
    """The largest |torchvision - cv2| over every record of the store, per kind: what two
    libjpeg-turbo builds (or IDCT / chroma upsampling choices) may differ by."""
    r = open_store(store)
    worst = {}
    for kind, n, channels in (("flow", r.num_flows("clip"), 1), ("rgb", r.num_frames("clip"), 3)):
        if kind == "flow":
            xs, ys = r.flow_bytes("clip", list(range(n)))
            records = xs + ys
            ours = [im[0] for im in decode_jpeg_batch([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in records], 1, "cpu")]
            theirs = [r.flow_q("clip", i)[..., c] for c in (0, 1) for i in range(n)]
        else:
            records = [r.frame_bytes("clip", i) for i in range(n)]
            ours = [im.permute(1, 2, 0) for im in decode_jpeg_batch([torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in records], 3, "cpu")]
            theirs = [r.frame("clip", i) for i in range(n)]
        worst[kind] = max(int(np.abs(a.numpy().astype(int) - b.astype(int)).max()) for a, b in zip(ours, theirs))
    return worst


def batches(ds, batch_size=3, workers=0):
    return next(iter(make_loader(ds, batch_size=batch_size, num_workers=workers, shuffle=False)))


@pytest.mark.parametrize("modality,sampling,transform,workers,stacking", [
    ("flow", "stack", None, 0, "stack"), ("rgb", "tsn", "train", 0, "stack"), ("both", "tsn", "train", 1, "stack"),
    ("both", "stack", "train", 0, "trajectory"),  # trajectory flow: resampled and decoded in the workers
])
def test_decode_device_cpu_is_cv2(jpeg_store, torch_one_thread, modality, sampling, transform, workers, stacking):
    tol = record_tolerance(jpeg_store)
    print("measured |torchvision - cv2| per record kind:", tol)
    kw = dict(modality=modality, sampling=sampling, length=3, num_segments=2, seed=7, clips_per_video=3, stacking=stacking,
              transform=None if transform is None else train_transform(32), flow_values="uint8", rgb_values="uint8")
    ref = batches(StoreClipDataset(jpeg_store, **kw), workers=workers)
    ds = StoreClipDataset(jpeg_store, decode_device="cpu", **kw)
    ours = batches(ds, workers=workers)
    assert set(ours) == set(ref)
    for key in ("flow", "rgb"):
        if key in ref:
            assert ours[key].shape == ref[key].shape and ours[key].dtype == torch.uint8
            assert int((ours[key].int() - ref[key].int()).abs().max()) <= tol[key]


def test_float_values_after_device_decode(jpeg_store, torch_one_thread):
    kw = dict(modality="both", sampling="tsn", length=2, seed=1, clips_per_video=2, transform=train_transform(32),
              mean_subtract="field")
    ref = batches(StoreClipDataset(jpeg_store, **kw))
    ours = batches(StoreClipDataset(jpeg_store, decode_device="cpu", **kw))
    tol = record_tolerance(jpeg_store)
    bound = open_store(jpeg_store).quant.bound
    np.testing.assert_allclose(ours["flow"].numpy(), ref["flow"].numpy(), rtol=0,
                               atol=tol["flow"] * 2 * bound / 255 * 2 + 1e-5)  # a level, twice (value and mean)
    np.testing.assert_allclose(ours["rgb"].numpy(), ref["rgb"].numpy(), rtol=0, atol=tol["rgb"] / 255 / 0.224 + 1e-5)


def test_falls_back_once_where_it_cannot_decode_on_the_device(jpeg_store, shared_videos, tmp_path, monkeypatch):
    device_decode._warned.clear()
    png = extract(tmp_path / "png", shared_videos / "part_0.mp4", flow_codec="png", frame_codec="png")
    with pytest.warns(UserWarning, match="not JPEG"):
        ds = StoreClipDataset(png, decode_device="cpu")
    assert ds.decode_device is None and not ds.deferred  # the workers decode, as without the option
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="CUDA is not available"):
            assert StoreClipDataset(jpeg_store, decode_device="cuda").decode_device is None
    # decode_jpeg failing on the device: cv2 on the host, the same clips, said once
    kw = dict(sampling="stack", length=2, flow_values="uint8")
    ref = batches(StoreClipDataset(jpeg_store, **kw))

    def broken(*args, **kwargs):
        raise RuntimeError("nvjpeg says no")

    monkeypatch.setattr(device_decode, "decode_jpeg_batch", broken)
    ds = StoreClipDataset(jpeg_store, decode_device="cpu", **kw)
    with pytest.warns(UserWarning, match="nvjpeg says no"):
        ours = batches(ds)
    np.testing.assert_array_equal(ours["flow"].numpy(), ref["flow"].numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        batches(ds)


def test_online_flow_from_device_decoded_frames(jpeg_store, torch_one_thread):
    """decode_device and flow="online" together: the frames decoded by decode_jpeg feed the same flow."""
    kw = dict(modality="both", sampling="stack", length=2, seed=2, clips_per_video=2, transform=train_transform(32),
              flow="online", engine="torch", flow_device="cpu")
    ref = batches(StoreClipDataset(jpeg_store, **kw), batch_size=2)
    ours = batches(StoreClipDataset(jpeg_store, decode_device="cpu", **kw), batch_size=2)
    assert record_tolerance(jpeg_store)["rgb"] == 0  # else the flows of differing frames differ
    for key in ("flow", "rgb"):
        np.testing.assert_array_equal(ours[key].numpy(), ref[key].numpy())


def test_make_loader_decode_device_option(jpeg_store, torch_one_thread):
    """``make_loader(..., decode_device=...)`` sets the dataset's and applies the device step."""
    kw = dict(sampling="stack", length=2, flow_values="uint8", transform=train_transform(32), seed=3)
    ref = batches(StoreClipDataset(jpeg_store, **kw))
    ds = StoreClipDataset(jpeg_store, **kw)
    loader = make_loader(ds, batch_size=3, num_workers=0, shuffle=False, decode_device="cpu")
    assert ds.decode_device == "cpu" and loader.device_step is not None
    np.testing.assert_array_equal(next(iter(loader))["flow"].numpy(), ref["flow"].numpy())
