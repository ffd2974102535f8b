"""The fused torch TV-L1 path on CUDA (``pytest -m cuda``; skips without CUDA, run by
benchmarks/gpu_check.py): torch.compile (inductor) and CUDA graphs against the eager result.

Tolerances: the fused path on CUDA vs the unfused one on the CPU (and vs the unfused one on CUDA):
mean |d| <= 0.05 px, as in flowstore/bench/cuda_checks.py (a stopping threshold on float sums:
rounding may move where a warp stops); with and without CUDA graphs (same compiled kernels): mean
|d| <= 1e-3 px; batch = one at a time: mean |d| <= 1e-3 px (the per-sample mask is exact, the
kernels of another batch size may round differently).
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flowstore.bench.cuda_checks import gt_pair, texture_frames  # noqa: E402
from flowstore.bench.flow import OpCounter  # noqa: E402
from flowstore.flow import build_flow  # noqa: E402
from flowstore.flow.torch_tvl1 import tvl1_flow  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _gray_batch(count: int, size=(160, 128)) -> tuple[torch.Tensor, torch.Tensor]:
    est = build_flow("tvl1", engine="torch", device="cpu")
    frames = [est.prepare(f) for f in texture_frames(count + 1, *size, seed=5)]
    return torch.from_numpy(np.stack(frames[:-1])), torch.from_numpy(np.stack(frames[1:]))


def test_fused_defaults_on_cuda_match_the_cpu():
    a, b, _ = gt_pair(160, 128)
    cpu = build_flow("tvl1", engine="torch", device="cpu", batch_size=1)(a, b)
    fused = build_flow("tvl1", engine="torch", device="cuda", batch_size=1)(a, b)  # fused, compiled, graphs
    unfused = build_flow("tvl1", engine="torch", device="cuda", batch_size=1, fused=False)(a, b)
    assert np.isfinite(fused).all()
    assert np.abs(fused - cpu).mean() <= 0.05 and np.abs(fused - unfused).mean() <= 0.05


def test_cuda_graphs_match_plain_compiled_and_keep_results():
    i0, i1 = (t.cuda() for t in _gray_batch(3))
    graphed = tvl1_flow(i0, i1, fused=True)
    again = tvl1_flow(i0, i1, fused=True)  # replays the captured graphs
    plain = tvl1_flow(i0, i1, fused=True, cuda_graphs=False)
    assert (graphed - plain).abs().mean().item() <= 1e-3
    assert torch.equal(graphed, again)  # the first result is not overwritten by the replay
    assert graphed.data_ptr() != again.data_ptr()


def test_fused_batch_equals_one_at_a_time():
    i0, i1 = (t.cuda() for t in _gray_batch(4))
    batched = tvl1_flow(i0, i1, fused=True)
    for k in range(4):
        single = tvl1_flow(i0[k : k + 1], i1[k : k + 1], fused=True)
        assert (batched[k] - single[0]).abs().mean().item() <= 1e-3


def test_fused_launches_and_syncs_on_cuda():
    """On CUDA the fused path launches (host-side aten ops) at least 10x fewer ops than the
    unfused one and syncs once per outer iteration at most (see tests/test_tvl1_ops.py)."""
    i0, i1 = (t.cuda() for t in _gray_batch(2))
    tvl1_flow(i0, i1, fused=True)  # compile and capture outside the count
    with OpCounter() as fused:
        tvl1_flow(i0, i1, fused=True)
    with OpCounter() as unfused:
        tvl1_flow(i0, i1, fused=False)
    assert fused.ops * 10 <= unfused.ops, (fused.ops, unfused.ops)
    assert fused.syncs <= 5 * 5 * 10


def test_automatic_batch_size_fits_and_runs():
    est = build_flow("tvl1", engine="torch", device="cuda")
    frames = texture_frames(3, 340, 256)
    est.prepare(frames[0])
    assert 1 <= est.batch_size <= 256
    flows = est.compute([est.prepare(f) for f in frames[:2]], [est.prepare(f) for f in frames[1:]])
    assert flows.shape == (2, 256, 340, 2) and np.isfinite(flows).all()
