"""``flowstore extract``: plan jobs, run workers, commit videos, resume, record failures.

The per-video data path is straight and each stage is a function of its own module::

    decode.iter_frames -> flow estimator -> quantize.quantize -> codec.encode_* -> ShardWriter.put

:func:`extract_video` runs it for one video inside a worker process; :func:`run_extract` plans
the jobs, holds the store's writer lock, fans videos out to a joblib process pool and commits
each finished video in the main process.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from . import __version__
from .codec import check_codec, check_quality, effective_quality, encode_gray, encode_rgb
from .errors import InputError, WorkerDiedError
from .decode import DECODERS, Resize, VideoDecodeError, iter_frames
from .quantize import QuantSpec, quantize
from .store.backend import writer_class
from .store.format import BACKENDS, FLOW_RANGE, FLOW_X, FLOW_Y, MAX_RECORDS_PER_VIDEO, RGB, check_video_id
from .store.writer import (
    ShardAllocator, StoreLock, StoreWriteError, StoreWriter, describe_os_error, describe_storage_error,
)

#: what counts as a video when a directory is given
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".flv", ".wmv", ".gif", ".3gp", ".ogv")
DEFAULT_SHARD_SIZE = 1 << 30


class PlanError(InputError):
    """Bad inputs found before any work starts (missing files, id collisions)."""


@dataclasses.dataclass(frozen=True)
class VideoJob:
    id: str
    path: str


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    out: str
    backend: str = "lmdb"
    method: str = "tvl1"
    engine: str | None = None
    device: str | None = None
    devices: tuple = ()  # several GPUs: one worker per device, videos split between them
    flow_params: dict = dataclasses.field(default_factory=dict)
    flow_options: dict = dataclasses.field(default_factory=dict)  # batch_size, ckpt, fp16 ...
    quant: QuantSpec = QuantSpec()
    flow_codec: str = "jpeg"
    flow_quality: int | None = None  # codec default: JPEG 95, PNG level 1
    frame_codec: str = "jpeg"
    frame_quality: int | None = None  # codec default: JPEG 95
    resize: Resize = Resize()
    stride: int = 1
    decoder: str = "opencv"
    shard_size: int = DEFAULT_SHARD_SIZE
    workers: int = 0  # 0: all cores

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise InputError(f"unknown format {self.backend!r}; choose from {sorted(BACKENDS)}")
        check_codec(self.flow_codec)
        check_codec(self.frame_codec)
        check_quality(self.flow_codec, self.flow_quality)  # fail now, not once per video
        check_quality(self.frame_codec, self.frame_quality)
        if self.decoder not in DECODERS:
            raise InputError(f"unknown decoder {self.decoder!r}; choose from {sorted(DECODERS)}")
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")
        if self.shard_size < 1:
            raise InputError(f"shard size must be positive, got {self.shard_size}")

    @property
    def n_workers(self) -> int:
        if len(self.devices) > 1:
            return len(self.devices)
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def settings(self, flow_description: dict) -> dict:
        """The manifest header fields that every run extending this store must repeat."""
        return {
            "backend": self.backend,
            "frames": {"codec": self.frame_codec, "quality": effective_quality(self.frame_codec, self.frame_quality), "color": "RGB"},
            "resize": self.resize.to_manifest(),
            "decoder": self.decoder,
            "stride": self.stride,
            "flow": {**flow_description, "codec": self.flow_codec,
                     "quality": effective_quality(self.flow_codec, self.flow_quality),
                     "components": [FLOW_X, FLOW_Y],
                     "input": ("grayscale of" if flow_description.get("engine") in ("opencv", "torch") else "")
                     + " the decoded, resized RGB frames, before they are encoded"},
            "quantization": self.quant.to_manifest(),
        }


# ---------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------
def _absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))


def _video_id(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    return rel.as_posix()


def plan_jobs(inputs: Sequence[str | os.PathLike], *, list_file: str | os.PathLike | None = None,
              root: str | os.PathLike | None = None) -> list[VideoJob]:
    """Resolve inputs to jobs. Ids are paths relative to the input root without extension.

    A directory input is searched recursively and is its own root; a file's root is its
    folder; ``--list`` lines are paths relative to the list file's folder, which is their root
    (a listed path outside it has its own folder as root). ``root`` overrides all of these. Missing inputs and id collisions raise :class:`PlanError` before any work.
    """
    candidates: list[tuple[Path, Path]] = []
    # absolute, but symlinks are kept: a symlinked dataset folder keeps its own ids
    base = _absolute(root) if root else None
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS:
                    candidates.append((f, base or p))
        elif p.exists():
            candidates.append((p, base or p.parent))
        else:
            raise PlanError(f"input not found: {p}")
    if list_file is not None:
        lf = Path(list_file)
        if not lf.exists():
            raise PlanError(f"--list file not found: {lf}")
        for n, line in enumerate(lf.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            f = Path(line) if Path(line).is_absolute() else lf.parent / line
            if not f.exists():
                raise PlanError(f"{lf}:{n}: listed video not found: {f}")
            inside = _absolute(f).is_relative_to(_absolute(lf.parent))
            candidates.append((f, base or (lf.parent if inside else f.parent)))
    jobs: dict[str, VideoJob] = {}
    for f, r in candidates:
        try:
            vid = _video_id(_absolute(f), _absolute(r))
        except ValueError:
            raise PlanError(f"{f} is not under the root {r}; pass a --root that contains every input") from None
        try:
            check_video_id(vid)
        except ValueError as exc:
            raise PlanError(str(exc)) from None
        if vid in jobs:
            if Path(jobs[vid].path).resolve() == f.resolve():
                continue  # the same file named twice
            raise PlanError(
                f"video id collision: {jobs[vid].path} and {f} both map to id {vid!r} "
                "(ids are paths relative to the input root without extension); rename one or extract them separately"
            )
        jobs[vid] = VideoJob(vid, str(f))
    if not jobs:
        raise PlanError("no videos found in the inputs (looked for " + ", ".join(VIDEO_EXTENSIONS) + ")")
    return [jobs[k] for k in sorted(jobs)]


# ---------------------------------------------------------------------------------------
# one video (runs in a worker process)
# ---------------------------------------------------------------------------------------
_WORKER_STATE: dict = {}


def _worker_setup(cfg: ExtractConfig, run_token: str, device_queue=None):
    """Per process and run: the flow estimator and the shard this process owns.

    With several devices, each worker process takes one device token for the whole run, so
    there is one worker per GPU.
    """
    key = run_token
    if _WORKER_STATE.get("key") != key:
        device = cfg.device
        if device_queue is not None:
            try:
                device = device_queue.get_nowait()
            except queue.Empty:  # a respawned worker: share a device rather than fail
                device = cfg.devices[os.getpid() % len(cfg.devices)]
        from .flow import build_flow

        # One worker = one core: OpenCV's own threads scale worse than processes (measured in
        # docs/benchmarks.md), and N workers x all threads would oversubscribe the cores.
        # Decoding and encoding still overlap the flow on their own threads.
        import cv2

        cv2.setNumThreads(1)
        estimator = build_flow(cfg.method, engine=cfg.engine, device=device,
                               params=dict(cfg.flow_params), **dict(cfg.flow_options))
        _WORKER_STATE.clear()
        _WORKER_STATE.update(key=key, estimator=estimator,
                             allocator=ShardAllocator(cfg.out, cfg.backend, cfg.shard_size))
    return _WORKER_STATE["estimator"], _WORKER_STATE["allocator"]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encode_flow(flow: np.ndarray, cfg: ExtractConfig) -> tuple[bytes, bytes, bytes | None]:
    """quantize + encode one flow: (x bytes, y bytes, range bytes or None)."""
    q, value_range = quantize(flow, cfg.quant)
    bx = encode_gray(np.ascontiguousarray(q[..., 0]), cfg.flow_codec, cfg.flow_quality)
    by = encode_gray(np.ascontiguousarray(q[..., 1]), cfg.flow_codec, cfg.flow_quality)
    return bx, by, (value_range.astype("<f4").tobytes() if value_range is not None else None)


class _Guarded:
    """Wraps a ShardWriter so that any storage failure becomes a StoreWriteError (fatal)."""

    def __init__(self, writer, where: str):
        self._writer, self._where = writer, where

    def __getattr__(self, name):
        method = getattr(self._writer, name)

        def call(*args, **kwargs):
            try:
                return method(*args, **kwargs)
            except Exception as exc:  # OSError, lmdb.Error, h5py errors: the run must stop
                raise StoreWriteError(describe_storage_error(exc, self._where)) from exc

        return call


def _prefetch(iterator: Iterable, depth: int = 4):
    """Run ``iterator`` (video decoding) in a background thread, ``depth`` items ahead."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def _encode_frame_records(kind: str, index: int, array: np.ndarray, cfg: ExtractConfig) -> list[tuple[str, int, bytes]]:
    """Quantize/encode one frame or flow into its records (runs in the encoder thread)."""
    if kind == RGB:
        return [(RGB, index, encode_rgb(array, cfg.frame_codec, cfg.frame_quality))]
    bx, by, brange = encode_flow(array, cfg)
    records = [(FLOW_X, index, bx), (FLOW_Y, index, by)]
    if brange is not None:
        records.append((FLOW_RANGE, index, brange))
    return records


