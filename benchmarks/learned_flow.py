"""Seconds per frame pair of a ptlflow model (default GMFlow) through flowstore's ptlflow engine.

Frames are consecutive frames of ../shared/data/videos/test.mp4 resized to --size (random
frames if the clip is missing). Without --ckpt the model gets random weights (seeded): the
speed is that of the trained model, the flow is meaningless. One warm-up batch is not timed.

    python benchmarks/learned_flow.py [--model gmflow] [--device cpu] [--pairs 16]
                                      [--batch-size 1] [--size 340x256] [--ckpt PATH] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clip_frames  # noqa: E402
from flowstore.flow import build_flow  # noqa: E402
from flowstore.flow.learned import save_random_checkpoint  # noqa: E402



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gmflow", help="ptlflow model name (default gmflow)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--pairs", type=int, default=16, help="timed pairs (after one warm-up batch)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--size", default="340x256", help="WIDTHxHEIGHT")
    ap.add_argument("--ckpt", default=None, help="checkpoint file; default: random weights (seed 0)")
    ap.add_argument("--fp16", action="store_true", help="autocast float16 (CUDA only)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt or save_random_checkpoint(args.model, Path(tmp) / f"{args.model}-random.ckpt", seed=0)
        est = build_flow(f"ptlflow:{args.model}", device=args.device, ckpt=ckpt,
                         batch_size=args.batch_size, fp16=args.fp16)
    frames = clip_frames(args.pairs + args.batch_size + 1, width, height)
    prepared = [est.prepare(f) for f in frames]

    warm = args.batch_size
    est.compute(prepared[:warm], prepared[1:warm + 1])
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    flows = est.compute(prepared[warm:warm + args.pairs], prepared[warm + 1:warm + args.pairs + 1])
    sync()
    elapsed = time.perf_counter() - start
    assert flows.shape == (args.pairs, height, width, 2)
    d = est.describe()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print("| model | device | size | batch | pairs | s/pair | pairs/s | torch threads | weights | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {d['device']}{' fp16' if d['fp16'] else ''} | {width}x{height} | {args.batch_size} | "
          f"{args.pairs} | {elapsed / args.pairs:.3f} | {args.pairs / elapsed:.2f} | {torch.get_num_threads()} | "
          f"{'random' if not args.ckpt else Path(args.ckpt).name} | {load:.1f} / {os.cpu_count()} CPUs |")


if __name__ == "__main__":
    main()
