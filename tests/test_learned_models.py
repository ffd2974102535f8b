"""Every learned model with a short name (flowstore.flow.catalog.LEARNED_MODELS), randomly
initialised, through the real ``--ckpt`` path: checkpoint round trip, batched = one by one,
odd frame sizes, determinism, the CPU side of ``--fp16``, the minimum frame size, and NaN at
extraction. ``tests/test_learned.py`` tests the rest of the ptlflow plumbing once (on gmflow).

The weights are ptlflow's own random initialisation under ``torch.manual_seed(seed)``: each
model's ``__init__`` (PyTorch's default Kaiming-uniform for convolutions and linear layers,
the Kaiming-normal / unit-norm initialisations RAFT's and SEA-RAFT's encoders set themselves).
That initialisation gives finite flow for every model on every frame at least ``min_side``
large; the NaN seen with random weights (raft_small, fastflownet) comes from the frame size,
not from the weights (see :func:`test_nan_below_min_side_is_geometry_not_weights`).

Frames are tiny (64x48, or 128x128 for the models whose minimum side is 121) and the slow
recurrent models run fewer refinement iterations (``ITERS``): what is tested is flowstore's
plumbing around each model, not the flow, which random weights make meaningless.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flowstore.flow import build_flow  # noqa: E402
from flowstore.flow.catalog import LEARNED_MODELS, fp16_tolerance, min_frame_side  # noqa: E402
from flowstore.flow.learned import import_ptlflow, read_checkpoint, save_random_checkpoint  # noqa: E402

try:
    import_ptlflow()
except ImportError:
    pytest.skip("ptlflow extra not installed", allow_module_level=True)

MODELS = list(LEARNED_MODELS)
#: fewer refinement iterations for the slow recurrent models (the weights do not depend on it)
ITERS = {"raft": {"iters": 3}, "raft_small": {"iters": 3}, "rapidflow": {"iters": 3}}
#: Batched vs one by one, and the model's padding vs ours: on the CPU a batch of B pairs runs
#: other GEMM/convolution blockings than B = 1, so float32 sums are reassociated (relative
#: rounding ~1e-7 per op, grown by the iterative refinement). 0.01 px is 1/15 of the 8-bit
#: quantization step of the default bound (40 px / 255 = 0.157 px), so such a difference can
#: move a stored value by at most one step; a real bug (pairs mixed up, wrong crop) is pixels.
#: Measured here: at most 1.5e-5 px (raft_small), 0 for raft and sea_raft_s; the margin is for
#: CPUs whose kernels block differently (AVX2 vs AVX-512).
ATOL_PX = 0.01


def frame_size(model: str) -> tuple[int, int]:
    """(width, height) of the test frames: 64x48, or 128x128 above a model's minimum side."""
    side = min_frame_side(model)
    return (64, 48) if side is None or side <= 48 else (128, 128)


def odd_size(model: str) -> tuple[int, int]:
    """An odd (width, height) that is a multiple of no stride, above the minimum side."""
    width, height = frame_size(model)
    return width + 3, height - 3 if height - 3 >= (min_frame_side(model) or 0) else height + 1


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine two threads stall when other jobs hold the
    cores (docs/benchmarks.md, torch engines)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def frames(shared_videos):
    """3 RGB frames of test.mp4 (340x256), every 3rd frame so that there is motion."""
    from itertools import islice

    from flowstore.decode import iter_frames

    return list(islice(iter_frames(shared_videos / "test.mp4"), 0, 9, 3))


