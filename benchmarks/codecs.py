"""Bytes per flow pair and end-point error added by each flow codec.

Two tables, measured in one run:
1. On ../shared/data/flow_gt: quantize the ground truth (bound scheme), encode each component,
   decode, dequantize, and compare with the ground truth flow clipped to ±bound (the EPE the
   codec adds on top of clipping) and unclipped.
2. On real flow: OpenCV TV-L1 (or --method) of pairs from the shared clips at 340x256, the
   bytes per pair of each codec (x + y components) and the RGB JPEG frame.

    python benchmarks/codecs.py [--bound 20] [--pairs 20] [--method tvl1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowstore.codec import decode_gray, encode_gray, encode_rgb  # noqa: E402
from flowstore.decode import FrameResize, iter_frames  # noqa: E402
from flowstore.flo import read_flo, valid_mask  # noqa: E402
from flowstore.flow import build_flow  # noqa: E402
from flowstore.quantize import QuantSpec, dequantize, quantize  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CODECS = [("raw", None), ("png", 1), ("png", 9), ("jpeg", 100), ("jpeg", 95), ("jpeg", 90), ("jpeg", 75)]


def roundtrip(flow, spec, codec, quality):
    q, rng = quantize(flow, spec)
    h, w = q.shape[:2]
    bx = encode_gray(np.ascontiguousarray(q[..., 0]), codec, quality)
    by = encode_gray(np.ascontiguousarray(q[..., 1]), codec, quality)
    back = np.dstack([decode_gray(bx, codec, (h, w)), decode_gray(by, codec, (h, w))])
    return dequantize(back, spec, rng), len(bx) + len(by)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bound", type=float, default=20.0)
    ap.add_argument("--pairs", type=int, default=20, help="real pairs per clip for table 2")
    ap.add_argument("--method", default="tvl1")
    args = ap.parse_args()
    spec = QuantSpec("bound", args.bound)

    print(f"## Codec error on flow_gt (bound {args.bound:g} px): mean EPE added vs. the GT clipped to ±bound (quantization + codec; unknown pixels masked)\n")
    print("| codec | " + " | ".join(p.name for p in sorted((SHARED / 'flow_gt').iterdir())) + " | mean added EPE |")
    print("|---|" + "---|" * (len(list((SHARED / 'flow_gt').iterdir())) + 1))
    for codec, quality in CODECS:
        cells, added = [], []
        for pair in sorted((SHARED / "flow_gt").iterdir()):
            gt = read_flo(pair / "flow.flo")
            ok = valid_mask(gt)
            gt = np.where(ok[..., None], gt, 0).astype(np.float32)
            rec, _ = roundtrip(gt, spec, codec, quality)
            clipped = np.clip(gt, -args.bound, args.bound)
            epe = np.sqrt(((rec - clipped) ** 2).sum(-1))[ok].mean()
            added.append(epe)
            cells.append(f"{epe:.3f}")
        print(f"| {codec}{'' if quality is None else f' {quality}'} | " + " | ".join(cells) + f" | {np.mean(added):.3f} |")

    est = build_flow(args.method)
    clips = ["test.mp4", "skateboarding.mp4", "v_Basketball_g01_c01.avi"]
    sizes = {f"{c}{'' if q is None else f' {q}'}": [] for c, q in CODECS}
    rgb_sizes, epes = [], {k: [] for k in sizes}
    for clip in clips:
        frames = list(iter_frames(SHARED / "videos" / clip, resize=FrameResize(size=(340, 256))))[: args.pairs + 1]
        prepared = [est.prepare(f) for f in frames]
        flows = est.compute(prepared[:-1], prepared[1:])
        rgb_sizes += [len(encode_rgb(f, "jpeg", 95)) for f in frames[:-1]]
        for flow in flows:
            clipped = np.clip(flow, -args.bound, args.bound)
            for codec, quality in CODECS:
                key = f"{codec}{'' if quality is None else f' {quality}'}"
                rec, nbytes = roundtrip(flow, spec, codec, quality)
                sizes[key].append(nbytes)
                epes[key].append(np.sqrt(((rec - clipped) ** 2).sum(-1)).mean())
    print(f"\n## Bytes per pair on real {args.method} flow at 340x256 ({len(rgb_sizes)} pairs from {', '.join(clips)})\n")
    print("| codec | bytes per pair (x+y) | vs. raw | added EPE (px) |")
    print("|---|---|---|---|")
    raw = np.mean(sizes["raw"])
    for key in sizes:
        print(f"| {key} | {np.mean(sizes[key]):,.0f} | {np.mean(sizes[key]) / raw:.3f} | {np.mean(epes[key]):.4f} |")
    print(f"\nRGB frame as JPEG q95: {np.mean(rgb_sizes):,.0f} bytes per frame")


if __name__ == "__main__":
    main()
