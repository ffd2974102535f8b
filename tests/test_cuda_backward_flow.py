"""On CUDA (``pytest -m cuda``; skips without a device): backward flow extracted by the torch
TV-L1 engine with a batch is the engine run on the swapped pairs (batch order swapped), as on
the CPU in tests/test_backward_flow.py."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_backward_is_the_engine_on_the_swapped_pairs_on_cuda(tmp_path):
    import flowstore
    from flowstore.decode import read_frames
    from flowstore.extract import ExtractConfig, VideoJob, run_extract
    from flowstore.flow import build_flow
    from flowstore.quantize import QuantSpec, quantize
    from tests.test_backward_flow import write_shift_video

    path = write_shift_video(tmp_path / "shift.avi")
    cfg = ExtractConfig(out=str(tmp_path / "s"), method="tvl1", engine="torch", device="cuda", workers=1,
                        flow_codec="raw", frame_codec="png", flow_options={"batch_size": 8},
                        directions=("forward", "backward"))
    assert run_extract([VideoJob("v", str(path))], cfg, show_progress=False).ok == 1
    estimator = build_flow("tvl1", engine="torch", device="cuda", batch_size=8)
    prepared = [estimator.prepare(f) for f in read_frames(path)]
    backward = estimator.compute(prepared[1:], prepared[:-1])
    with flowstore.open_store(tmp_path / "s", check=True) as store:
        for i in range(store.num_flows("v")):
            np.testing.assert_array_equal(store.flow_q("v", i, "backward"), quantize(backward[i], QuantSpec())[0])
            assert store.flow("v", i, "backward")[8:-8, 8:-8, 0].mean() > 1.5  # moves right: +SHIFT
