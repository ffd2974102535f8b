"""Stored vs online flow on the demo data: loader clips/s and a small head's accuracy on each.

    PYTHONPATH=. python benchmarks/online_flow.py [--out /tmp/online_flow] [--device cpu]

Builds a small demo dataset (flowstore.synthetic, the ``make demo`` generator: 6 motion classes,
12 frames at 128x96, 20 clips per class: 90 train / 30 test) and a store with the project's own extraction (torch Farneback, the
engine online flow then uses too, JPEG frames and flow), then, side by side in one run:

* clips/s of the real loader (2 workers, stacks of L = 10) for stored flow and for online flow
  (torch Farneback on ``--device``), and for online torch TV-L1 (default parameters) on 4
  clips (against the same stored figure);
* the test accuracy of a linear head (logistic regression on the flow stack average-pooled to
  a 4x3 grid, centre stack of every video) trained on stored flow and on online flow, and the
  mean |online - stored| of the features.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
import torch
import torch.nn.functional as F

from flowstore.bench.device_loader import bench_online_flow, time_loader
from flowstore.data import StoreClipDataset, make_loader, read_demo_labels
from flowstore.decode import FrameResize
from flowstore.extract import ExtractConfig, plan_jobs, run_extract
from flowstore.synthetic import make_demo_dataset

L = 10


def build(out: Path) -> tuple[Path, Path]:
    data = make_demo_dataset(out / "data", clips_per_class=20, num_frames=12, size=(128, 96), seed=0, overwrite=True)
    store = out / "store"
    if not (store / "manifest.json").exists():
        cfg = ExtractConfig(out=str(store), method="farneback", engine="torch", resize=FrameResize(), workers=2)
        summary = run_extract(plan_jobs([data.videos_dir]), cfg, show_progress=False)
        assert summary.ok and not summary.failures, summary.failures
    return store, data.labels_path


def features(store, labels, *, flow: str, device: str, **online) -> tuple[np.ndarray, np.ndarray, float]:
    ds = StoreClipDataset(str(store), labels, sampling="stack", length=L, train=False, flow=flow,
                          **({"flow_device": device, **online} if flow == "online" else {}))
    start = time.perf_counter()
    feats, ys = [], []
    for batch in make_loader(ds, batch_size=8, num_workers=2, shuffle=False):
        x = batch["flow"].to(device).flatten(0, 1)  # (B, 2L, H, W) pixels
        feats.append(F.adaptive_avg_pool2d(x, (3, 4)).flatten(1).cpu())
        ys.append(batch["label"])
    return torch.cat(feats).numpy(), torch.cat(ys).numpy(), time.perf_counter() - start


def linear_head_accuracy(xtr, ytr, xte, yte, classes: int, seed: int = 0) -> float:
    torch.manual_seed(seed)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xte = torch.from_numpy((xtr - mu) / sd), torch.from_numpy((xte - mu) / sd)
    head = torch.nn.Linear(xtr.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(head(xtr), torch.from_numpy(ytr)).backward()
        opt.step()
    return float((head(xte).argmax(1).numpy() == yte).mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/online_flow"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    store, labels_path = build(args.out)
    report = {"device": args.device}
    report["farneback"] = bench_online_flow(str(store), device=args.device, engine="torch", method="farneback",
                                            workers=2, batch_size=4, length=L, batches=6, rounds=args.rounds)
    # TV-L1 on the CPU is ~50x slower than Farneback: 4 clips, online only, against the stored
    # figure above (same run)
    tvl1 = StoreClipDataset(str(store), sampling="stack", length=L, flow="online", method="tvl1", engine="torch",
                            flow_device=args.device)
    online = time_loader(tvl1, device=args.device, batch_size=2, workers=2, batches=2)
    stored = report["farneback"]["clips_per_s"]["stored"]
    report["tvl1"] = {"clips_per_s": {"stored": stored, "online": online}, "online_vs_stored": online / stored}
    train, test = (read_demo_labels(labels_path, split=s) for s in ("train", "test"))
    acc = {}
    for name, kw in (("stored", {"flow": "stored"}), ("online", {"flow": "online", "engine": "torch"})):
        xtr, ytr, ttr = features(store, train, device=args.device, **kw)
        xte, yte, tte = features(store, test, device=args.device, **kw)
        acc[name] = {"accuracy": linear_head_accuracy(xtr, ytr, xte, yte, int(ytr.max()) + 1),
                     "feature_seconds": ttr + tte, "train": len(ytr), "test": len(yte), "x": (xtr, xte)}
    diff = statistics.fmean(float(np.abs(a - b).mean()) for a, b in zip(acc["stored"].pop("x"), acc["online"].pop("x")))
    report["accuracy"] = {**acc, "mean_abs_feature_diff_px": diff}
    print(json.dumps(report, indent=1))
    for m in ("farneback", "tvl1"):
        r = report[m]
        print(f"{m:9s} stored {r['clips_per_s']['stored']:7.1f} clips/s  online {r['clips_per_s']['online']:7.2f} "
              f"clips/s  online/stored {r['online_vs_stored']:.3f}")
    print(f"linear head test accuracy: stored {acc['stored']['accuracy']:.3f}, online {acc['online']['accuracy']:.3f} "
          f"({acc['stored']['train']} train / {acc['stored']['test']} test clips); mean |feature diff| {diff:.4f} px")


if __name__ == "__main__":
    main()
