"""The Ray executor against the local one, side by side in one run, and the driver's commit capacity.

1. Throughput: ``--executor ray`` with 2 one-CPU actors on a local Ray (127.0.0.1, started here,
   its start-up timed apart) against ``--executor local --workers 2`` on the shared clips:
   TV-L1 at 340x256 (clips cut to their first ``--tvl1-frames`` frames) and Farneback at 340x256
   (whole clips), in the order local, ray, ray, local. Ratio ray / local (goal >= 0.9); the Ray
   runs include starting their actors.
2. Commit capacity: many tiny videos (Farneback at 32x24, fast workers), videos committed per
   second, and the driver process's CPU seconds per committed video (commits, result handling,
   Ray's client threads): its inverse is how many videos per second one driver can commit.

    python benchmarks/cluster.py [--tvl1-frames 8] [--tiny-videos 200]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract import SHARED, SIZE, prepare_inputs  # noqa: E402  (benchmarks/extract.py)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flowstore.decode import FrameResize  # noqa: E402
from flowstore.extract import ExtractConfig, plan_jobs, run_extract  # noqa: E402


def start_ray(tmp: Path) -> float:
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # 127.0.0.1 stays 127.0.0.1
    os.environ["RAY_TMPDIR"] = str(tmp)
    start = time.perf_counter()
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")  # as a local Ray started by flowstore (docs/cluster.md)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=80 << 20,
             _temp_dir=str(tmp / "ray"))
    return time.perf_counter() - start


def run(folder: Path, out: Path, method: str, executor: str, size=SIZE) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(out=str(out), method=method, resize=FrameResize(size=size), workers=2)
    cpu, start = time.process_time(), time.perf_counter()
    summary = run_extract(plan_jobs([folder]), cfg, show_progress=False, executor=executor)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    assert not summary.failures, summary.failures
    return {"pairs": summary.pairs, "videos": summary.ok, "wall": wall, "driver_cpu": cpu}


def tiny_clips(folder: Path, count: int, frames: int = 6) -> Path:
    folder.mkdir()
    cap = cv2.VideoCapture(str(SHARED / "test.mp4"))
    images = [cv2.resize(cap.read()[1], (32, 24)) for _ in range(frames)]
    cap.release()
    for i in range(count):
        writer = cv2.VideoWriter(str(folder / f"tiny_{i:05d}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
        for image in images:
            writer.write(image)
        writer.release()
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tvl1-frames", type=int, default=8)
    ap.add_argument("--tiny-videos", type=int, default=200)
    ap.add_argument("--methods", default="tvl1,farneback", help="which throughput comparisons to run")
    args = ap.parse_args()
    print(f"# cluster benchmark: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="fsbench", dir="/tmp") as tmp:
        tmp = Path(tmp)
        startup = start_ray(tmp)
        print(f"ray start-up (ray.init of a local 2-CPU Ray): {startup:.1f} s", flush=True)
        (tmp / "tvl1").mkdir()
        (tmp / "farneback").mkdir()
        cases = [("tvl1", prepare_inputs(tmp / "tvl1", args.tvl1_frames)),
                 ("farneback", prepare_inputs(tmp / "farneback", None))]
        for method, folder in [c for c in cases if c[0] in args.methods.split(",")]:
            walls = {"local": 0.0, "ray": 0.0}
            for executor in ("local", "ray", "ray", "local"):  # ABBA: the load drifts on shared machines
                r = run(folder, tmp / f"store-{executor}", method, executor)
                walls[executor] += r["wall"]
                pairs = r["pairs"]
            lp, rp = 2 * pairs / walls["local"], 2 * pairs / walls["ray"]
            print(f"{method} {SIZE[0]}x{SIZE[1]}: {pairs} pairs, 2 runs each | local 2 workers {lp:.2f} pairs/s | "
                  f"ray 2 actors {rp:.2f} pairs/s | ray/local {rp / lp:.2f} (goal >= 0.9)", flush=True)
        folder = tiny_clips(tmp / "tiny", args.tiny_videos)
        for executor in ("local", "ray"):
            r = run(folder, tmp / f"tiny-{executor}", "farneback", executor, size=(32, 24))
            print(f"commit capacity, {executor}: {r['videos']} tiny videos in {r['wall']:.1f} s = "
                  f"{r['videos'] / r['wall']:.1f} videos/s committed; driver CPU {1000 * r['driver_cpu'] / r['videos']:.1f} ms "
                  f"per video -> one driver commits up to ~{r['videos'] / r['driver_cpu']:.0f} videos/s", flush=True)
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
