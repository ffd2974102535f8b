"""Torch TV-L1, unfused (the CPU path) vs fused, side by side in one run: aten ops and host-device
syncs per batch (what a GPU would launch and wait for; counted on any device with
flowstore.bench.flow.OpCounter, one fused outer iteration = one launch, as a CUDA graph replay is),
and pairs/s of the unfused path, the fused path uncompiled and the fused path compiled (inductor).

    PYTHONPATH=. python benchmarks/tvl1_fused.py [--device cpu] [--sizes 170x128,340x256] [--batches 1,8]

The frames are the shared Sintel pair (../shared/data/flow_gt), resized; a batch repeats it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from flowstore.bench.cuda_checks import gt_pair  # noqa: E402
from flowstore.bench.flow import OpCounter  # noqa: E402
from flowstore.flow import torch_tvl1  # noqa: E402
from flowstore.flow.opencv import to_gray  # noqa: E402

VARIANTS = {  # name -> tvl1_flow options
    "unfused": {"fused": False},
    "fused uncompiled": {"fused": True, "compile": False},
    "fused compiled": {"fused": True, "compile": True},
}


def count(i0, i1, **options) -> tuple[int, int, int]:
    """(ops, syncs, fused calls) of one batch."""
    calls = []
    real = torch_tvl1.outer_iteration

    def one_launch(*args, **kwargs):
        calls.append(1)
        with counter.as_one("outer_iteration"):
            return real(*args, **kwargs)

    torch_tvl1.outer_iteration = one_launch
    try:
        with OpCounter() as counter:
            torch_tvl1.tvl1_flow(i0, i1, **options)
    finally:
        torch_tvl1.outer_iteration = real
    return counter.ops, counter.syncs, len(calls)


def rate(i0, i1, repeats: int, **options) -> tuple[float, float]:
    """(pairs/s after a warm-up call, seconds of the warm-up call: compilation included)."""
    start = time.perf_counter()
    torch_tvl1.tvl1_flow(i0, i1, **options)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        flow = torch_tvl1.tvl1_flow(i0, i1, **options)
    if i0.device.type == "cuda":
        torch.cuda.synchronize()
    del flow
    return repeats * i0.shape[0] / (time.perf_counter() - start), warm


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="170x128,340x256")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {args.threads} thread(s)")
    print("| size | batch | path | aten ops / batch | syncs / batch | fused calls | pairs/s | first call s | mean / max abs diff to unfused px |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        a, b, _ = gt_pair(w, h)
        g0, g1 = (torch.from_numpy(to_gray(x)) for x in (a, b))
        for batch in (int(v) for v in args.batches.split(",")):
            i0 = g0.expand(batch, -1, -1).contiguous().to(args.device)
            i1 = g1.expand(batch, -1, -1).contiguous().to(args.device)
            reference = torch_tvl1.tvl1_flow(i0, i1, fused=False)
            for name, options in VARIANTS.items():
                ops, syncs, calls = count(i0, i1, **options) if name != "fused compiled" else (None, None, None)
                pairs_s, warm = rate(i0, i1, args.repeats, **options)
                d = (torch_tvl1.tvl1_flow(i0, i1, **options) - reference).abs()
                cells = [size, str(batch), name, str(ops) if ops is not None else "as uncompiled",
                         str(syncs) if syncs is not None else "as uncompiled", str(calls) if calls is not None else "",
                         f"{pairs_s:.2f}", f"{warm:.1f}", f"{float(d.mean()):.4f} / {float(d.max()):.4f}"]
                print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
