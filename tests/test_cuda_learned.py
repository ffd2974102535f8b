"""Every learned model with a short name on CUDA (``pytest -m cuda``; skipped without CUDA or
ptlflow): CUDA fp32 against the CPU, and CUDA fp16 (autocast) against CUDA fp32, on a real pair
at 256x192 (above every model's ``min_side``) with random weights (seed 0, ptlflow's own
initialisation; the same checkpoint file for both devices).

Tolerances, relative to the mean |flow| of the reference (random weights give flows of a few
pixels to tens of pixels, so an absolute bound alone would mean different things per model):

* CUDA fp32 vs CPU fp32: mean |d| <= 1% of the mean |flow| + 0.01 px. TF32 is switched off
  (for convolutions and matmuls) so both sides are fp32, but cuDNN picks other convolution
  algorithms and reassociates sums; recurrent refinements grow that rounding to around 1e-3
  relative, far below the 8-bit quantization step (0.157 px).
* CUDA fp16 vs CUDA fp32: mean |d| <= 5% of the mean |flow| + 0.05 px (fp16 has a 1e-3 relative
  mantissa; correlation volumes and softmaxes over hundreds of positions grow it), 10% for
  gmflow (``flowstore.flow.catalog.FP16_RELATIVE`` says why), and finite: an overflow
  in fp16 (a correlation volume above 65504) would show as inf/NaN here.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flowstore.flow import build_flow  # noqa: E402
from flowstore.flow.catalog import LEARNED_MODELS  # noqa: E402
from flowstore.flow.catalog import fp16_tolerance  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SIZE = (256, 192)


@pytest.fixture(scope="module")
def pair(shared_videos):
    """Frames 0 and 3 of test.mp4 at 256x192."""
    from itertools import islice

    from flowstore.decode import FrameResize, iter_frames

    return list(islice(iter_frames(shared_videos / "test.mp4", resize=FrameResize(size=SIZE)), 0, 4, 3))


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ckpt")


def _flows(model, ckpt, device, fp16, pair, batch_size=1):
    est = build_flow(model, ckpt=ckpt, device=device, fp16=fp16, batch_size=batch_size)
    a, b = (est.prepare(f) for f in pair)
    return est.compute([a, a], [b, b])  # two pairs: batch_size 2 also exercises batching


@pytest.mark.parametrize("model", list(LEARNED_MODELS))
def test_cuda_against_cpu_and_fp16_against_fp32(model, pair, ckpt_dir, monkeypatch):
    pytest.importorskip("ptlflow")
    from flowstore.flow.learned import save_random_checkpoint

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    ckpt = save_random_checkpoint(model, ckpt_dir / f"{model}-random.ckpt", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        cpu = _flows(model, ckpt, "cpu", False, pair)
    cuda32 = _flows(model, ckpt, "cuda", False, pair, batch_size=2)
    cuda16 = _flows(model, ckpt, "cuda", True, pair, batch_size=2)
    for name, flow in (("cpu", cpu), ("cuda fp32", cuda32), ("cuda fp16", cuda16)):
        assert np.isfinite(flow).all(), f"{model} {name}: non-finite flow"
    scale = float(np.abs(cpu).mean())
    d32 = float(np.abs(cuda32 - cpu).mean())
    assert d32 <= 0.01 * scale + 0.01, f"{model}: CUDA fp32 differs from the CPU by {d32:.4f} px (mean |flow| {scale:.3f})"
    d16 = float(np.abs(cuda16 - cuda32).mean())
    assert d16 <= fp16_tolerance(model, scale), f"{model}: fp16 differs from fp32 by {d16:.4f} px (mean |flow| {scale:.3f})"
    # the two identical pairs of one batch agree on the device too
    np.testing.assert_allclose(cuda32[0], cuda32[1], rtol=0, atol=1e-3)