#: encoded-but-unwritten frames/flows in flight; bounds memory while encoding overlaps flow
ENCODE_QUEUE_DEPTH = 8


@dataclasses.dataclass
class VideoStats:
    num_frames: int = 0
    num_flows: int = 0
    width: int = 0
    height: int = 0
    flow_seconds: float = 0.0  # time inside the flow engine: how busy the device was kept


def compute_video_records(frames: Iterable[np.ndarray], estimator, cfg: ExtractConfig, put: Callable,
                          progress: Callable[[int], None] | None = None) -> VideoStats:
    """Stream frames -> records through ``put(kind, index, payload)``.

    Three stages overlap: decoding (the ``frames`` iterator, a background thread in
    :func:`extract_video`), flow on this thread, and quantize + encode on an encoder thread
    (OpenCV and numpy release the GIL). ``put`` is always called from this thread, in
    submission order, so records are written deterministically and LMDB transactions stay on
    the thread that opened them. Memory stays bounded: at most ``stride + batch_size`` prepared
    frames and ``ENCODE_QUEUE_DEPTH`` frames/flows in flight.
    """
    from concurrent.futures import ThreadPoolExecutor

    window: deque = deque()
    prev_batch: list = []
    next_batch: list = []
    in_flight: deque = deque()
    n_frames = n_flows = 0
    width = height = 0
    flow_seconds = 0.0

    def write_done(limit: int) -> None:
        # write finished encodings in order; block on the oldest while too many are in flight
        while in_flight and (len(in_flight) > limit or in_flight[0].done()):
            for record in in_flight.popleft().result():
                put(*record)

    def submit(kind: str, index: int, array: np.ndarray) -> None:
        in_flight.append(encoder.submit(_encode_frame_records, kind, index, array, cfg))
        write_done(ENCODE_QUEUE_DEPTH)

    def flush() -> None:
        nonlocal n_flows, flow_seconds
        if not prev_batch:
            return
        start = time.perf_counter()
        flows = estimator.compute(prev_batch, next_batch)
        flow_seconds += time.perf_counter() - start
        for flow in flows:
            submit("flow", n_flows, flow)
            n_flows += 1
        if progress is not None:
            progress(len(prev_batch))
        prev_batch.clear()
        next_batch.clear()

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowstore-encode") as encoder:
        try:
            for rgb in frames:
                if n_frames == 0:
                    height, width = rgb.shape[:2]
                if n_frames >= MAX_RECORDS_PER_VIDEO:
                    raise InputError(f"more than {MAX_RECORDS_PER_VIDEO} frames: longer than format 1.x allows; split the video")
                submit(RGB, n_frames, rgb)
                window.append(estimator.prepare(rgb))
                n_frames += 1
                if len(window) > cfg.stride:
                    prev_batch.append(window.popleft())
                    next_batch.append(window[-1])
                    if len(prev_batch) >= estimator.batch_size:
                        flush()
            flush()
            write_done(0)
        finally:
            for future in in_flight:  # on an error: do not write, just stop
                future.cancel()
    return VideoStats(n_frames, n_flows, width, height, flow_seconds)


