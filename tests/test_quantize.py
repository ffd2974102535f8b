"""Quantization properties (Simonyan & Zisserman / TSN scheme and per-flow min-max)."""
import numpy as np
import pytest

from flowstore.quantize import LEVELS, QuantSpec, dequantize, flip_horizontal, quantization_step, quantize

rng = np.random.default_rng(0)


def random_flow(h=31, w=47, scale=15.0):
    return (rng.standard_normal((h, w, 2)) * scale).astype(np.float32)


@pytest.mark.parametrize("bound", [20.0, 5.0, 1.0])
def test_bound_roundtrip_error_at_most_half_a_step(bound):
    spec = QuantSpec("bound", bound)
    flow = np.clip(random_flow(scale=bound), -bound, bound)
    q, rng_ = quantize(flow, spec)
    assert q.dtype == np.uint8 and rng_ is None
    err = np.abs(dequantize(q, spec) - flow)
    assert err.max() <= quantization_step(spec) / 2 + 1e-5


def test_bound_formula_and_rounding_not_truncation():
    spec = QuantSpec("bound", 20.0)
    # values whose scaled position is k + 0.6: truncation gives k, rounding gives k + 1
    k = np.arange(0, 254, dtype=np.float64)
    v = (k + 0.6) * 40.0 / 255.0 - 20.0
    q, _ = quantize(np.stack([v, v], -1)[None].astype(np.float32), spec)
    np.testing.assert_array_equal(q[0, :, 0], (k + 1).astype(np.uint8))
    # the formula, computed independently in float64
    flow = random_flow(scale=30)
    expected = np.rint((np.clip(flow.astype(np.float64), -20, 20) + 20) * 255 / 40)
    q, _ = quantize(flow, spec)
    assert np.abs(q.astype(int) - expected.astype(int)).max() <= 1  # float32 vs float64 at exact .5 ties
    assert (q.astype(int) == expected.astype(int)).mean() > 0.999


def test_bound_clips_and_maps_extremes():
    spec = QuantSpec("bound", 20.0)
    flow = np.array([[[-1e6, 1e6], [-20.0, 20.0]], [[0.0, 0.0], [25.0, -25.0]]], np.float32)
    q, _ = quantize(flow, spec)
    assert q[0, 0].tolist() == [0, 255] and q[0, 1].tolist() == [0, 255] and q[1, 1].tolist() == [255, 0]
    assert q[1, 0].tolist() == [128, 128]  # rint(127.5) = 128 (half to even)
    back = dequantize(q, spec)
    assert back[0, 0].tolist() == [-20.0, 20.0]


def test_flip_rule_negates_u_exactly_after_dequantization():
    spec = QuantSpec("bound", 20.0)
    flow = random_flow()
    q, _ = quantize(flow, spec)
    flipped, _ = flip_horizontal(q)
    deq, deq_f = dequantize(q, spec), dequantize(flipped, spec)
    np.testing.assert_allclose(deq_f[:, ::-1, 0], -deq[..., 0], atol=1e-5)
    np.testing.assert_array_equal(deq_f[:, ::-1, 1], deq[..., 1])
    # and it equals quantizing the mirrored, negated flow (up to .5 ties)
    mirrored = flow[:, ::-1].copy()
    mirrored[..., 0] *= -1
    q_m, _ = quantize(mirrored, spec)
    assert np.abs(q_m.astype(int) - flipped.astype(int)).max() <= 1


def test_minmax_roundtrip_and_range():
    spec = QuantSpec("minmax")
    flow = random_flow(scale=3)
    q, value_range = quantize(flow, spec)
    lo_x, hi_x, lo_y, hi_y = value_range
    assert lo_x == flow[..., 0].min() and hi_x == flow[..., 0].max() and lo_y == flow[..., 1].min()
    assert q[..., 0].min() == 0 and q[..., 0].max() == LEVELS
    err = np.abs(dequantize(q, spec, value_range) - flow)
    step = np.array([hi_x - lo_x, hi_y - lo_y]) / LEVELS
    assert (err <= step / 2 + 1e-5).all()


def test_minmax_flip_and_constant_component():
    spec = QuantSpec("minmax")
    flow = random_flow(scale=2)
    flow[..., 1] = 1.5  # constant component
    q, value_range = quantize(flow, spec)
    assert (q[..., 1] == 0).all()
    np.testing.assert_allclose(dequantize(q, spec, value_range)[..., 1], 1.5)
    flipped, frange = flip_horizontal(q, value_range)
    deq, deq_f = dequantize(q, spec, value_range), dequantize(flipped, spec, frange)
    np.testing.assert_allclose(deq_f[:, ::-1, 0], -deq[..., 0], atol=1e-5)


def test_spec_validation_and_manifest_roundtrip():
    with pytest.raises(ValueError, match="unknown quantization 'log'"):
        QuantSpec("log")
    with pytest.raises(ValueError, match="positive"):
        QuantSpec("bound", 0.0)
    spec = QuantSpec("bound", 15.0)
    entry = spec.to_manifest()
    assert entry["rounding"] == "half_to_even" and entry["bound"] == 15.0
    assert QuantSpec.from_manifest(entry) == spec
    with pytest.raises(ValueError, match="range"):
        dequantize(np.zeros((2, 2, 2), np.uint8), QuantSpec("minmax"))
