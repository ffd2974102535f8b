"""Pairs/s of every learned model with a short name on the CPU at 340x256, batch 1 and batch 8,
beside OpenCV Farneback and TV-L1 in the same run (the reference ratio), and what one GPU should
give, estimated from these per-pair costs and ptlflow's published GPU figures.

Random weights (seeded) through the real --ckpt path: the speed of a trained model, meaningless
flow. Torch threads are left as ``flowstore extract`` leaves them (torch's default: one per
core); OpenCV runs on one thread, as each extract worker sets it. Frames: consecutive frames of
../shared/data/videos/test.mp4. One untimed warm-up pair per model.

    python benchmarks/learned_cpu.py [--pairs 4] [--size 340x256] [--models neuflow2,gmflow]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import clip_frames  # noqa: E402
from flowstore.flow import build_flow  # noqa: E402
from flowstore.flow.catalog import LEARNED_MODELS, PTLFLOW_PUBLISHED  # noqa: E402
from flowstore.flow.learned import save_random_checkpoint  # noqa: E402

#: UCF101's flow pairs (13,320 videos, ~186 frames each), the bulk-extraction yardstick
UCF101_PAIRS = 2.5e6
#: ptlflow's published figures are at 500x1000 (see flowstore.flow.catalog.PTLFLOW_TABLE)
PUBLISHED_PIXELS = 500 * 1000


def pairs_per_second(est, prepared, pairs: int, batch: int) -> float:
    """Pairs/s over ``pairs`` timed pairs in chunks of ``batch`` (one untimed warm-up pair first)."""
    est.compute(prepared[:1], prepared[1:2])
    start = time.perf_counter()
    done = 0
    while done < pairs:
        n = min(batch, pairs - done)
        est.compute(prepared[done:done + n], prepared[done + 1:done + n + 1])
        done += n
    return pairs / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=4, help="timed pairs at batch 1 (batch 8 times 8)")
    ap.add_argument("--size", default="340x256", help="WIDTHxHEIGHT")
    ap.add_argument("--models", default=",".join(LEARNED_MODELS), help="comma-separated short names")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))

    import cv2
    import torch

    cv2.setNumThreads(1)
    frames = clip_frames(max(args.pairs, 8) + 2, width, height)
    load_start = os.getloadavg()[0]
    farneback = build_flow("farneback", engine="opencv")
    farneback_frames = [farneback.prepare(f) for f in frames]

    def farneback_rate() -> float:
        """OpenCV Farneback measured right before each row: the machine's load changes meanwhile."""
        return pairs_per_second(farneback, farneback_frames, 8, 1)

    tvl1 = build_flow("tvl1", engine="opencv")
    rows = [("OpenCV Farneback (1 thread)", 1, farneback_rate(), None)]  # (label, batch, pairs/s, Farneback then)
    rows.append(("OpenCV TV-L1 (1 thread)", 1, pairs_per_second(tvl1, [tvl1.prepare(f) for f in frames], 2, 1),
                 farneback_rate()))
    tvl1_per_farneback = rows[1][2] / rows[1][3]
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model in args.models.split(","):
            ckpt = save_random_checkpoint(model, Path(tmp) / f"{model}-random.ckpt", seed=0)
            for batch, pairs in ((1, args.pairs), (8, 8)):
                est = build_flow(model, ckpt=ckpt, batch_size=batch)
                reference = farneback_rate()
                rows.append((model, batch, pairs_per_second(est, [est.prepare(f) for f in frames], pairs, batch), reference))
                print(f"# {model} batch {batch}: {rows[-1][2]:.3f} pairs/s (Farneback {reference:.1f})",
                      file=sys.stderr, flush=True)

    print(f"{width}x{height}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {load_start:.1f} at start / {os.getloadavg()[0]:.1f} at end, {os.cpu_count()} CPUs\n")
    print("| model | batch | pairs/s | s/pair | vs OpenCV Farneback (measured just before) | vs OpenCV TV-L1 |")
    print("|---|---|---|---|---|---|")
    for label, batch, rate, reference in rows:
        reference = reference or rate
        print(f"| {label} | {batch} | {rate:.2f} | {1 / rate:.3f} | {rate / reference:.3f} | "
              f"{rate / reference / tvl1_per_farneback:.1f} |")

    scale = width * height / PUBLISHED_PIXELS
    print(f"\nOne GPU, estimated: ptlflow's published RTX 3090 ms/pair (fp16, batch 1, 500x1000) scaled by "
          f"the pixel ratio {scale:.3f} to {width}x{height}; UCF101 = {UCF101_PAIRS:.1e} pairs\n")
    print("| model | published ms/pair | est. ms/pair here | est. pairs/s | UCF101 hours | CPU b1 s/pair | CPU/GPU ratio |")
    print("|---|---|---|---|---|---|---|")
    cpu = {label: rate for label, batch, rate, _ in rows if batch == 1}
    for model in args.models.split(","):
        if model not in PTLFLOW_PUBLISHED:
            print(f"| {model} | not published | | | | {1 / cpu[model]:.2f} | |")
            continue
        ms = PTLFLOW_PUBLISHED[model][0] * scale
        rate = 1000 / ms
        print(f"| {model} | {PTLFLOW_PUBLISHED[model][0]} | {ms:.1f} | {rate:.0f} | {UCF101_PAIRS / rate / 3600:.1f} | "
              f"{1 / cpu[model]:.2f} | {1000 / cpu[model] / ms:.0f}x |")


if __name__ == "__main__":
    main()
