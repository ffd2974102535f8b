"""Online flow (flowstore.data.device_flow, device_clips): the same engine, quantization and
transforms as stored flow, so online = stored exactly with lossless codecs and within the
codecs' (measured) error with JPEG; on a synthetic video of known motion and on a shared clip."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from flowstore import open_store
from flowstore.data import StoreClipDataset, make_loader, train_transform
from flowstore.data.device_clips import flow_values_on_device, normalize_rgb_on_device, subtract_mean_on_device
from flowstore.data.device_flow import FlowOnDevice, quantize_on_device, rgb_to_gray, stack_pairs
from flowstore.data.transforms import flow_values, normalize_rgb, subtract_mean_flow
from flowstore.decode import FrameResize
from flowstore.errors import InputError
from flowstore.extract import ExtractConfig, VideoJob, run_extract
from flowstore.flow.registry import build_flow
from flowstore.quantize import QuantSpec, quantization_step, quantize

W, H, FRAMES = 64, 48, 10
SHIFT = 2  # px per frame: the texture moves left, u = -2, v = 0
#: cheap TV-L1 parameters (the test is about the path, not the flow's quality)
CHEAP_TVL1 = {"nscales": 2, "warps": 1, "outerIterations": 2, "innnerIterations": 10}


def extract(out, video, **settings):
    cfg = ExtractConfig(out=str(out), resize=FrameResize(size=(W, H)), workers=1, **settings)
    summary = run_extract([VideoJob("clip", str(video))], cfg, show_progress=False)
    assert summary.ok == 1, summary.failures
    return str(out)


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory):
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur((rng.random((H + 20, W + 20 + SHIFT * FRAMES, 3)) * 255).astype(np.uint8), (0, 0), 1.5)
    path = tmp_path_factory.mktemp("video") / "move.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (W, H))
    for t in range(FRAMES):
        writer.write(np.ascontiguousarray(texture[10:10 + H, 10 + SHIFT * t:10 + SHIFT * t + W]))
    writer.release()
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory, moving_video, torch_one_thread):
    """The same video and engine (torch Farneback) into a lossless (png) and a JPEG store."""
    root = tmp_path_factory.mktemp("stores")
    out = {codec: extract(root / codec, moving_video, method="farneback", engine="torch", flow_codec=codec,
                          frame_codec=codec) for codec in ("png", "jpeg")}
    out["png_minmax"] = extract(root / "png_minmax", moving_video, method="farneback", engine="torch",
                                flow_codec="png", frame_codec="png", quant=QuantSpec(scheme="minmax"))
    out["png_truncate"] = extract(root / "png_truncate", moving_video, method="farneback", engine="torch",
                                  flow_codec="png", frame_codec="png", quant=QuantSpec(rounding="truncate"))
    out["png_both"] = extract(root / "png_both", moving_video, method="farneback", engine="torch",
                              flow_codec="png", frame_codec="png", directions=("forward", "backward"))
    out["png_stride2"] = extract(root / "png_stride2", moving_video, method="farneback", engine="torch",
                                 flow_codec="png", frame_codec="png", stride=2)
    return out


def first_batch(ds, batch_size=4):
    return next(iter(make_loader(ds, batch_size=batch_size, num_workers=0, shuffle=False)))


# -- the pieces, pinned to the host code they mirror ------------------------------------------
def test_gray_is_cv2_rgb2gray():
    rgb = np.random.default_rng(1).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ours = rgb_to_gray(torch.from_numpy(rgb).permute(2, 0, 1)).numpy()
    np.testing.assert_array_equal(ours, cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


@pytest.mark.parametrize("quant", [QuantSpec(), QuantSpec(bound=7.5), QuantSpec(rounding="truncate"),
                                   QuantSpec(scheme="minmax")])
def test_quantize_on_device_is_quantize(quant):
    rng = np.random.default_rng(2)
    flow = (rng.standard_normal((3, 2, 20, 30)) * 12).astype(np.float32)
    if quant.scheme == "bound":  # every half level too: the ties of round-half-to-even
        levels = (np.arange(20 * 30, dtype=np.float32) % 511) / np.float32(2) * np.float32(quantization_step(quant))
        flow[0, 0] = (levels - np.float32(quant.bound)).reshape(20, 30)
    q, ranges = quantize_on_device(torch.from_numpy(flow), quant)
    for n in range(3):
        ref_q, ref_range = quantize(flow[n].transpose(1, 2, 0), quant)
        np.testing.assert_array_equal(q[n].numpy(), ref_q.transpose(2, 0, 1))
        if ref_range is not None:
            np.testing.assert_array_equal(ranges[n].numpy(), ref_range)


def test_values_on_device_are_finalize_values():
    rng = np.random.default_rng(3)
    q = rng.integers(0, 256, (2, 6, 9, 11), dtype=np.uint8)
    spec = QuantSpec(bound=15)
    for mode in ("pixels", "q128"):
        ref = flow_values(q, spec, mode)
        np.testing.assert_array_equal(flow_values_on_device(torch.from_numpy(q), spec, mode).numpy(), ref)
        for mean in ("field", "stack"):
            ours = subtract_mean_on_device(torch.from_numpy(ref), mean).numpy()
            # means summed in another order than numpy's: float32 rounding of values <= 15 px
            np.testing.assert_allclose(ours, subtract_mean_flow(ref, mean), atol=1e-5, rtol=0)
    ranges = np.sort(rng.standard_normal((2, 3, 4)).astype(np.float32) * 5, axis=-1)[..., [0, 3, 1, 2]]
    minmax = QuantSpec(scheme="minmax")
    np.testing.assert_array_equal(flow_values_on_device(torch.from_numpy(q), minmax, "pixels", ranges).numpy(),
                                  flow_values(q, minmax, "pixels", ranges))
    rgb = rng.integers(0, 256, (2, 3, 5, 7), dtype=np.uint8)
    np.testing.assert_allclose(normalize_rgb_on_device(torch.from_numpy(rgb), (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)).numpy(),
                               normalize_rgb(rgb, (0.4, 0.5, 0.6), (0.2, 0.3, 0.25)), atol=1e-6, rtol=0)


def test_stack_pairs_follow_the_store_clamping():
    # 6 flows, L = 4, start 4: flows 4, 5, 5, 5 -> frames 4..7 read from start 4: positions 0, 1, 1, 1
    np.testing.assert_array_equal(stack_pairs([0, 4], 4, 6), [[0, 1, 2, 3], [0, 1, 1, 1]])


def test_flow_on_device_checks_its_input():
    fod = FlowOnDevice("farneback", engine="torch", device="cpu")
    frames = torch.zeros((1, 3, 3, 16, 16), dtype=torch.uint8)
    with pytest.raises(InputError, match="do not fit"):
        fod(frames, [[0, 2]])  # pair 2 -> 3 needs 4 frames
    with pytest.raises(InputError, match="uint8"):
        fod(frames.float(), [[0, 1]])


def test_host_engines_run_as_extract_runs_them(stores):
    """An OpenCV engine: its own prepare and compute on the host, then the same quantization."""
    r = open_store(stores["png"])
    frames = np.stack([r.frame("clip", i) for i in range(4)])
    fod = FlowOnDevice("farneback", engine="opencv", device="cpu", quant=r.quant)
    q, _ = fod(torch.from_numpy(frames).permute(0, 3, 1, 2)[None], [[0, 2]])
    est = build_flow("farneback", engine="opencv")
    g = [est.prepare(f) for f in frames]
    flows = est.compute([g[0], g[2]], [g[1], g[3]])
    expected = np.concatenate([quantize(f, r.quant)[0].transpose(2, 0, 1) for f in flows])
    np.testing.assert_array_equal(q[0].numpy(), expected)


def test_online_needs_flow_modality(stores):
    with pytest.raises(InputError, match="modality 'flow' or 'both'"):
        StoreClipDataset(stores["png"], modality="rgb", flow="online")
    with pytest.raises(InputError, match="unknown flow source"):
        StoreClipDataset(stores["png"], flow="computed")


# -- online = stored ----------------------------------------------------------------------------
@pytest.mark.parametrize("store,modality,sampling,transform,values,mean", [
    ("png", "flow", "stack", None, "uint8", None),
    ("png", "flow", "stack", "train", "pixels", "field"),
    ("png", "both", "tsn", "train", "q128", "stack"),
    ("png_minmax", "flow", "stack", "train", "pixels", None),
    ("png_truncate", "flow", "stack", "train", "uint8", None),  # a flip maps q_x to 254 - q_x
    ("png_stride2", "both", "stack", "train", "uint8", None),  # flow i: frames i -> i + 2, L + 2 frames read
])
@pytest.mark.parametrize("stacking", ["stack", "bidirectional", "trajectory"])
def test_online_equals_stored_with_lossless_codecs(stores, torch_one_thread, store, modality, sampling, transform,
                                                   values, mean, stacking):
    """png frames and flow: the frames online flow reads are the ones extraction flowed, so every
    value of the clip is the same, through crops, flips (u negated) and resizes."""
    if stacking == "bidirectional":
        if store != "png":
            pytest.skip("one bidirectional store")
        store = "png_both"  # bidirectional (stored) needs the backward flows; online computes them
    if stacking == "trajectory" and store == "png_stride2":
        pytest.skip("trajectory stacking needs stride 1")
    kw = dict(modality=modality, sampling=sampling, length=4 if stacking == "bidirectional" else 3, num_segments=2,
              stacking=stacking, flow_values=values,
              mean_subtract=mean, seed=5, transform=None if transform is None else train_transform(32),
              clips_per_video=4, rgb_values="uint8" if values == "uint8" else "float")
    stored = first_batch(StoreClipDataset(stores[store], **kw))
    online_store = stores["png"] if stacking == "bidirectional" else stores[store]  # a forward-only store will do
    online = first_batch(StoreClipDataset(online_store, flow="online", engine="torch", flow_device="cpu", **kw))
    assert set(stored) == set(online)
    # mean subtraction sums in another order than numpy: a few float32 ulps of the largest value
    atol = 0 if mean is None else 8 * np.finfo(np.float32).eps * open_store(stores[store]).quant.bound
    for key in ("flow", "rgb"):
        if key in stored:
            assert stored[key].shape == online[key].shape
            np.testing.assert_allclose(online[key].numpy(), stored[key].numpy(), atol=atol if key == "flow" else 0, rtol=0)


def test_online_flow_is_the_known_motion(stores, torch_one_thread):
    ds = StoreClipDataset(stores["png"], sampling="stack", length=4, train=False, flow="online", engine="torch",
                          flow_device="cpu")
    flow = first_batch(ds)["flow"][0, 0].numpy()  # (2L, H, W) pixels
    inner = (slice(None), slice(12, -12), slice(12, -12))
    step = quantization_step(ds.store.quant)
    assert abs(np.median(flow[0::2][inner]) + SHIFT) <= step and abs(np.median(flow[1::2][inner])) <= step


def jpeg_tolerance(stores, engine: str, params=None, video="clip"):
    """The codecs' error, measured: stored JPEG flow against the same engine's unencoded
    quantized flow of the same frames (the lossless store), and that engine's flow of the
    JPEG-decoded frames against it (what frame JPEG does to the flow). Returns (|a - b| arrays)."""
    lossless, lossy = open_store(stores["png"]), open_store(stores["jpeg"])
    n = lossless.num_flows(video)
    reference = np.stack([lossless.flow_q(video, i) for i in range(n)]).astype(int)
    stored = np.stack([lossy.flow_q(video, i) for i in range(n)]).astype(int)
    est = build_flow(lossy.manifest["flow"]["method"], engine=engine, params=params)
    frames = [est.prepare(lossy.frame(video, i)) for i in range(lossy.num_frames(video))]
    from_jpeg_frames = np.stack([quantize(f, lossy.quant)[0] for f in est.compute(frames[:-1], frames[1:])]).astype(int)
    return np.abs(stored - reference), np.abs(from_jpeg_frames - reference), from_jpeg_frames, stored


def check_within_codec_error(store, tolerance, L=4):
    flow_codec_error, frame_codec_error, from_jpeg_frames, stored_q = tolerance
    kw = dict(sampling="stack", length=L, flow_values="uint8", train=False, test_views=3)
    stored = first_batch(StoreClipDataset(store, **kw))
    ds = StoreClipDataset(store, flow="online", engine="torch", flow_device="cpu", **kw)
    online = first_batch(ds)
    assert online["flow"].shape == stored["flow"].shape
    diff = (online["flow"].numpy().astype(int) - stored["flow"].numpy().astype(int))
    # online is exactly the engine's flow of the stored (JPEG) frames, quantized ...
    starts = online["starts"][0].numpy()
    idx = np.minimum(starts[:, None] + np.arange(L), ds.store.num_flows("clip") - 1)
    expected = from_jpeg_frames[idx].transpose(0, 1, 4, 2, 3).reshape(len(starts), 2 * L, *from_jpeg_frames.shape[1:3])
    np.testing.assert_array_equal(online["flow"][0].numpy(), expected)
    # ... so it differs from stored flow by no more than the two codecs' measured errors
    assert np.abs(diff).mean() <= flow_codec_error.mean() + frame_codec_error.mean()
    assert np.abs(diff).max() <= flow_codec_error.max() + frame_codec_error.max()
    print(f"mean |online - stored| {np.abs(diff).mean():.3f} levels (max {np.abs(diff).max()}); measured codec errors: "
          f"flow JPEG {flow_codec_error.mean():.3f} (max {flow_codec_error.max()}), frame JPEG "
          f"{frame_codec_error.mean():.3f} (max {frame_codec_error.max()})")
    return np.abs(diff).mean(), flow_codec_error.mean(), frame_codec_error.mean()


def test_online_equals_stored_within_jpeg_error(stores, torch_one_thread):
    mean_diff, flow_err, frame_err = check_within_codec_error(stores["jpeg"], jpeg_tolerance(stores, "torch"))
    assert mean_diff > 0 and flow_err > 0  # JPEG is lossy here: the comparison is not vacuous


def test_online_tvl1_on_a_shared_clip(shared_videos, tmp_path, torch_one_thread):
    """Real video (part_0.mp4, 32 frames), torch TV-L1 (cheap parameters) in both stores."""
    stores = {codec: extract(tmp_path / codec, shared_videos / "part_0.mp4", method="tvl1", engine="torch",
                             flow_params=CHEAP_TVL1, flow_codec=codec, frame_codec=codec) for codec in ("png", "jpeg")}
    kw = dict(sampling="stack", length=3, transform=train_transform(32), seed=2, clips_per_video=2)
    stored = first_batch(StoreClipDataset(stores["png"], **kw))
    online = first_batch(StoreClipDataset(stores["png"], flow="online", method="tvl1", engine="torch",
                                          flow_device="cpu", **kw))
    np.testing.assert_array_equal(online["flow"].numpy(), stored["flow"].numpy())
    check_within_codec_error(stores["jpeg"], jpeg_tolerance(stores, "torch", CHEAP_TVL1), L=3)


def test_online_through_a_worker_and_the_direct_batch_path(stores, torch_one_thread):
    """A worker decodes the frames straight into the shared-memory batch; the loader's step
    finishes it on the device: the same as in the main process."""
    kw = dict(sampling="stack", length=3, transform=train_transform(32), seed=4, clips_per_video=3,
              flow="online", engine="torch", flow_device="cpu")
    ds = StoreClipDataset(stores["jpeg"], **kw)
    in_worker = next(iter(make_loader(ds, batch_size=3, num_workers=1, shuffle=False)))
    in_main = first_batch(StoreClipDataset(stores["jpeg"], **kw), batch_size=3)
    np.testing.assert_array_equal(in_worker["flow"].numpy(), in_main["flow"].numpy())
    assert "flow_frames" not in in_worker and "epoch" not in in_worker


@pytest.mark.parametrize("store", ["png", "png_stride2"])
def test_online_clamps_short_videos_as_the_store_does(stores, torch_one_thread, store):
    """A stack longer than the video repeats its last flow (indices clamped): the same online."""
    kw = dict(sampling="stack", length=12, flow_values="uint8", train=False)
    stored = first_batch(StoreClipDataset(stores[store], **kw))
    online = first_batch(StoreClipDataset(stores[store], flow="online", engine="torch", flow_device="cpu", **kw))
    np.testing.assert_array_equal(online["flow"].numpy(), stored["flow"].numpy())
