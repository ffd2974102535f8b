"""``flowstore bench-loader``: clips/s of the flowstore loader next to its decode limit and to an
mmaction2 rawframes tree holding the same bytes, warm and cold.

Every variant runs the same clips through the same code, the loader's own
(:class:`~flowstore.data.dataset.StoreClipDataset`: uint8 clips decoded straight into batches
in the workers, as :func:`~flowstore.data.loader.make_loader` sets it up) with the same
DataLoader settings (workers, batch size, prefetching, one OpenCV thread per worker); only
where the encoded bytes come from, and whether they are read ahead, differs:

``decode_limit``  the bytes held in RAM (loaded before the workers fork): no I/O at all, only
                  cv2.imdecode and the batch assembly and transfer every variant has
``flowstore``     the store (LMDB/HDF5 shard records, handles opened by each worker)
``rawframes``     the store exported with :func:`~flowstore.data.rawframes.export_rawframes`,
                  one ``open().read()`` per image when the image is needed, as mmaction2's
                  RawFrameDecode does (no read-ahead)
``rawframes_readahead``  (a control, reported but not a goal) the rawframes tree with the
                  flowstore loader's read-ahead threads

Clips tile every video with non-overlapping snippets (stack/frame: ``0, L, 2L, ...``; tsn: K
random segments per clip, ``count // (K*L)`` clips per video), so one epoch reads the store
about once. *Warm*: every file of the store and of the tree is read once beforehand, then
``epochs`` epochs are timed. *Cold*: for each round every file of both is evicted from the page
cache (``posix_fadvise(POSIX_FADV_DONTNEED)``; the residency left is checked with ``mincore``
and reported; see :mod:`flowstore.bench.pagecache`), then the store (or tree) is opened, the workers are started, and one epoch is
timed. Worker start-up is never timed: the workers answer a ping before the clock starts (and
create their reused shared-memory batch buffers then, as the first epoch of a training run
would), and after the pass they report their memory (RSS and USS). Rounds alternate between
variants and the reported figure is the median over rounds.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ..data.batch_memory import batch_nbytes, reserve_worker_slots
from ..data.clips import SamplePlan
from ..data.dataset import StoreClipDataset
from ..data.loader import StoreLoader, collate, prepare_fork, worker_init
from ..data.rawframes import META, RawframesReader, export_rawframes
from ..data.sampling import default_length, non_overlapping_starts, tsn_starts
from ..data.source import open_source, record_indices
from ..errors import InputError
from .pagecache import evict, prime, resident_bytes, store_files
from ..store.source import FORWARD_ONLY, check_forward_only

JSON_KEYS = ("decode_limit", "flowstore", "rawframes", "flowstore_cold", "rawframes_cold", "workers")
GOALS = {"warm_vs_decode_limit": 0.9, "warm_vs_rawframes": 1.0, "cold_vs_rawframes": 1.5}
PING = -1


# ---------------------------------------------------------------------------------------
# sources and dataset
# ---------------------------------------------------------------------------------------
class InMemorySource:
    """The encoded records a list of clips needs, held in RAM (the decode limit's source; a
    :class:`~flowstore.store.source.RecordSource` named after the store it copies). It copies
    forward flow only: asking it for backward flow is an InputError."""

    directions = FORWARD_ONLY

    def __init__(self, store, needs: dict[str, tuple[set, set]]):
        src = open_source(store)
        self.root = src.root
        self.videos = list(src.videos)
        self.quant, self.flow_codec, self.frame_codec = src.quant, src.flow_codec, src.frame_codec
        self._meta = {v: (src.num_frames(v), src.num_flows(v), src.frame_size(v)) for v in self.videos}
        self._frames: dict[tuple[str, int], bytes] = {}
        self._flows: dict[tuple[str, int], tuple[bytes, bytes]] = {}
        self._ranges: dict[tuple[str, int], np.ndarray] = {}
        for v, (frames, flows) in needs.items():
            for i in sorted(frames):
                self._frames[v, i] = src.frame_bytes(v, i)
            if flows:
                idx = sorted(flows)
                xs, ys = src.flow_bytes(v, idx)
                for i, bx, by in zip(idx, xs, ys):
                    self._flows[v, i] = (bx, by)
                    if src.quant.scheme == "minmax":
                        self._ranges[v, i] = src.flow_range(v, i)
        self.nbytes = sum(map(len, self._frames.values())) + sum(len(x) + len(y) for x, y in self._flows.values())

    def num_frames(self, v):
        return self._meta[v][0]

    def num_flows(self, v):
        return self._meta[v][1]

    def frame_size(self, v):
        return self._meta[v][2]

    def frame_bytes(self, v, i):
        return self._frames[v, int(i)]

    def flow_bytes(self, v, indices, direction="forward"):
        check_forward_only(direction, f"the in-memory copy of {self.root}")
        pairs = [self._flows[v, int(i)] for i in indices]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def flow_range(self, v, i, direction="forward"):
        check_forward_only(direction, f"the in-memory copy of {self.root}")
        return self._ranges.get((v, int(i)))

    def shard_of(self, v):
        return None  # records in RAM, no shards

    def close(self) -> None:
        pass


class _BenchDataset(StoreClipDataset):
    """The loader's own dataset over fixed clips ``(video, starts)``, uint8 values and no
    transform, batches decoded in the workers (as with :func:`make_loader`); key PING answers
    with the worker's memory instead."""

    batch_in_worker = True

    def __init__(self, source, clips, **kwargs):
        super().__init__(source, None, flow_values="uint8", rgb_values="uint8", **kwargs)
        self.clips = clips

    @property
    def num_samples(self) -> int:
        return len(self.clips)

    #: bytes of one batch: workers create their reused batch buffers of this size when pinged,
    #: before the clock starts, as a first epoch would (a cold round is a single epoch)
    reserve_bytes = 0

    def batch_bytes(self, batch_size: int) -> int:
        """Slot bytes of the largest batch (the largest frames of the clips)."""
        size = max((self.store.frame_size(v) for v, _ in self.clips), key=lambda wh: wh[0] * wh[1])
        shapes = self.batch_shapes(batch_size, len(self.clips[0][1]), size)
        return batch_nbytes([(shape, torch.uint8) for shape in shapes.values()])

    def _ping(self) -> dict:
        import psutil

        reserve_worker_slots(self.reserve_bytes)
        proc = psutil.Process()
        mem, cpu = proc.memory_full_info(), proc.cpu_times()
        return {"pid": os.getpid(), "rss": mem.rss, "uss": mem.uss, "cpu": cpu.user + cpu.system}

    def plan(self, index: int, epoch: int) -> SamplePlan:
        video, starts = self.clips[index]
        return SamplePlan(index, video, starts, None)

    def __getitem__(self, key):
        return self._ping() if key == PING else super().__getitem__(key)

    def __getitems__(self, keys):
        if keys and keys[0] == PING:
            return [self._ping() for _ in keys]
        return super().__getitems__(keys)