def extract_video(job: VideoJob, cfg: ExtractConfig, run_token: str, progress_queue=None, device_queue=None) -> dict:
    """Decode, compute flow, quantize, encode and write one video into this worker's shard.

    Returns ``{"ok": True, "entry": {...}}`` (to be committed by the main process) or
    ``{"ok": False, "reason": ...}``. Storage failures raise StoreWriteError: they stop the run.
    """
    start = time.perf_counter()
    estimator, allocator = _worker_setup(cfg, run_token, device_queue)
    reporter = progress_queue.put if progress_queue is not None else None
    try:
        source_size = os.path.getsize(job.path)
        source_sha = file_sha256(job.path)
    except OSError as exc:
        return {"ok": False, "id": job.id, "path": job.path, "reason": f"cannot read: {exc.strerror or exc}"}
    try:
        shard = allocator.shard_for_next_video()
    except OSError as exc:
        raise StoreWriteError(describe_storage_error(exc, str(Path(cfg.out) / "shards"))) from exc
    frames = _prefetch(iter_frames(job.path, resize=cfg.resize, decoder=cfg.decoder))
    shard_path = str(Path(cfg.out) / "shards" / shard)
    writer = _Guarded(writer_class(cfg.backend)(shard_path), shard_path)
    bytes_written = 0

    def put(kind, index, payload):
        nonlocal bytes_written
        bytes_written += len(payload)
        writer.put(kind, index, payload)

    try:
        writer.begin_video(job.id)
        stats = compute_video_records(frames, estimator, cfg, put, reporter)
        n_frames, n_flows, width, height = stats.num_frames, stats.num_flows, stats.width, stats.height
        if n_flows == 0:
            raise VideoDecodeError(
                f"only {n_frames} frame(s) decoded; a flow pair needs at least {cfg.stride + 1}"
            )
        writer.end_video()
    except StoreWriteError:
        writer.abort_video()
        raise
    except Exception as exc:  # a bad video must never stop the run
        writer.abort_video()
        reason = str(exc) if isinstance(exc, VideoDecodeError) else f"{exc.__class__.__name__}: {exc}"
        return {"ok": False, "id": job.id, "path": job.path, "reason": " ".join(reason.split())}
    entry = {
        "id": job.id, "source": job.path, "source_size": source_size, "source_sha256": source_sha,
        "num_frames": n_frames, "num_flows": n_flows, "width": width, "height": height,
        "shard": shard, "bytes": bytes_written,
    }
    return {"ok": True, "entry": entry, "seconds": time.perf_counter() - start, "flow_seconds": stats.flow_seconds}


