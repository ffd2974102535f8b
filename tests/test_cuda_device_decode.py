"""On CUDA (``pytest -m cuda``; skips without a device): nvJPEG decoding in the loader against
cv2 decoding, and online flow (FlowOnDevice) on CUDA against the CPU. Self-contained (a
synthetic video, an HDF5 store: the GPU machine has no lmdb and may lack ../shared)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from flowstore import open_store
from flowstore.data import StoreClipDataset, make_loader, train_transform
from flowstore.data.device_decode import decode_jpeg_batch
from flowstore.data.device_flow import FlowOnDevice
from flowstore.decode import FrameResize
from flowstore.extract import ExtractConfig, VideoJob, run_extract
from flowstore.quantize import quantization_step

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

W, H, FRAMES = 96, 64, 12


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda_decode")
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((H + 20, W + 60, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    video = root / "move.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for t in range(FRAMES):
        writer.write(np.ascontiguousarray(texture[10:10 + H, 3 * t:3 * t + W]))
    writer.release()
    cfg = ExtractConfig(out=str(root / "store"), backend="hdf5", method="farneback", engine="torch",
                        resize=FrameResize(size=(W, H)), workers=1)
    assert run_extract([VideoJob("clip", str(video))], cfg, show_progress=False).ok == 1
    return str(root / "store")


def per_record_difference(store) -> dict:
    """The largest |nvJPEG - cv2| over the store's records, per kind."""
    r = open_store(store)
    xs, ys = r.flow_bytes("clip", list(range(r.num_flows("clip"))))
    as_tensors = lambda records: [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in records]  # noqa: E731
    flow = decode_jpeg_batch(as_tensors(xs + ys), 1, "cuda")
    ref_flow = [r.flow_q("clip", i)[..., c] for c in (0, 1) for i in range(len(xs))]
    frames = decode_jpeg_batch(as_tensors([r.frame_bytes("clip", i) for i in range(r.num_frames("clip"))]), 3, "cuda")
    ref_frames = [r.frame("clip", i) for i in range(r.num_frames("clip"))]
    return {"flow": max(int((a[0].cpu().int() - torch.from_numpy(b).int()).abs().max()) for a, b in zip(flow, ref_flow)),
            "rgb": max(int((a.permute(1, 2, 0).cpu().int() - torch.from_numpy(b).int()).abs().max())
                       for a, b in zip(frames, ref_frames))}


def test_nvjpeg_loader_is_cv2_loader(store):
    tol = per_record_difference(store)
    print("measured |nvJPEG - cv2| per record kind:", tol)
    # grayscale (flow) records have no chroma upsampling: only the IDCT differs, and a JPEG
    # decoder's IDCT is allowed +-1 per pixel (ITU-T T.83 compliance)
    assert tol["flow"] <= 1
    kw = dict(modality="both", sampling="tsn", length=3, num_segments=2, seed=3, clips_per_video=4,
              transform=train_transform(48), flow_values="uint8", rgb_values="uint8")
    ref = next(iter(make_loader(StoreClipDataset(store, **kw), batch_size=4, num_workers=1, shuffle=False)))
    ds = StoreClipDataset(store, decode_device="cuda", **kw)
    ours = next(iter(make_loader(ds, batch_size=4, num_workers=1, shuffle=False)))
    for key in ("flow", "rgb"):
        assert ours[key].device.type == "cuda" and ours[key].shape == ref[key].shape
        assert int((ours[key].cpu().int() - ref[key].int()).abs().max()) <= tol[key]


@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_flow_on_cuda_is_flow_on_cpu(store, method):
    r = open_store(store)
    frames = torch.from_numpy(np.stack([r.frame("clip", i) for i in range(6)])).permute(0, 3, 1, 2)[None]
    pairs = [[0, 1, 2, 3, 4]]
    cpu, gpu = (FlowOnDevice(method, engine="torch", device=d, quant=r.quant) for d in ("cpu", "cuda"))
    from flowstore.data.device_flow import rgb_to_gray

    gray = rgb_to_gray(frames[0])
    f_cpu = cpu.flow(gray[:5], gray[1:6])
    f_gpu = gpu.flow(gray[:5].cuda(), gray[1:6].cuda()).cpu()
    q_cpu, _ = cpu(frames, pairs)
    q_gpu, _ = gpu(frames.cuda(), pairs)
    dq = (q_gpu.cpu().int() - q_cpu.int()).abs().reshape(5, 2, H, W)
    close = (f_gpu - f_cpu).abs() < quantization_step(r.quant) / 2
    print(f"{method}: codes differing {float((dq > 0).float().mean()):.4%}, max |flow diff| "
          f"{float((f_gpu - f_cpu).abs().max()):.4g} px")
    # where the float flows agree within half a level, rounding can move a code by one at most
    assert int(dq[close].max()) <= 1
