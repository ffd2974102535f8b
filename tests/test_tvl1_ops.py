"""Torch TV-L1 keeps a GPU busy: aten ops and host-device syncs per batch, counted on the CPU.

:class:`flowstore.bench.flow.OpCounter` is a TorchDispatchMode: every aten op eager mode runs is
one kernel launch on a GPU, and the ops whose result the host must read (``.item()``, ``bool(t)``,
``nonzero``, ``tolist``, ...) are the syncs. The expectations are derived from the structure of the
algorithm: the ops of one inner iteration (counted on one call of it) times the iterations the run
reports, plus a stated bound for the rest (per warp: the bicubic warp, the data-term coefficients,
the mask and the check; per level: the resize, the gradient, the dual variables).

* the CPU (unfused) path: one sync per inner iteration (its per-sample compaction), and at least
  ``ops(inner iteration) + 1`` ops per inner iteration; bit-for-bit what it was before the fused
  path existed (tests/golden/tvl1_cpu_reference.npz, made by tests/golden/make_tvl1_reference.py);
* the fused path: no sync inside an outer iteration (the fused unit: one CUDA graph replay on a
  GPU, counted as one launch here), one fixed-cadence sync after each outer iteration, and so at
  most ``calls + 64 per warp + 64 per level`` launches, which cuts the eager ops >= 10x;
* the fused path without compilation is bit-for-bit the CPU path (the mask replaces compaction
  exactly); compiled (``backend="aot_eager"``, which runs the graph torch.compile captures, fast
  to compile here) it matches within max |d| <= 0.01 px, mean |d| <= 0.001 px (the compiled step
  is the functional form of the same arithmetic, e.g. no fused multiply-add of ``addcmul``).
  Inductor and CUDA graphs are checked on CUDA (tests/test_cuda_tvl1.py).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flowstore.bench.flow import OpCounter
from flowstore.errors import InputError
from flowstore.flow import build_flow
from flowstore.flow import torch_tvl1
from flowstore.flow.torch_tvl1 import tvl1_flow

GOLDEN = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN))
from make_tvl1_reference import reference_inputs  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_one_thread")

#: ops outside the fused call, per warp: the bicubic warp (grid: ~10), the data-term coefficients
#: and 1/|grad|^2 (~12), the mask set-up, the check and its sync (~4), the clones of the outputs (3)
#: and the tensors the wrapper hands over: about 40; bound 64
REST_PER_WARP = 64
#: per level: the flow upsampling (two index_select+lerp passes, cat), the centred gradient
#: (4 cats, 2 subs, 2 muls), the stacked image, the dual variables, the threshold tensor; bound 64
REST_PER_LEVEL = 64


def _batch(pairs=2):
    prev, nxt = reference_inputs()
    est = build_flow("tvl1", engine="torch", device="cpu")
    return (torch.from_numpy(np.stack([est.prepare(f) for f in prev[:pairs]])),
            torch.from_numpy(np.stack([est.prepare(f) for f in nxt[:pairs]])))


def _levels_and_warps(i0) -> tuple[int, int]:
    levels = len(torch_tvl1.pyramid_sizes(*i0.shape[-2:], 5, 0.8))
    return levels, levels * 5


def test_cpu_path_is_bit_for_bit_what_it_was():
    golden = np.load(GOLDEN / "tvl1_cpu_reference.npz")
    prev, nxt = reference_inputs()
    est = build_flow("tvl1", engine="torch", device="cpu", batch_size=2)
    flow = est.compute([est.prepare(f) for f in prev], [est.prepare(f) for f in nxt])
    if str(golden["torch_version"]) == torch.__version__:
        np.testing.assert_array_equal(flow, golden["flow"])
    else:  # another torch may round differently; the algorithm must still be the same
        np.testing.assert_allclose(flow, golden["flow"], atol=1e-3)
    i0, i1 = _batch()
    assert torch.equal(tvl1_flow(i0, i1), tvl1_flow(i0, i1, fused=False))  # the CPU default is unfused


def test_fused_eager_is_bit_for_bit_the_cpu_path():
    i0, i1 = _batch()
    stats_cpu, stats_fused = {}, {}
    cpu = tvl1_flow(i0, i1, stats=stats_cpu)
    fused = tvl1_flow(i0, i1, fused=True, compile=False, stats=stats_fused)
    assert torch.equal(fused, cpu)
    assert stats_fused == stats_cpu  # the same iterations, stopped by the mask instead of compaction


def test_fused_compiled_matches_eager():
    pytest.importorskip("torch._dynamo")
    i0, i1 = _batch()
    eager = tvl1_flow(i0, i1)
    compiled = tvl1_flow(i0, i1, fused=True, compile="aot_eager")
    d = (compiled - eager).abs()
    assert float(d.max()) <= 1e-2 and float(d.mean()) <= 1e-3, (float(d.max()), float(d.mean()))


@pytest.mark.skipif(not os.environ.get("FLOWSTORE_TEST_COMPILE"),
                    reason="inductor compiles for ~1 min on this CPU; set FLOWSTORE_TEST_COMPILE=1")
def test_fused_inductor_matches_eager():
    """Inductor (what CUDA runs, here with its C++ backend): mean |d| <= 0.05 px, the device
    checks' tolerance (a stopping decision may move; max |d| is not bounded)."""
    i0, i1 = _batch()
    d = (tvl1_flow(i0, i1, fused=True, compile=True) - tvl1_flow(i0, i1)).abs()
    assert float(d.mean()) <= 0.05, float(d.mean())


