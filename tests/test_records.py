"""The record layout both ways (flowstore.store.records), on a real ground-truth flow."""
import numpy as np
import pytest

from flowstore.flo import read_flo
from flowstore.quantize import LEVELS, QuantSpec
from flowstore.store import records
from flowstore.store.format import FLOW_RANGE, FLOW_X, FLOW_Y, RGB
from flowstore.errors import DamagedStoreError


@pytest.fixture(scope="module")
def gt_flow(flow_gt_dir):
    return read_flo(sorted(flow_gt_dir.rglob("*.flo"))[0])


@pytest.mark.parametrize("codec", ["png", "raw"])
def test_bound_flow_round_trip_within_half_a_level(gt_flow, codec):
    quant = QuantSpec("bound", 20.0)
    recs = records.flow_records(7, gt_flow, quant, codec, None)
    assert [(r.kind, r.index) for r in recs] == [(FLOW_X, 7), (FLOW_Y, 7)]
    shape = gt_flow.shape[:2]
    back = records.decode_flow(recs[0].payload, recs[1].payload, None, quant, codec, shape)
    inside = np.abs(gt_flow).max(axis=2) < 20  # outside the bound values are clipped
    step = 2 * 20.0 / LEVELS
    assert np.abs(back - gt_flow)[inside].max() <= step / 2 + 1e-5
    q = records.decode_flow_q(recs[0].payload, recs[1].payload, codec, shape)
    assert q.dtype == np.uint8 and q.shape == (*shape, 2)


def test_minmax_flow_carries_its_range_record(gt_flow):
    quant = QuantSpec("minmax")
    recs = records.flow_records(0, gt_flow, quant, "png", None)
    assert [r.kind for r in recs] == [FLOW_X, FLOW_Y, FLOW_RANGE]
    rng = records.unpack_range(recs[2].payload)
    expected = [gt_flow[..., 0].min(), gt_flow[..., 0].max(), gt_flow[..., 1].min(), gt_flow[..., 1].max()]
    np.testing.assert_allclose(rng, expected, rtol=1e-6)
    back = records.decode_flow(recs[0].payload, recs[1].payload, recs[2].payload, quant, "png", gt_flow.shape[:2])
    steps = (rng[[1, 3]] - rng[[0, 2]]) / LEVELS
    assert (np.abs(back - gt_flow).reshape(-1, 2).max(axis=0) <= steps / 2 + 1e-4).all()


def test_a_range_record_of_the_wrong_size_is_damage():
    with pytest.raises(DamagedStoreError, match="15 bytes"):
        records.unpack_range(b"\0" * 15)


def test_frame_record_and_the_kinds_an_entry_promises():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    (rec,) = records.frame_records(3, rgb, "png", None)
    assert (rec.kind, rec.index) == (RGB, 3)
    assert np.array_equal(records.decode_frame(rec.payload, "png", (6, 8)), rgb)
    entry = {"num_frames": 5, "num_flows": 4}
    assert records.record_counts(entry, "bound") == [(RGB, 5), (FLOW_X, 4), (FLOW_Y, 4)]
    assert records.record_counts(entry, "minmax") == [(RGB, 5), (FLOW_X, 4), (FLOW_Y, 4), (FLOW_RANGE, 4)]
