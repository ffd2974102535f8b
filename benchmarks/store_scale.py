"""The store at Kinetics scale (issue 16): commit cost, open_store time and open-store memory at
5k, 50k and 650k synthetic video entries, format 1.2 (catalog) beside the 1.1 layout.

Bulk path for the base store (650k fsync'd commits would take hours): the entries are appended to
commits.jsonl in large writes and one StoreWriter open builds the catalog from them (the
migration / rebuild path every writer takes on a store without a catalog). Then real
``StoreWriter.commit()`` calls are timed over the next COMMITS commits (checkpoints and
compactions included). open_store is timed, and its RSS delta measured, in a fresh subprocess.
The 1.1 numbers: the same base store with manifest.json holding every entry and no catalog
(the full read), and commits through a writer that rewrites the whole manifest every
CHECKPOINT_EVERY commits as 1.1 did.

    python benchmarks/store_scale.py [--sizes 5000,50000,650000] [--commits 2000] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowstore.io import atomic_write_text  # noqa: E402
from flowstore.quantize import QuantSpec  # noqa: E402
from flowstore.store.catalog import level_for, open_catalog, write_segment  # noqa: E402
from flowstore.store.format import CATALOG_DIR, COMMIT_LOG, MANIFEST, dumps_line, shard_name  # noqa: E402
from flowstore.store.manifest import append_lines, load_manifest  # noqa: E402
from flowstore.store.writer import StoreWriter, now  # noqa: E402

SETTINGS = {"backend": "lmdb", "frames": {"codec": "jpeg", "quality": 95, "color": "RGB"}, "resize": None,
            "decoder": "opencv", "stride": 1,
            "flow": {"method": "tvl1", "codec": "jpeg", "quality": 95, "components": ["flow_x", "flow_y"]},
            "quantization": QuantSpec("bound", 20.0).to_manifest()}


def entry(n: int) -> dict:
    """A Kinetics-like entry (~400 bytes of JSON), in one of ~4,000 shards at 650k."""
    return {"id": f"kinetics700/train/label_{n % 700:03d}/{n:08d}_000010_000020", "source": f"/data/k700/{n:08d}.mp4",
            "source_size": 1_000_000 + n, "source_sha256": f"{n:064x}", "num_frames": 300, "num_flows": 299,
            "width": 340, "height": 256, "shard": shard_name("lmdb", n // 160), "bytes": 9_000_000 + n,
            "shard_size": 1 << 30, "records_crc32": n & 0xFFFFFFFF}


class Writer11(StoreWriter):
    """The 1.1 checkpoint: every committed entry rewritten into manifest.json, the log emptied."""

    def __init__(self, root, settings):
        super().__init__(root, settings)
        self._all = {e["id"]: e for e in load_manifest(root)["videos"]}

    def commit(self, e):
        e = {**e, "committed_at": now()}
        append_lines(self.root / COMMIT_LOG, [dumps_line(e)])
        self._all[e["id"]] = e
        self._since = getattr(self, "_since", 0) + 1
        if self._since >= self.CHECKPOINT_EVERY:
            manifest = {**self.header, "updated_at": now(), "videos": [self._all[k] for k in sorted(self._all)]}
            atomic_write_text(self.root / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
            atomic_write_text(self.root / COMMIT_LOG, "")
            self._since = 0


def build(root: Path, size: int) -> float:
    """The base store of ``size`` entries by the bulk path; seconds."""
    t = time.perf_counter()
    StoreWriter(root, SETTINGS).close()
    batch = []
    for n in range(size):
        batch.append(dumps_line({**entry(n), "committed_at": "2026-12-01T00:00:00+00:00"}))
        if len(batch) == 50_000:
            append_lines(root / COMMIT_LOG, batch)
            batch = []
    append_lines(root / COMMIT_LOG, batch)
    shutil.rmtree(root / CATALOG_DIR)
    StoreWriter(root, SETTINGS).close()  # no catalog: the rebuild indexes every entry once
    return time.perf_counter() - t


def as_1_1(root: Path, dst: Path) -> None:
    """``dst``: the store as a 1.1 writer would have left it (all entries in manifest.json)."""
    dst.mkdir(parents=True)
    (dst / "shards").mkdir()
    manifest = load_manifest(root)
    manifest["format_version"] = "1.1"
    (dst / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    (dst / COMMIT_LOG).write_text("")


def time_commits(root: Path, start: int, count: int, cls=StoreWriter) -> tuple[float, float]:
    """``(wall ms, CPU ms)`` per commit: wall includes waiting for each commit's fsync (the disk's
    share, noisy on a shared machine); CPU is the store's own work."""
    writer = cls(root, SETTINGS)
    t, c = time.perf_counter(), time.process_time()
    for n in range(start, start + count):
        writer.commit(entry(n))
    elapsed, cpu = time.perf_counter() - t, time.process_time() - c
    if cls is StoreWriter:
        writer.checkpoint()
        writer.close()
    return elapsed * 1000 / count, cpu * 1000 / count


