"""The worker: one video at a time, decoded, turned into records and written into a shard this
worker alone owns. The same code runs in a local process or (later) a cluster actor; it never
commits anything, it returns a :class:`VideoResult` for the driver to commit."""
from __future__ import annotations

import dataclasses
import os
import queue
import time
import zlib
from pathlib import Path

from ..decode import VideoDecodeError, iter_kept
from ..errors import StoreWriteError
from ..io import file_sha256
from ..store.backend import ShardWriter, writer_class
from ..store.format import VideoEntry, encode_runs
from ..store.records import records_crc32
from ..store.writer import ShardAllocator, describe_storage_error
from .config import ExtractConfig
from .plan import VideoJob
from .stream import compute_video_records, prefetch


@dataclasses.dataclass
class VideoResult:
    """What a worker hands back for one job: an entry to commit, or the reason it failed."""

    id: str
    path: str
    entry: VideoEntry | None = None
    reason: str | None = None
    seconds: float = 0.0
    flow_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.entry is not None


class GuardedShardWriter:
    """A shard writer whose every storage failure (OSError, lmdb.Error, h5py errors) becomes a
    :class:`StoreWriteError`, which stops the run instead of failing one video. It also tallies
    what a video entry records about its records (:meth:`entry_fields`)."""

    def __init__(self, writer: ShardWriter, where: str):
        self._writer, self._where = writer, where
        self._bytes = 0
        self._crcs: dict[str, list[int]] = {}  # per kind, in index order (each kind arrives in order)

    def _guard(self, call, *args):
        try:
            return call(*args)
        except Exception as exc:
            raise StoreWriteError(describe_storage_error(exc, self._where)) from exc

    def begin_video(self, video_id: str) -> None:
        self._bytes, self._crcs = 0, {}
        self._guard(self._writer.begin_video, video_id)

    def put(self, kind: str, index: int, payload: bytes) -> None:
        self._bytes += len(payload)
        self._crcs.setdefault(kind, []).append(zlib.crc32(payload))
        self._guard(self._writer.put, kind, index, payload)

    def end_video(self) -> None:
        self._guard(self._writer.end_video)

    def abort_video(self) -> None:
        self._guard(self._writer.abort_video)

    def entry_fields(self) -> dict:
        """``bytes``, ``shard_size`` and ``records_crc32`` of the video just ended (durable now:
        the shard is at least this long from here on)."""
        return {"shard": Path(self._writer.path).name, "bytes": self._bytes,
                "shard_size": self._guard(os.path.getsize, self._writer.path),
                "records_crc32": records_crc32(self._crcs)}


def open_next_shard(allocator: ShardAllocator) -> GuardedShardWriter:
    """A guarded writer on the shard the next video goes into (a failure to create the shard is
    a StoreWriteError, which stops the run)."""
    try:
        shard = allocator.shard_for_next_video()
    except OSError as exc:
        raise StoreWriteError(describe_storage_error(exc, str(allocator.dir))) from exc
    return GuardedShardWriter(writer_class(allocator.backend)(str(shard)), str(shard))


#: per process and run: the flow estimator and the shard allocator (see :func:`worker_state`)
_STATE: dict = {}


def worker_state(cfg: ExtractConfig, run_token: str, device_queue=None):
    """``(estimator, allocator)`` of this process for the run ``run_token``, built on first use.

    With several devices, each worker process takes one device token for the whole run, so
    there is one worker per GPU.
    """
    if _STATE.get("key") != run_token:
        device = cfg.device
        if device_queue is not None:
            try:
                device = device_queue.get_nowait()
            except queue.Empty:  # a respawned worker: share a device rather than fail
                device = cfg.devices[os.getpid() % len(cfg.devices)]
        from ..flow import build_flow

        # One worker = one core: OpenCV's own threads scale worse than processes (measured in
        # docs/benchmarks.md), and N workers x all threads would oversubscribe the cores.
        # Decoding and encoding still overlap the flow on their own threads.
        import cv2

        cv2.setNumThreads(1)
        estimator = build_flow(cfg.method, engine=cfg.engine, device=device,
                               params=dict(cfg.flow_params), **dict(cfg.flow_options))
        _STATE.clear()
        _STATE.update(key=run_token, estimator=estimator,
                      allocator=ShardAllocator(cfg.out, cfg.backend, cfg.shard_size))
    return _STATE["estimator"], _STATE["allocator"]


def extract_video(job: VideoJob, cfg: ExtractConfig, run_token: str, progress_queue=None,
                  device_queue=None) -> VideoResult:
    """Decode, compute flow, quantize, encode and write one video into this worker's shard.

    A bad video comes back as a failed result; storage failures raise StoreWriteError and stop
    the run.
    """
    start = time.perf_counter()
    estimator, allocator = worker_state(cfg, run_token, device_queue)
    reporter = progress_queue.put if progress_queue is not None else None
    try:
        source_size = os.path.getsize(job.path)
        source_sha = file_sha256(job.path)
    except OSError as exc:
        return VideoResult(job.id, job.path, reason=f"cannot read: {exc.strerror or exc}")
    writer = open_next_shard(allocator)
    kept: list = []  # (source index, timestamp) of each frame stored, for --fps

    def decoded():
        for frame in iter_kept(job.path, decoder=cfg.decoder, fps=cfg.fps):
            kept.append((frame.index, frame.time))
            yield cfg.resize.apply(frame.rgb)

    frames = prefetch(decoded())
    try:
        writer.begin_video(job.id)
        stats = compute_video_records(frames, estimator, cfg, writer.put, reporter)
        if stats.num_flows == 0:
            raise VideoDecodeError(
                f"only {stats.num_frames} frame(s) decoded; a flow pair needs at least {cfg.stride + 1}"
            )
        writer.end_video()
    except StoreWriteError:
        writer.abort_video()
        raise
    except BaseException as exc:  # a bad video must never stop the run ...
        writer.abort_video()
        if not isinstance(exc, Exception):  # ... but a signal (StopRequested) or KeyboardInterrupt does
            raise
        reason = str(exc) if isinstance(exc, VideoDecodeError) else f"{exc.__class__.__name__}: {exc}"
        return VideoResult(job.id, job.path, reason=" ".join(reason.split()))
    entry = VideoEntry(
        id=job.id, source=job.path, source_size=source_size, source_sha256=source_sha,
        num_frames=stats.num_frames, num_flows=stats.num_flows, width=stats.width, height=stats.height,
        **writer.entry_fields(),
    )
    if cfg.fps is not None:
        entry.update(source_frames=encode_runs(i for i, _ in kept[:stats.num_frames]),
                     source_times=[round(t, 6) for _, t in kept[:stats.num_frames]])
    return VideoResult(job.id, job.path, entry=entry, seconds=time.perf_counter() - start,
                       flow_seconds=stats.flow_seconds)