def test_outer_iteration_has_no_sync():
    """The fused unit: ops(median) + n_inner * ops(masked inner iteration), no sync."""
    b, h, w, n_inner = 2, 24, 32, 4
    g = torch.Generator().manual_seed(0)
    u, p1, p2, coef = (torch.randn(b, 2, h, w, generator=g) for _ in range(4))
    rho_c, neg_inv_grad = torch.randn(b, 1, h, w, generator=g), -torch.rand(b, 1, h, w, generator=g)
    active, count, eps = torch.tensor([True, False]), torch.zeros(b, dtype=torch.int32), torch.tensor(0.01)
    step_args = (coef, rho_c, neg_inv_grad, eps, 0.045, 0.3, 0.25 / 0.3)
    with OpCounter() as one_median:
        torch_tvl1.masked_median(u, active, 5)
    with OpCounter() as one_step:
        torch_tvl1.masked_step(u, p1, p2, active, count, *step_args)
    with OpCounter() as outer:
        out = torch_tvl1.outer_iteration(torch_tvl1.masked_step, torch_tvl1.masked_median, u, p1, p2, active, count,
                                         *step_args[:4], n_inner=n_inner, median=5, l_t=0.045, theta=0.3,
                                         taut=0.25 / 0.3)
    assert one_step.syncs == one_median.syncs == outer.syncs == 0
    assert outer.ops == one_median.ops + n_inner * one_step.ops
    assert torch.equal(out[0][1], u[1]) and out[4].tolist() == [n_inner, 0]  # the stopped sample is frozen


def test_op_and_sync_counts_per_batch(monkeypatch):
    i0, i1 = _batch()
    levels, warps = _levels_and_warps(i0)
    u = torch.zeros(2, 2, *i0.shape[-2:])
    with OpCounter() as step:
        torch_tvl1._inner_step(u, u, u, u, u[:, :1], u[:, :1], 0.045, 0.3, 0.83)

    stats: dict = {}
    with OpCounter() as eager:
        tvl1_flow(i0, i1, stats=stats)
    n_iter = sum(stats["inner_iterations"])
    # unfused CPU path: its compaction reads the per-sample flags after every inner iteration
    assert eager.syncs >= n_iter
    assert eager.ops >= n_iter * (step.ops + 1)

    calls = []
    real_outer = torch_tvl1.outer_iteration

    def counted_outer(*args, **kwargs):
        calls.append(1)
        with fused.as_one("outer_iteration"):  # one CUDA graph replay on a GPU
            return real_outer(*args, **kwargs)

    monkeypatch.setattr(torch_tvl1, "outer_iteration", counted_outer)
    with OpCounter() as fused:
        tvl1_flow(i0, i1, fused=True, compile=False)
    assert warps <= len(calls) <= warps * 10  # at least one outer iteration per warp, at most outerIterations
    assert fused.syncs <= len(calls)  # the fixed-cadence check: one per outer iteration, none inside
    assert fused.syncs == fused.by_op["aten._local_scalar_dense"]  # ... and only that one: bool(active.any())
    assert fused.ops <= len(calls) + REST_PER_WARP * warps + REST_PER_LEVEL * levels
    assert fused.ops * 10 <= eager.ops, (fused.ops, eager.ops)