def time_merge(root: Path) -> float:
    """Microseconds per entry of a compaction: every segment merged into one (k-way merge of
    cursors, put(append=True), fsync), the work a checkpoint's compaction does per entry."""
    opened = open_catalog(root)
    catalog, _ = opened
    out = root / CATALOG_DIR / "bench-merge.lmdb"
    t = time.perf_counter()
    count = write_segment(out, ((k, v) for k, v, _ in catalog.items()))
    elapsed = time.perf_counter() - t
    catalog.close()
    out.unlink()
    return elapsed * 1e6 / count


OPEN_PROBE = r"""
import os, sys, time, gc
sys.path.insert(0, sys.argv[2])
import flowstore, flowstore.store.reader, flowstore.store.catalog
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
gc.collect(); before = rss()
t = time.perf_counter()
r = flowstore.open_store(sys.argv[1])
n = len(r.videos); e = r.entry(r.videos[0] if not hasattr(r.videos, "_reader") else next(iter(r.videos)))
elapsed = time.perf_counter() - t
print(elapsed, rss() - before, n)
"""


def time_open(root: Path) -> tuple[float, float, int]:
    done = subprocess.run([sys.executable, "-c", OPEN_PROBE, str(root), str(Path(__file__).resolve().parents[1])],
                          capture_output=True, text=True, check=True)
    s, mem, n = done.stdout.split()
    return float(s), int(mem) / 2**20, int(n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="5000,50000,650000")
    ap.add_argument("--commits", type=int, default=2000)
    ap.add_argument("--old-up-to", type=int, default=50_000, help="measure the 1.1 layout up to this size")
    ap.add_argument("--dir", default="/tmp")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    need = max(sizes) * 450 * 3
    free = shutil.disk_usage(args.dir).free
    if free < need:
        sys.exit(f"need ~{need >> 20} MiB free in {args.dir}, have {free >> 20}")
    rows = []
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="flowstore-scale-", dir=args.dir))
        try:
            root = work / "store"
            built = build(root, size)
            os.sync()  # the base store's dirty pages must not be flushed during the timed commits
            open_s, open_mb, n = time_open(root)
            assert n == size, (n, size)
            commit_ms, commit_cpu_ms = time_commits(root, size, args.commits)
            merge_us = time_merge(root)
            levels = level_for(size, StoreWriter.CHECKPOINT_EVERY)
            row = {"size": size, "build_s": built, "commit_ms": commit_ms, "commit_cpu_ms": commit_cpu_ms, "open_s": open_s, "open_mb": open_mb,
                   "catalog_mb": sum(p.stat().st_size for p in (root / CATALOG_DIR).iterdir()) / 2**20,
                   "merge_us_per_entry": merge_us, "levels": levels,
                   "amortised_compaction_ms": merge_us * levels / 1000}
            if size <= args.old_up_to:
                old = work / "old"
                as_1_1(root, old)
                os.sync()
                row["old_open_s"], row["old_open_mb"], _ = time_open(old)
                row["old_commit_ms"], row["old_commit_cpu_ms"] = time_commits(old, 10**8, args.commits, Writer11)
            rows.append(row)
            print(json.dumps(row), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print("| entries | 1.2 commit ms wall (CPU) | 1.2 open_store s | 1.2 open RSS MiB | compaction us/entry "
          "(amortised ms/commit) | 1.1 commit ms wall (CPU) | 1.1 open s | 1.1 open RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        old = (f"{r['old_commit_ms']:.2f} ({r['old_commit_cpu_ms']:.2f}) | {r['old_open_s']:.2f} | {r['old_open_mb']:.0f}"
               if "old_open_s" in r
               else "- | - | -")
        print(f"| {r['size']:,} | {r['commit_ms']:.2f} ({r['commit_cpu_ms']:.2f}) | {r['open_s']:.3f} | {r['open_mb']:.1f} | "
              f"{r['merge_us_per_entry']:.1f} ({r['amortised_compaction_ms']:.3f}) | {old} |")
    base = rows[0]["commit_ms"]
    cpu = rows[0]["commit_cpu_ms"]
    print("\ncommit cost relative to the smallest store, wall (CPU): "
          + ", ".join(f"{r['size']:,}: {r['commit_ms'] / base:.2f}x ({r['commit_cpu_ms'] / cpu:.2f}x)" for r in rows))


if __name__ == "__main__":
    main()