# ---------------------------------------------------------------------------------------
# the run (main process)
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class ExtractSummary:
    planned: int = 0
    ok: int = 0
    failed: int = 0
    skipped_committed: int = 0
    skipped_failed: int = 0
    pairs: int = 0
    frames: int = 0
    bytes: int = 0
    seconds: float = 0.0
    worker_seconds: float = 0.0  # wall time of the workers' videos, summed
    flow_seconds: float = 0.0    # of which inside the flow engine
    failures: list = dataclasses.field(default_factory=list)  # failures among the planned videos

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0

    @property
    def bytes_per_pair(self) -> float:
        return self.bytes / self.pairs if self.pairs else 0.0

    def lines(self) -> list[str]:
        out = [
            f"videos: {self.ok} ok, {self.failed} failed this run, {self.skipped_committed} already in the store, "
            f"{self.skipped_failed} skipped (failed before; --retry-failed retries them)",
            f"pairs: {self.pairs} in {self.seconds:.1f} s = {self.pairs_per_second:.1f} pairs/s; frames: {self.frames}",
            f"bytes: {self.bytes:,} ({self.bytes_per_pair:,.0f} per pair incl. its RGB frame)",
        ]
        if self.worker_seconds > 0:
            out.append(f"flow engine busy {100 * self.flow_seconds / self.worker_seconds:.0f}% of worker time "
                       "(decoding and encoding overlap with it on other threads)")
        for f in self.failures:
            out.append(f"FAILED {f['id']}: {f['reason']}  [{f['source']}]")
        return out


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise StoreWriteError(describe_os_error(exc, f"the store directory {out}")) from exc