def resized(frames, size):
    import cv2

    return [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """model -> its random checkpoint (seed 0), saved once per module."""
    folder = tmp_path_factory.mktemp("ckpt")
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = save_random_checkpoint(model, folder / f"{model}-random-seed0.ckpt", seed=0,
                                                  params=ITERS.get(model))
        return cache[model]
    return get


@pytest.fixture(scope="module")
def estimators(checkpoints):
    """model -> estimator built from its checkpoint through build_flow(..., ckpt=PATH), batch 2."""
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = build_flow(model, ckpt=str(checkpoints(model)), batch_size=2, params=ITERS.get(model))
        return cache[model]
    return get


def flows(est, frames):
    prepared = [est.prepare(f) for f in frames]
    return est.compute(prepared[:-1], prepared[1:])


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_round_trip_and_short_name(model, checkpoints, estimators, frames):
    """The file is read without unpickling code, every saved tensor is what the model holds, and
    the short name is ptlflow:NAME under another name (bit-identical flow)."""
    est = estimators(model)
    saved, _ = read_checkpoint(checkpoints(model))  # torch.load(weights_only=True)
    held = est.model.state_dict()
    assert saved.keys() == held.keys()
    assert all(torch.equal(saved[k], held[k]) for k in saved)
    d = est.describe()
    assert (d["method"], d["model"], d["engine"]) == (model, model, "ptlflow")
    published = import_ptlflow().get_model_reference(model).pretrained_checkpoints["things"]
    assert published.endswith("/" + LEARNED_MODELS[model]["things_ckpt"])  # the catalog names the real file
    small = resized(frames[:2], frame_size(model))
    long_name = build_flow(f"ptlflow:{model}", ckpt=checkpoints(model), batch_size=1, params=ITERS.get(model))
    assert long_name.describe()["method"] == f"ptlflow:{model}"
    assert np.array_equal(flows(est, small), flows(long_name, small))


@pytest.mark.parametrize("model", MODELS)
def test_batched_equals_one_by_one_deterministic_and_fp16_on_cpu(model, estimators, checkpoints, frames):
    est = estimators(model)
    small = resized(frames, frame_size(model))
    batched = flows(est, small)  # 2 pairs in one batch
    width, height = frame_size(model)
    assert batched.shape == (2, height, width, 2) and batched.dtype == np.float32
    assert np.isfinite(batched).all() and np.abs(batched).max() > 0
    # deterministic on the CPU: the same batch again is bit-identical
    assert np.array_equal(batched, flows(est, small))
    single = np.stack([est(a, b) for a, b in zip(small[:-1], small[1:])])
    np.testing.assert_allclose(batched, single, rtol=0, atol=ATOL_PX)
    # --fp16 on the CPU: ignored with a warning, the flow is the fp32 flow (the fp16 numerics are
    # checked on CUDA by tests/test_cuda_learned.py)
    with pytest.warns(UserWarning, match="fp16"):
        half = build_flow(model, ckpt=checkpoints(model), batch_size=1, fp16=True, params=ITERS.get(model))
    assert half.describe()["fp16"] is False
    assert np.array_equal(half(small[0], small[1]), single[0])


#: CPU float16 autocast (torch >= 2.3) is emulated and slow: raft_small took 8.6 s a pair at
#: 128x128 here, so the RAFT family's fp16 is left to tests/test_cuda_learned.py
FP16_ON_CPU = [m for m in MODELS if not min_frame_side(m) or min_frame_side(m) <= 48]


@pytest.mark.parametrize("model", FP16_ON_CPU)
def test_model_in_float16_autocast_on_the_cpu(model, estimators, frames):
    """What ``--fp16`` does on CUDA (autocast to float16) run on the CPU's autocast, where torch
    supports it: finite, and within the tolerance tests/test_cuda_learned.py uses on CUDA
    (``flowstore.flow.catalog.FP16_RELATIVE``). flowstore itself ignores --fp16 on the CPU (slower there)."""
    est = estimators(model)
    small = resized(frames[:2], frame_size(model))
    images = torch.stack([torch.stack([est.prepare(f) for f in small])])
    with torch.inference_mode():
        f32 = est.model({"images": images})["flows"]
        try:
            with torch.autocast("cpu", dtype=torch.float16):
                f16 = est.model({"images": images})["flows"].float()
        except RuntimeError as exc:  # an op without a CPU float16 kernel in this torch
            pytest.skip(f"CPU float16 autocast: {exc}")
    assert torch.isfinite(f16).all()
    scale = float(f32.abs().mean())
    assert float((f16 - f32).abs().mean()) <= fp16_tolerance(model, scale)


@pytest.mark.parametrize("model", MODELS)
def test_odd_frame_size_comes_back_at_input_size(model, estimators, frames):
    """A size that is a multiple of no stride: flow at the input size; for the padding models
    the same as replicate-padding both sides ourselves and cropping back (neuflow2 resizes to a
    multiple of 16 and back instead, as its authors did)."""
    from ptlflow.utils.utils import InputPadder

    est = estimators(model)
    width, height = odd_size(model)
    odd = resized(frames[:2], (width, height))
    out = flows(est, odd)
    assert out.shape == (1, height, width, 2) and np.isfinite(out).all()
    if model == "neuflow2":
        return
    stride = est.model.output_stride
    padder = InputPadder((1, 3, height, width), stride=stride, two_side_pad=True, pad_mode="replicate")
    prepared = [padder.pad(est.prepare(f)[None])[0] for f in odd]
    assert prepared[0].shape[-2] % stride == 0 and prepared[0].shape[-1] % stride == 0
    manual = est.compute(prepared[:-1], prepared[1:])
    cropped = padder.unpad(torch.from_numpy(manual).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(out, cropped, rtol=0, atol=ATOL_PX)


SIDED = [m for m in MODELS if min_frame_side(m)]


@pytest.mark.parametrize("model", SIDED)
def test_min_side_is_exact_and_smaller_frames_are_a_clear_error(model, estimators):
    """At ``min_side`` the model gives finite flow; one pixel less, the raw model gives NaN or
    raises, and flowstore refuses the frames up front with the size, the minimum and why."""
    est = estimators(model)
    side = min_frame_side(model)
    rng = np.random.default_rng(0)
    ok = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2)]
    assert np.isfinite(flows(est, ok)).all()
    x = torch.rand(1, 2, 3, side - 1, side - 1)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            raw = est.model({"images": x})["flows"]
            assert not torch.isfinite(raw).all(), f"{model} is finite below its min_side; lower it in the catalog"
        except RuntimeError as exc:  # SEA-RAFT's pooling: "output size is too small"
            assert "size" in str(exc)
    small = [f[:side - 1, :side - 1].copy() for f in ok]
    with pytest.raises(ValueError, match=rf"{side - 1}x{side - 1} are too small .*{model}.* >= {side} px"):
        flows(est, small)


