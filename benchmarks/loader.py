"""Loader benchmark on a store made from the shared clips: a thin wrapper around
``flowstore bench-loader`` that first builds the store if it is missing.

    python benchmarks/loader.py [--store DIR] [--clips all|four] [--workers 2] [--rounds 9]

``--clips all`` (default): every shared clip whose id does not collide (test.avi is left out:
its id equals test.mp4's), GIFs included; 9 videos, 1,857 flows, 180 stacks per epoch.
``--clips four``: part_0.mp4, test.avi, v_Basketball_g01_c01.avi, clean_and_jerk.mp4 (633
flows, 62 stacks: passes are too short to time well). Both: Farneback, 340x256, LMDB.
Prints the report, then the JSON object of ``bench-loader --json``; ``--details`` keeps everything.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowstore.bench.loader import JSON_KEYS, bench_loader, format_report  # noqa: E402
from flowstore.decode import FrameResize  # noqa: E402
from flowstore.extract import ExtractConfig, plan_jobs, run_extract  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIP_SETS = {
    "four": ["part_0.mp4", "test.avi", "v_Basketball_g01_c01.avi", "clean_and_jerk.mp4"],
    "all": ["clean_and_jerk.mp4", "demo.mp4", "part_0.mp4", "skateboarding.mp4", "test.mp4",
            "v_Basketball_g01_c01.avi", "v_CricketShot_g04_c01_flow.gif", "v_CricketShot_g04_c01_rgb.gif",
            "v_GGSY1Qvo990.mp4"],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="store to read (built here if missing)")
    ap.add_argument("--clips", choices=sorted(CLIP_SETS), default="all", help="which shared clips (see above)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--rawframes", default=None, help="keep/reuse the rawframes tree here")
    ap.add_argument("--details", default=None, help="write the full JSON record here")
    args = ap.parse_args()
    clips = CLIP_SETS[args.clips]
    store = Path(args.store or f"/tmp/loader_store_{args.clips}")
    if not (store / "manifest.json").exists():
        cfg = ExtractConfig(out=str(store), method="farneback", resize=FrameResize(size=(340, 256)), workers=2)
        run_extract(plan_jobs([SHARED / c for c in clips]), cfg, show_progress=False)
    result = bench_loader(store, workers=args.workers, rounds=args.rounds, epochs=args.epochs,
                          rawframes_dir=args.rawframes, keep_rawframes=args.rawframes is not None,
                          log=lambda m: print(m, file=sys.stderr))
    if args.details:
        Path(args.details).write_text(json.dumps(result, indent=1) + "\n")
    print(format_report(result))
    print(json.dumps({k: result[k] for k in JSON_KEYS}))


if __name__ == "__main__":
    main()
