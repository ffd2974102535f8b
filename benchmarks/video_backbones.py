"""Clips/s of frozen video-backbone feature extraction on this machine, and GFLOPs per clip.

    python benchmarks/video_backbones.py                       # r2plus1d_18 and x3d_xs, batch 1 and 8
    python benchmarks/video_backbones.py --backbone x3d_m --batch 1 --batch 16 --device cuda

Each backbone is built as `flowstore clip-features` builds it (frozen, eval mode, random
weights) at its published clip shape, and run under torch.inference_mode on random clips of
that shape: ``--warmup`` forward passes, then forward passes for at least ``--seconds``
seconds (and at least ``--min-reps``). Printed per (backbone, batch): clips/s, GFLOPs per clip
(torch.utils.flop_counter, 2 FLOPs per multiply-add; papers count half) and the achieved
GFLOP/s, from which a GPU's clips/s can be estimated on paper: its sustained FLOP/s divided
by the FLOPs per clip. Decoding is not included (the loader's workers decode ahead of the
device; see benchmarks/loader.py for their rate).
"""
from __future__ import annotations

import argparse
import time

import common  # noqa: F401  (puts the repository on sys.path)
import torch


def measure(name: str, batch: int, *, device: str, warmup: int, seconds: float, min_reps: int) -> dict:
    from flowstore.features.video_backbones import build_video_backbone

    model, info = build_video_backbone(name, device=device)
    x = torch.randn(batch, *info["clip_shape"], device=device)
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        reps, t0 = 0, time.perf_counter()
        while reps < min_reps or time.perf_counter() - t0 < seconds:
            model(x)
            reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    rate = reps * batch / dt
    return {"backbone": name, "batch": batch, "clip": "x".join(map(str, info["clip_shape"])),
            "clips_per_s": rate, "gflops_per_clip": info["gflops_per_clip"],
            "gflops_per_s": rate * info["gflops_per_clip"], "params_m": info["parameters"] / 1e6, "reps": reps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", action="append", help="repeatable (default: r2plus1d_18, x3d_xs)")
    ap.add_argument("--batch", action="append", type=int, help="repeatable (default: 1, 8)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--min-reps", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [measure(b, n, device=args.device, warmup=args.warmup, seconds=args.seconds, min_reps=args.min_reps)
            for b in (args.backbone or ["r2plus1d_18", "x3d_xs"]) for n in (args.batch or [1, 8])]
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| backbone | clip (C x T x H x W) | params (M) | GFLOPs / clip | batch | clips/s | GFLOP/s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['clip']} | {r['params_m']:.2f} | {r['gflops_per_clip']:.2f} | {r['batch']} | "
              f"{r['clips_per_s']:.2f} | {r['gflops_per_s']:.1f} |")


if __name__ == "__main__":
    main()