def test_cuda_graphs_need_the_fused_path_on_cuda():
    i0, i1 = _batch(1)
    with pytest.raises(InputError, match="cuda_graphs"):
        tvl1_flow(i0, i1, cuda_graphs=True)


class PeakBytes:
    """Peak bytes of the tensor storages alive during ``with PeakBytes() as p:`` that the ops
    inside created (a TorchDispatchMode; a storage counts until its last tensor or view is gone)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_leaves

        owner = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_leaves(out):
                    if isinstance(t, torch.Tensor):
                        owner._add(t.untyped_storage())
                return out

        self._mode, self._live, self.now, self.peak = _Mode(), set(), 0, 0

    def _add(self, storage) -> None:
        import weakref

        key, size = storage.data_ptr(), storage.nbytes()
        if size == 0 or key in self._live:
            return
        self._live.add(key)
        self.now += size
        self.peak = max(self.peak, self.now)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key, size) -> None:
        self._live.discard(key)
        self.now -= size

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


@pytest.mark.parametrize("method", ["tvl1", "farneback"])
def test_planes_per_pair_bound_the_measured_peak(method):
    """The per-pair memory the automatic batch size assumes covers the measured peak: the slope of
    the peak between batch 1 and 4 (TV-L1: without the 2.8x of one CUDA graph pool per level)."""
    from flowstore.flow.torch_engines import TorchFarneback, TorchTVL1
    from flowstore.flow.torch_farneback import farneback_flow

    h, w = 48, 64
    run = {"tvl1": lambda a, b: tvl1_flow(a, b, fused=True),
           "farneback": lambda a, b: farneback_flow(a, b)}[method]
    peaks = {}
    for batch in (1, 4):
        a = torch.from_numpy(np.stack([_batch(1)[0][0].numpy()] * batch))
        b = torch.roll(a, 2, -1)
        with PeakBytes() as p:
            run(a, b)
        peaks[batch] = p.peak
    planes = (peaks[4] - peaks[1]) / 3 / (4 * h * w)
    bound = TorchTVL1.PLANES_PER_PAIR / 2.8 if method == "tvl1" else TorchFarneback.PLANES_PER_PAIR
    assert 8 < planes <= bound, (planes, bound)


def test_automatic_batch_size(monkeypatch):
    import flowstore.flow.torch_engines as engines

    est = build_flow("tvl1", engine="torch", device="cpu")
    assert est.batch_size == engines.DEFAULT_BATCH_SIZE and est.describe()["batch_size"] == 8  # the CPU: unchanged
    assert build_flow("tvl1", engine="torch", device="cpu", batch_size=3).batch_size == 3  # the override
    with pytest.raises(InputError, match="batch_size"):
        build_flow("tvl1", engine="torch", batch_size=0)
    # on CUDA: share of free memory / bytes per pair, capped; mem_get_info faked here
    free = 10 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    cuda = torch.device("cuda")
    per_pair = engines.TorchTVL1.BYTES_PER_PIXEL * 256 * 340
    assert engines.auto_batch_size(cuda, 256, 340, engines.TorchTVL1.BYTES_PER_PIXEL) == \
        int(free * engines.AUTO_BATCH_MEMORY_SHARE) // per_pair
    assert engines.auto_batch_size(cuda, 8, 8, 4) == engines.MAX_AUTO_BATCH_SIZE
    assert engines.auto_batch_size(cuda, 10**5, 10**5, 4) == 1
    est._device = cuda  # the property resolves per frame size, from what prepare() saw
    est.prepare(np.zeros((256, 340, 3), np.uint8))
    assert est.batch_size == engines.auto_batch_size(cuda, 256, 340, engines.TorchTVL1.BYTES_PER_PIXEL)
    assert est.describe()["batch_size"] == "auto"


def test_farneback_has_no_sync_and_few_ops():
    """torch Farneback needs no fusing: no sync at all, and its ops do not grow with the batch
    (per level a fixed number of filter passes and ``iterations`` displacement updates)."""
    from flowstore.flow.torch_farneback import farneback_flow

    counts = {}
    for batch in (1, 3):
        i0, i1 = (t.expand(batch, -1, -1).contiguous() for t in (t[:1] for t in _batch(1)))
        with OpCounter() as c:
            farneback_flow(i0, i1)
        counts[batch] = (c.ops, c.syncs)
    assert counts[1] == counts[3] and counts[1][1] == 0, counts