def run_extract(jobs: Sequence[VideoJob], cfg: ExtractConfig, *, retry_failed: bool = False,
                show_progress: bool = True, log: Callable[[str], None] = print) -> ExtractSummary:
    """Extract ``jobs`` into the store ``cfg.out`` (created or resumed)."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    from .flow import build_flow

    out = Path(cfg.out)
    _check_writable(out)
    summary = ExtractSummary(planned=len(jobs))
    # Built once here: validates method/params/checkpoint before any work, and describes the manifest.
    description = build_flow(cfg.method, engine=cfg.engine, device=cfg.device,
                             params=dict(cfg.flow_params), **dict(cfg.flow_options)).describe()
    t0 = time.perf_counter()
    with StoreLock(out):
        try:
            store = StoreWriter(out, cfg.settings(description))
        except OSError as exc:
            raise StoreWriteError(describe_os_error(exc, f"the store {out}")) from exc
        committed = store.committed
        failed_before = {f["id"] for f in store.failures()}
        todo = []
        for job in jobs:
            if job.id in committed:
                summary.skipped_committed += 1
            elif job.id in failed_before and not retry_failed:
                summary.skipped_failed += 1
            else:
                todo.append(job)
        run_token = uuid.uuid4().hex
        n_workers = min(cfg.n_workers, max(1, len(todo)))
        import cv2

        caller_threads = cv2.getNumThreads()  # a one-worker run happens in this process: restore
        manager = device_queue = None
        if n_workers > 1:
            import multiprocessing

            manager = multiprocessing.Manager()
            progress_queue = manager.Queue()
            if len(cfg.devices) > 1:
                device_queue = manager.Queue()
                for device in cfg.devices:
                    device_queue.put(device)
        else:
            progress_queue = queue.Queue()
        bar_videos = tqdm(total=len(todo), desc="videos", unit="video", disable=not show_progress, position=0)
        bar_pairs = tqdm(desc="pairs", unit="pair", disable=not show_progress, position=1, smoothing=0.1)
        stop = threading.Event()

        def drain():
            while not stop.is_set() or not progress_queue.empty():
                try:
                    bar_pairs.update(progress_queue.get(timeout=0.2))
                except queue.Empty:
                    continue
                except (EOFError, OSError, BrokenPipeError):
                    return

        drainer = threading.Thread(target=drain, daemon=True)
        drainer.start()
        try:
            results = Parallel(n_jobs=n_workers, return_as="generator_unordered")(
                delayed(extract_video)(job, cfg, run_token, progress_queue, device_queue) for job in todo
            )
            for result in results:
                try:
                    if result["ok"]:
                        entry = result["entry"]
                        store.commit(entry)
                        summary.ok += 1
                        summary.pairs += entry["num_flows"]
                        summary.frames += entry["num_frames"]
                        summary.bytes += entry["bytes"]
                        summary.worker_seconds += result["seconds"]
                        summary.flow_seconds += result["flow_seconds"]
                    else:
                        store.record_failure(result["id"], result["path"], result["reason"])
                        summary.failed += 1
                except OSError as exc:
                    raise StoreWriteError(describe_storage_error(exc, str(out))) from exc
                bar_videos.update(1)
        except Exception as exc:
            from joblib.externals.loky.process_executor import TerminatedWorkerError

            if isinstance(exc, TerminatedWorkerError):
                raise WorkerDiedError(
                    f"a worker process died ({' '.join(str(exc).split())[:200]}); the {summary.ok} video(s) "
                    "committed so far are safe: rerun the same command to continue (with --workers 1 the "
                    "video that kills the process is the one shown by the progress bar)"
                ) from None
            raise
        finally:
            cv2.setNumThreads(caller_threads)
            stop.set()
            drainer.join(timeout=2)
            bar_pairs.close()
            bar_videos.close()
            if manager is not None:
                manager.shutdown()
            try:
                store.checkpoint()
            except OSError as exc:  # the commit log still holds every committed video
                log(f"warning: could not rewrite the manifest ({exc}); commits.jsonl keeps the commits")
        wanted = {j.id for j in jobs}
        summary.failures = [f for f in store.failures() if f["id"] in wanted]
    summary.seconds = time.perf_counter() - t0
    return summary


__all__ = [
    "ExtractConfig", "ExtractSummary", "PlanError", "VideoJob", "VideoStats", "compute_video_records", "encode_flow",
    "extract_video", "plan_jobs", "run_extract", "__version__",
]
