"""Peak memory of `flowstore extract` on a short and a long video: streaming keeps it flat.

Builds two videos at 340x256 by looping a shared clip (10 s and --long-seconds, 30 fps),
extracts each in a fresh process (--workers 1, Farneback) and prints the peak RSS of that
process (ru_maxrss) side by side.

    python benchmarks/memory.py [--long-seconds 300]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO.parent / "shared" / "data" / "videos" / "test.mp4"


def make_video(path: Path, seconds: float, fps: int = 30) -> int:
    cap = cv2.VideoCapture(str(CLIP))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, frames[0].shape[1::-1])
    n = int(seconds * fps)
    for i in range(n):
        k = i % (2 * len(frames) - 2)  # ping-pong, so there is no jump at the loop point
        writer.write(frames[k if k < len(frames) else 2 * len(frames) - 2 - k])
    writer.release()
    return n


def peak_rss_of_extract(video: Path, out: Path) -> tuple[float, float, int]:
    code = (
        "import resource, sys, time; from flowstore.cli.main import cli; t=time.perf_counter();\n"
        "try: cli(sys.argv[1:])\n"
        "except SystemExit as e: pass\n"
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()-t)"
    )
    args = ["extract", str(video), "--out", str(out), "--method", "farneback", "--size", "340x256",
            "--workers", "1", "--no-progress"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    line = [l for l in done.stdout.splitlines() if l.startswith("PEAK")][-1]
    _, kb, seconds = line.split()
    pairs = int([l for l in done.stdout.splitlines() if l.startswith("pairs:")][0].split()[1])
    return int(kb) / 1024, float(seconds), pairs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long-seconds", type=float, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for name, seconds in (("short", 10), ("long", args.long_seconds)):
            video = tmp / f"{name}.mp4"
            frames = make_video(video, seconds)
            mb, elapsed, pairs = peak_rss_of_extract(video, tmp / f"store_{name}")
            rows.append((name, seconds, frames, pairs, mb, elapsed))
            print(f"{name:5s} {seconds:6.0f} s video, {frames} frames: peak RSS {mb:.0f} MB, "
                  f"{pairs} pairs in {elapsed:.0f} s", flush=True)
        print(f"long/short peak RSS ratio: {rows[1][4] / rows[0][4]:.3f} for {rows[1][2] / rows[0][2]:.0f}x the frames")


if __name__ == "__main__":
    main()
