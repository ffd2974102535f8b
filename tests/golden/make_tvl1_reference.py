"""Made once, from flowstore at commit 3c3e54d (before the fused TV-L1 path existed), with torch
2.14.1 on the project machine: the CPU flow of torch TV-L1 on two synthetic pairs, so that
tests/test_tvl1_ops.py can check that the CPU path stays bit-for-bit what it was.

    PYTHONPATH=. python tests/golden/make_tvl1_reference.py
"""
from pathlib import Path

import numpy as np
import torch

from flowstore.bench.cuda_checks import texture_frames
from flowstore.flow import build_flow

OUT = Path(__file__).resolve().parent / "tvl1_cpu_reference.npz"


def reference_inputs() -> tuple[list, list]:
    frames = texture_frames(3, 64, 48, seed=3)
    return frames[:2], frames[1:]


if __name__ == "__main__":
    torch.set_num_threads(1)
    prev, nxt = reference_inputs()
    est = build_flow("tvl1", engine="torch", device="cpu", batch_size=2)
    flow = est.compute([est.prepare(f) for f in prev], [est.prepare(f) for f in nxt])
    np.savez_compressed(OUT, flow=flow, torch_version=np.array(torch.__version__))
    print(OUT, flow.shape, float(np.abs(flow).mean()))