def test_nan_below_min_side_is_geometry_not_weights(monkeypatch):
    """Why raft_small (and fastflownet) gave NaN with random weights: at 64x64 the 4-level
    correlation pyramid at 1/8 scale is 8, 4, 2 and 1 pixel wide, and ptlflow's
    ``bilinear_sampler`` maps pixel to grid coordinates with ``2 * x / (W - 1) - 1``: 0/0 = NaN
    on the 1-pixel level. So the NaN comes with every weight set to zero too, and goes away when
    that one division is guarded (``max(W - 1, 1)``, as fastflownet's own ``warp`` does)."""
    ptlflow = import_ptlflow()
    from ptlflow.models.raft import corr, utils

    from flowstore.flow.learned import _build_model

    model = _build_model(ptlflow, "raft_small", {"iters": 1})[0].eval()
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 2, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.isfinite(model({"images": x})["flows"]).all()

    def guarded(img, coords, mode="bilinear", mask=False):
        h, w = img.shape[-2:]
        xgrid, ygrid = coords.split([1, 1], dim=-1)
        grid = torch.cat([2 * xgrid / max(w - 1, 1) - 1, 2 * ygrid / max(h - 1, 1) - 1], dim=-1)
        return torch.nn.functional.grid_sample(img, grid, align_corners=True)

    assert corr.bilinear_sampler is utils.bilinear_sampler
    monkeypatch.setattr(corr, "bilinear_sampler", guarded)
    with torch.inference_mode():
        assert torch.isfinite(model({"images": x})["flows"]).all()


def test_non_finite_flow_fails_the_video_naming_the_pair(tmp_path, shared_videos):
    """A learned model's NaN is not quantized silently: a checkpoint that loads (every tensor
    finite, right keys and shapes) but holds negative BatchNorm running variances (a corrupt
    file) gives NaN flow, and extraction fails that video naming the pairs, storing nothing."""
    import flowstore
    from flowstore.decode import FrameResize
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract

    ckpt = save_random_checkpoint("neuflow", tmp_path / "neuflow-random.ckpt", seed=0)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key, value in state["state_dict"].items():
        if key.endswith("running_var"):
            value.fill_(-1.0)  # (x - mean) / sqrt(var + eps) = NaN
    torch.save(state, ckpt)
    cfg = ExtractConfig(out=str(tmp_path / "store"), method="neuflow", resize=FrameResize(size=(64, 48)), workers=1,
                        flow_options={"ckpt": str(ckpt), "batch_size": 4})
    summary = run_extract(plan_jobs([str(shared_videos / "part_0.mp4")]), cfg, show_progress=False, log=lambda m: None)
    assert (summary.ok, summary.failed) == (0, 1)
    (failure,) = summary.failures
    assert failure["id"] == "part_0" and "neuflow" in failure["reason"]
    assert "non-finite values (NaN or inf)" in failure["reason"] and "flow(s) [0" in failure["reason"]
    assert len(flowstore.open_store(cfg.out).videos) == 0
