"""Pairs per second of the torch TV-L1 / Farneback engines next to OpenCV's, in one run.

Frames are consecutive frames of ../shared/data/videos/test.mp4 resized to --size (default
340x256; random frames if the clip is missing). Every engine gets the same pairs; each torch
configuration first does one untimed warm-up batch (this is where torch.compile compiles). OpenCV
runs on the CPU, the torch engines on --device. Timings include the host->device copy of the
grayscale frames and the copy of the flow back to numpy. "vs OpenCV" is the speed ratio
(> 1: torch is faster); "cpu s/pair" is the CPU time of this process (all its threads) per pair,
less sensitive than wall time to other load on a shared machine; "|d| px" is the mean absolute
difference to OpenCV's flow. On a busy machine use --threads 1: torch's many small ops slow down
badly when its threads compete with other processes for the cores.

    python benchmarks/torch_flow.py [--device cpu|cuda] [--pairs 16] [--size 340x256]
                                    [--threads N] [--compile] [--batch-sizes 1,8]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CLIP, clip_frames  # noqa: E402
from flowstore.flow import build_flow  # noqa: E402



def timed(est, frames: list[np.ndarray], warmup: bool) -> tuple[float, float, np.ndarray]:
    """Wall seconds, CPU seconds of this process (all threads) and the flows of all pairs."""
    prepared = [est.prepare(f) for f in frames]
    if warmup:  # one pair; a whole batch with torch.compile (batch size 1 is compiled apart)
        n = min(est.batch_size if getattr(est, "compile", False) else 1, len(prepared) - 1)
        est.compute(prepared[:n], prepared[1 : n + 1])
    start, cpu_start = time.perf_counter(), time.process_time()
    flows = est.compute(prepared[:-1], prepared[1:])  # numpy result: the device work is finished
    return time.perf_counter() - start, time.process_time() - cpu_start, flows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="torch device for the torch engines (cpu, cuda, cuda:1, ...)")
    ap.add_argument("--pairs", type=int, default=16, help="timed frame pairs per engine")
    ap.add_argument("--size", default="340x256", help="WIDTHxHEIGHT")
    ap.add_argument("--batch-sizes", default="1,8", help="torch TV-L1 batch sizes to time (Farneback: the largest)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads and cv2.setNumThreads (default: each library's own)")
    ap.add_argument("--compile", action="store_true", help="also time torch TV-L1 with compile=True")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    frames = clip_frames(args.pairs + 1, width, height)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.pairs} pairs at {width}x{height} from {CLIP.name}; torch {torch.__version__} on {args.device} "
        f"({torch.get_num_threads()} threads), OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads); "
        f"load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'method':<10} {'engine':<8} {'device':<8} {'batch':>5} {'compile':>7} {'pairs/s':>8} {'vs OpenCV':>9} "
          f"{'cpu s/pair':>10} {'|d| px':>7}")

    def row(method, engine, device, batch, compiled, seconds, cpu, ref_rate=None, diff=None):
        rate = args.pairs / seconds
        ratio = f"{rate / ref_rate:8.2f}x" if ref_rate else f"{'':>9}"
        d = f"{diff:7.3f}" if diff is not None else f"{'':>7}"
        print(f"{method:<10} {engine:<8} {device:<8} {batch:>5} {str(compiled):>7} {rate:8.2f} {ratio} "
              f"{cpu / args.pairs:10.3f} {d}", flush=True)
        return rate

    for method in ("tvl1", "farneback"):
        seconds, cpu, ref = timed(build_flow(method, engine="opencv"), frames, warmup=False)
        ref_rate = row(method, "opencv", "cpu", 1, False, seconds, cpu)
        configs = [(b, False) for b in batch_sizes] if method == "tvl1" else [(max(batch_sizes), False)]
        if method == "tvl1" and args.compile:
            configs += [(max(batch_sizes), True)]
        for batch, compiled in configs:
            est = build_flow(method, engine="torch", device=args.device, batch_size=batch, compile=compiled)
            seconds, cpu, flows = timed(est, frames, warmup=True)
            row(method, "torch", args.device, batch, compiled, seconds, cpu, ref_rate, float(np.abs(flows - ref).mean()))


if __name__ == "__main__":
    main()
