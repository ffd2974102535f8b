"""flowstore extract against a bare loop of the same OpenCV call, side by side in one run.

For each round, on the same clips at 340x256 (the shared real clips by default):

* bare     decode with cv2.VideoCapture, resize, grayscale, cv2 flow call, nothing stored;
           OpenCV on one thread, as in each flowstore worker
* w1       flowstore extract --workers 1 (decode, flow, quantize, JPEG/PNG encode, LMDB write)
* w2       flowstore extract --workers 2

and prints pairs/s and the ratios w1/bare (goal >= 0.95) and w2/w1 (goal >= 1.8) per round,
then bytes per pair for each flow codec, measured by extracting the first clip with each.

    python benchmarks/extract.py [--method farneback|tvl1] [--rounds 2] [--max-frames N]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowstore.decode import FrameResize  # noqa: E402
from flowstore.extract import ExtractConfig, plan_jobs, run_extract  # noqa: E402
from flowstore.flow.opencv import FARNEBACK_DEFAULTS, TVL1_DEFAULTS  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"
CLIPS = ["test.mp4", "skateboarding.mp4", "clean_and_jerk.mp4", "demo.mp4", "v_GGSY1Qvo990.mp4",
         "v_Basketball_g01_c01.avi", "test.avi", "part_0.mp4"]
SIZE = (340, 256)


def prepare_inputs(workdir: Path, max_frames: int | None) -> Path:
    """Unique names for the clips (test.mp4 and test.avi would share an id); optionally cut to
    the first frames (re-encoded with mp4v, so bare loop and flowstore decode the same files)."""
    folder = workdir / "clips"
    folder.mkdir()
    for name in CLIPS:
        src = SHARED / name
        dst = folder / f"{src.stem}_{src.suffix[1:]}{src.suffix if max_frames is None else '.avi'}"
        if max_frames is None:
            dst.symlink_to(src)
            continue
        cap = cv2.VideoCapture(str(src))
        writer = None
        for _ in range(max_frames):
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"MJPG"), 25, frame.shape[1::-1])
            writer.write(frame)
        cap.release()
        writer.release()
    return folder


def bare_loop(folder: Path, method: str) -> tuple[int, float]:
    """One core, like one flowstore worker: OpenCV single-threaded (the brief's "per core")."""
    cv2.setNumThreads(1)
    if method == "farneback":
        p = FARNEBACK_DEFAULTS

        def flow(a, b):
            return cv2.calcOpticalFlowFarneback(a, b, None, p["pyr_scale"], p["levels"], p["winsize"],
                                                p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])
    else:
        tvl1 = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1_DEFAULTS)

        def flow(a, b):
            return tvl1.calc(a, b, None)

    pairs, start = 0, time.perf_counter()
    for clip in sorted(folder.iterdir()):
        cap = cv2.VideoCapture(str(clip))
        prev = None
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            gray = cv2.cvtColor(cv2.resize(bgr, SIZE, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
            if prev is not None:
                flow(prev, gray)
                pairs += 1
            prev = gray
        cap.release()
    return pairs, time.perf_counter() - start


def flowstore_run(folder: Path, out: Path, method: str, workers: int, codec: str = "jpeg") -> tuple[int, float, int]:
    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(out=str(out), method=method, resize=FrameResize(size=SIZE), workers=workers, flow_codec=codec)
    start = time.perf_counter()
    summary = run_extract(plan_jobs([folder]), cfg, show_progress=False)
    elapsed = time.perf_counter() - start
    assert not summary.failures, summary.failures
    flow_bytes = summary.bytes
    return summary.pairs, elapsed, flow_bytes


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="farneback", choices=["farneback", "tvl1"])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=None, help="cut each clip to its first N frames (TV-L1 is slow)")
    ap.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = ap.parse_args()
    print(f"# extract benchmark: {args.method} at {SIZE[0]}x{SIZE[1]}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder = prepare_inputs(tmp, args.max_frames)
        for r in range(args.rounds):
            n_bare, t_bare = bare_loop(folder, args.method)
            n1, t1, _ = flowstore_run(folder, tmp / "w1", args.method, 1)
            n2, t2, _ = flowstore_run(folder, tmp / "w2", args.method, 2)
            assert n_bare == n1 == n2, (n_bare, n1, n2)
            row = {"round": r + 1, "pairs": n1, "bare_pps": n_bare / t_bare, "w1_pps": n1 / t1, "w2_pps": n2 / t2}
            row["w1_over_bare"] = row["w1_pps"] / row["bare_pps"]
            row["w2_over_w1"] = row["w2_pps"] / row["w1_pps"]
            rows.append(row)
            print(f"round {r + 1}: {n1} pairs | bare {row['bare_pps']:.1f} pairs/s | w1 {row['w1_pps']:.1f} | "
                  f"w2 {row['w2_pps']:.1f} | w1/bare {row['w1_over_bare']:.3f} (goal >= 0.95) | "
                  f"w2/w1 {row['w2_over_w1']:.2f} (goal >= 1.8)", flush=True)
        print(f"median: w1/bare {statistics.median(r['w1_over_bare'] for r in rows):.3f}, "
              f"w2/w1 {statistics.median(r['w2_over_w1'] for r in rows):.2f}")
        # bytes per pair per codec (flow x+y plus the RGB JPEG frame), on the first clip
        one = tmp / "one"
        one.mkdir()
        first = sorted(folder.iterdir())[0]
        (one / first.name).symlink_to(first.resolve())
        codec_rows = {}
        for codec in ("jpeg", "png", "raw"):
            n, _, total = flowstore_run(one, tmp / f"c_{codec}", args.method, 1, codec)
            codec_rows[codec] = total / n
        print("bytes per pair incl. RGB frame (" + first.name + "): "
              + ", ".join(f"{c} {b:,.0f}" for c, b in codec_rows.items()))
    if args.json:
        print(json.dumps({"rounds": rows, "bytes_per_pair": codec_rows}, indent=1))


if __name__ == "__main__":
    main()