def _collate(batch):
    if isinstance(batch, list) and batch and "pid" in batch[0]:
        return batch
    return collate(batch)


def _images(batch) -> int:
    """Images in a collated batch: 2L per flow snippet, L per RGB snippet of L frames."""
    n = 0
    if "flow" in batch:
        n += int(np.prod(batch["flow"].shape[:3]))
    if "rgb" in batch:
        n += int(np.prod(batch["rgb"].shape[:3])) // 3
    return n


class _Batches:
    """A batch sampler whose batches are replaced between passes (the loader's workers persist)."""

    def __init__(self):
        self.batches: list[list[int]] = []

    def __iter__(self):
        return iter(list(self.batches))

    def __len__(self):
        return len(self.batches)


def make_clips(source, *, modality: str, sampling: str, length: int, num_segments: int, seed: int,
               max_clips: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Clips that tile every video about once (see the module docstring)."""
    rng = np.random.default_rng([seed, 0xBE4C])
    clips = []
    for v in source.videos:
        count = source.num_frames(v) if modality == "rgb" else source.num_flows(v)
        if sampling == "tsn":
            for _ in range(max(count // (num_segments * length), 1)):
                clips.append((v, tsn_starts(count, num_segments, length, train=True, rng=rng)))
        else:
            clips.extend((v, np.array([s], np.int64)) for s in non_overlapping_starts(count, length))
    if max_clips is not None and len(clips) > max_clips:
        keep = np.sort(rng.choice(len(clips), max_clips, replace=False))
        clips = [clips[i] for i in keep]
    return clips


def _needs(clips, modality: str, length: int, source) -> dict[str, tuple[set, set]]:
    """``{video: (frame indices, flow indices)}`` the clips read."""
    needs: dict[str, tuple[set, set]] = {}
    for v, starts in clips:
        frames, flows = needs.setdefault(v, (set(), set()))
        flow_idx, frame_idx = record_indices(source, v, starts, length, modality)
        if flow_idx is not None:
            flows.update(int(i) for i in flow_idx.ravel())
        if frame_idx is not None:
            frames.update(int(i) for i in frame_idx.ravel())
    return needs


# ---------------------------------------------------------------------------------------
# one measurement
# ---------------------------------------------------------------------------------------
class _Runner:
    """A DataLoader with persistent workers over a bench dataset; passes are timed without start-up."""

    def __init__(self, dataset: _BenchDataset, workers: int, batch_size: int, prefetch_factor: int = 4):
        self.dataset = dataset
        self.workers = workers
        self.batch_size = batch_size
        self.batches = _Batches()
        kwargs = dict(num_workers=workers, collate_fn=_collate, batch_sampler=self.batches)
        if workers > 0:
            prepare_fork()
            kwargs.update(persistent_workers=True, prefetch_factor=prefetch_factor, worker_init_fn=worker_init)
        self.loader = StoreLoader(dataset, **kwargs)

    def ping(self) -> list[dict]:
        """Every worker answers (round-robin dispatch: 2 pings per worker)."""
        self.batches.batches = [[PING] for _ in range(max(self.workers, 1) * 2)]
        answers = [item for batch in self.loader for item in batch]
        by_pid = {}
        for a in answers:
            by_pid[a["pid"]] = a
        return list(by_pid.values())

    def timed(self, order) -> tuple[float, int, int]:
        """Seconds, clips and images of one pass over ``order`` (clip indices)."""
        bs = self.batch_size
        self.batches.batches = [list(map(int, order[i:i + bs])) for i in range(0, len(order), bs)]
        clips = images = 0
        t0 = time.perf_counter()
        for batch in self.loader:
            clips += len(batch["video"])
            images += _images(batch)
        return time.perf_counter() - t0, clips, images

    def close(self):
        # ends the persistent workers (and with them their store handles)
        it = getattr(self.loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        self.loader = None


def _measure(make_source, clips, orders, *, workers, batch_size, ds_kwargs, read_ahead, read_threads) -> dict:
    source = make_source()
    ds = _BenchDataset(source, clips, read_ahead=read_ahead, read_threads=read_threads, **ds_kwargs)
    ds.reserve_bytes = ds.batch_bytes(batch_size)
    runner = _Runner(ds, workers, batch_size)
    try:
        before = {m["pid"]: m["cpu"] for m in runner.ping()}  # workers started; no data read yet
        seconds = 0.0
        n_clips = n_images = 0
        for order in orders:
            s, c, i = runner.timed(order)
            seconds, n_clips, n_images = seconds + s, n_clips + c, n_images + i
        mem = runner.ping()
        cpu = sum(m["cpu"] - before.get(m["pid"], m["cpu"]) for m in mem)
    finally:
        runner.close()
        source.close()
    return {"seconds": seconds, "clips": n_clips, "images": n_images,
            "clips_per_s": n_clips / seconds, "images_per_s": n_images / seconds,
            "worker_rss_mb": [round(m["rss"] / 2**20, 1) for m in mem],
            "worker_uss_mb": [round(m["uss"] / 2**20, 1) for m in mem],
            # CPU the workers got during the pass, per worker and second of wall time (1.0 = a
            # whole core each); well below 1 when other processes compete for the cores
            "worker_cpu_share": round(cpu / (seconds * max(workers, 1)), 3)}


def _summary(runs: list[dict]) -> dict:
    return {
        "clips_per_s": statistics.median(r["clips_per_s"] for r in runs),
        "images_per_s": statistics.median(r["images_per_s"] for r in runs),
        "runs_clips_per_s": [round(r["clips_per_s"], 1) for r in runs],
        "clips": sum(r["clips"] for r in runs),
        "seconds": round(sum(r["seconds"] for r in runs), 3),
        "worker_rss_mb": max(max(r["worker_rss_mb"]) for r in runs),
        "worker_uss_mb": max(max(r["worker_uss_mb"]) for r in runs),
        "worker_cpu_share": statistics.median(r["worker_cpu_share"] for r in runs),
        **({"resident_after_evict": runs[0]["resident_after_evict"]} if "resident_after_evict" in runs[0] else {}),
    }


def bench_loader(store_path, *, workers: int = 2, modality: str = "flow", sampling: str = "stack",
                 length: int | None = None, num_segments: int = 3, batch_size: int = 8, epochs: int = 2,
                 rounds: int = 5, cold: bool = True, rawframes_dir=None, keep_rawframes: bool = False,
                 max_clips: int | None = None, read_ahead: int = 8, read_threads: int = 2, seed: int = 0,
                 log=None) -> dict:
    """Run the benchmark; returns the full record (:data:`JSON_KEYS` at the top level, clips/s)."""
    log = log or (lambda msg: None)
    load_before = os.getloadavg()
    store_path = Path(store_path)
    length = default_length(sampling, modality) if length is None else length
    meta_store = open_source(store_path)
    clips = make_clips(meta_store, modality=modality, sampling=sampling, length=length,
                       num_segments=num_segments, seed=seed, max_clips=max_clips)
    if not clips:
        raise InputError(f"store {store_path} has no videos to read")
    ds_kwargs = dict(modality=modality, sampling=sampling, length=length, num_segments=num_segments)
    rng = np.random.default_rng([seed, 0x0D0E])
    made_tree = False
    if rawframes_dir is None:
        rawframes_dir = Path(tempfile.mkdtemp(prefix="flowstore-rawframes-", dir=store_path.parent))
        made_tree = True
    rawframes_dir = Path(rawframes_dir)
    try:
        if not (rawframes_dir / META).exists():
            log(f"exporting the store to rawframes in {rawframes_dir} ...")
            export_rawframes(meta_store, rawframes_dir, frames=modality != "flow", flows=modality != "rgb")
        store_list, tree_list = store_files(store_path), store_files(rawframes_dir)
        needs = _needs(clips, modality, length, meta_store)
        memory = InMemorySource(meta_store, needs)
        meta_store.close()
        log(f"{len(clips)} clips per epoch, {memory.nbytes / 2**20:.1f} MB of encoded records; "
            f"store {sum(p.stat().st_size for p in store_list) / 2**20:.1f} MB in {len(store_list)} files, "
            f"rawframes {sum(p.stat().st_size for p in tree_list) / 2**20:.1f} MB in {len(tree_list)} files")

        def orders(n):
            return [rng.permutation(len(clips)) for _ in range(n)]

        # name -> (source, read_ahead). rawframes reads synchronously, file by file, as mmaction2
        # does; rawframes_readahead (details only) gives it flowstore's read-ahead thread as well
        variants = {
            "decode_limit": (lambda: memory, read_ahead),
            "flowstore": (lambda: open_source(store_path), read_ahead),
            "rawframes": (lambda: RawframesReader(rawframes_dir), 0),
            "rawframes_readahead": (lambda: RawframesReader(rawframes_dir), read_ahead),
        }
        common = dict(workers=workers, batch_size=batch_size, ds_kwargs=ds_kwargs, read_threads=read_threads)
        warm: dict[str, list] = {k: [] for k in variants}
        prime(store_list)
        prime(tree_list)
        for r in range(rounds):
            for name, (make, ahead) in variants.items():
                res = _measure(make, clips, orders(epochs), read_ahead=ahead, **common)
                warm[name].append(res)
                log(f"warm round {r + 1}/{rounds} {name:19s} {res['clips_per_s']:8.1f} clips/s "
                    f"{res['images_per_s']:9.0f} images/s")
        cold_runs: dict[str, list] = {"flowstore": [], "rawframes": [], "rawframes_readahead": []}
        if cold:
            for r in range(rounds):
                for name in cold_runs:
                    evict(store_list)
                    evict(tree_list)
                    files = store_list if name == "flowstore" else tree_list
                    cached, total = resident_bytes(files)
                    make, ahead = variants[name]
                    res = _measure(make, clips, orders(1), read_ahead=ahead, **common)
                    res["resident_after_evict"] = round(cached / max(total, 1), 4)
                    cold_runs[name].append(res)
                    log(f"cold round {r + 1}/{rounds} {name:19s} {res['clips_per_s']:8.1f} clips/s "
                        f"{res['images_per_s']:9.0f} images/s (resident after eviction {cached / max(total, 1):.1%})")
    finally:
        if made_tree and not keep_rawframes:
            shutil.rmtree(rawframes_dir, ignore_errors=True)

    details = {f"{k}": _summary(v) for k, v in warm.items()}
    details.update({f"{k}_cold": _summary(v) for k, v in cold_runs.items() if v})
    out = {k: round(details[k]["clips_per_s"], 2) if k in details else None for k in JSON_KEYS[:-1]}
    out["workers"] = workers
    ratios = {"warm_vs_decode_limit": out["flowstore"] / out["decode_limit"],
              "warm_vs_rawframes": out["flowstore"] / out["rawframes"]}
    if cold:
        ratios["cold_vs_rawframes"] = out["flowstore_cold"] / out["rawframes_cold"]

    def paired(a, b, runs):
        return [round(x["clips_per_s"] / y["clips_per_s"], 3) for x, y in zip(runs[a], runs[b])]

    per_round = {"warm_vs_decode_limit": paired("flowstore", "decode_limit", warm),
                 "warm_vs_rawframes": paired("flowstore", "rawframes", warm)}
    if cold:
        per_round["cold_vs_rawframes"] = paired("flowstore", "rawframes", cold_runs)
    return {
        **out,
        "details": details,
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "ratios_per_round": per_round,
        "goals": {k: {"target": GOALS[k], "met": ratios[k] >= GOALS[k]} for k in ratios},
        "settings": {"store": str(store_path), "modality": modality, "sampling": sampling, "length": length,
                     "num_segments": num_segments, "batch_size": batch_size, "epochs_warm": epochs,
                     "read_ahead": read_ahead, "read_threads": read_threads,
                     "rounds": rounds, "clips_per_epoch": len(clips), "seed": seed,
                     "rawframes": str(rawframes_dir) if (keep_rawframes or not made_tree) else None,
                     "torch": torch.__version__, "cpus": os.cpu_count(),
                     "loadavg_before": [round(x, 2) for x in load_before],
                     "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
    }


def format_report(result: dict) -> str:
    d = result["details"]
    s = result["settings"]
    lines = [f"bench-loader {s['store']}: {s['modality']} {s['sampling']} L={s['length']}, "
             f"{result['workers']} workers, batch {s['batch_size']}, {s['clips_per_epoch']} clips/epoch, "
             f"median of {s['rounds']} rounds",
             f"{'':22s}{'clips/s':>10s}{'images/s':>11s}{'vs decode':>11s}{'RSS/worker':>12s}{'USS/worker':>12s}"
             f"{'CPU/worker':>12s}"]
    names = [("decode_limit", "decode limit (RAM)"), ("flowstore", "flowstore warm"), ("rawframes", "rawframes warm"),
             ("rawframes_readahead", "(rawframes+readahead)"), ("flowstore_cold", "flowstore cold"),
             ("rawframes_cold", "rawframes cold"), ("rawframes_readahead_cold", "(rawframes+ra cold)")]
    base = d["decode_limit"]["clips_per_s"]
    for key, label in names:
        if key not in d:
            continue
        x = d[key]
        lines.append(f"{label:22s}{x['clips_per_s']:10.1f}{x['images_per_s']:11.0f}{x['clips_per_s'] / base:10.2f}x"
                     f"{x['worker_rss_mb']:9.0f} MB{x['worker_uss_mb']:9.0f} MB{x['worker_cpu_share']:11.0%}")
    for k, g in result["goals"].items():
        rounds = ", ".join(f"{x:.2f}" for x in result["ratios_per_round"][k])
        lines.append(f"goal {k} >= {g['target']}: {result['ratios'][k]:.2f} -> {'met' if g['met'] else 'MISSED'}"
                     f" (per round: {rounds})")
    for key in ("flowstore_cold", "rawframes_cold"):
        if key in d:
            lines.append(f"{key}: {d[key]['resident_after_evict']:.1%} of the files resident after eviction")
    lines.append(f"load average {s['loadavg_before'][0]:.1f} before, {s['loadavg_after'][0]:.1f} after, on {s['cpus']} CPUs "
                 "(CPU/worker: share of a core each worker got while timed)")
    return "\n".join(lines)


__all__ = ["GOALS", "JSON_KEYS", "InMemorySource", "bench_loader", "format_report", "make_clips"]
