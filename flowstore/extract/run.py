"""The run (the driver process): hold the store's writer lock, choose what is left to do, let an
executor run the workers, show progress, and commit each finished video."""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from ..devices import check_devices
from ..errors import StoreWriteError, WorkerDiedError
from ..signals import StopRequested, stop_on_signals
from ..store.writer import StoreLock, StoreWriter, describe_os_error, describe_storage_error
from .config import ExtractConfig
from .executor import executor_class as find_executor
from .plan import VideoJob
from .worker import VideoResult


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
    changed_sources: list = dataclasses.field(default_factory=list)  # committed ids whose source file changed

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
        if self.changed_sources:
            out.append(f"{len(self.changed_sources)} video(s) kept as committed although their source file changed "
                       "since (see the warnings; extract them into a new --out to get the new content)")
        return out


def check_writable(out: Path) -> None:
    """Create the store directory and prove a file can be written in it, before any work."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        raise StoreWriteError(describe_os_error(exc, f"the store directory {out}")) from exc


def choose_todo(jobs: Sequence[VideoJob], store: StoreWriter, retry_failed: bool,
                summary: ExtractSummary) -> list[VideoJob]:
    """The jobs not yet committed (and, unless ``retry_failed``, not failed before)."""
    failed_before = {f["id"] for f in store.failures()}
    todo = []
    for job in jobs:
        if job.id in store:  # a catalog lookup per job: no set of every committed id
            summary.skipped_committed += 1
            change = source_change(job.path, store.entry(job.id))
            if change:
                summary.changed_sources.append({"id": job.id, "source": job.path, "change": change})
        elif job.id in failed_before and not retry_failed:
            summary.skipped_failed += 1
        else:
            todo.append(job)
    return todo


def source_change(path: str, entry) -> str | None:
    """How the file at ``path`` differs from the source of its committed ``entry`` (size, or
    SHA-256 when the file was modified after the commit), or None. Unreadable: None (the
    video stays committed; nothing new to compare)."""
    import datetime

    from ..io import file_sha256

    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_size != entry["source_size"]:
        return f"size {entry['source_size']} -> {st.st_size} bytes"
    try:
        committed = datetime.datetime.fromisoformat(entry["committed_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        committed = None
    if committed is not None and st.st_mtime < committed:
        return None  # not modified since it was extracted (the commit time is to the second)
    try:
        sha = file_sha256(path)
    except OSError:
        return None
    return None if sha == entry["source_sha256"] else "same size, different SHA-256"


def commit_result(store: StoreWriter, result: VideoResult, summary: ExtractSummary) -> None:
    """Make a finished video visible (or record its failure) and count it."""
    try:
        if result.ok:
            entry = result.entry
            store.commit(entry)
            summary.ok += 1
            summary.pairs += entry["num_flows"]
            summary.frames += entry["num_frames"]
            summary.bytes += entry["bytes"]
            summary.worker_seconds += result.seconds
            summary.flow_seconds += result.flow_seconds
        else:
            store.record_failure(result.id, result.path, result.reason)
            summary.failed += 1
    except OSError as exc:
        raise StoreWriteError(describe_storage_error(exc, str(store.root))) from exc


class Progress:
    """Two bars, videos and pairs; a thread drains the workers' pair counts into the second."""

    def __init__(self, total_videos: int, pair_counts, enabled: bool):
        from tqdm import tqdm

        self.videos = tqdm(total=total_videos, desc="videos", unit="video", disable=not enabled, position=0)
        self.pairs = tqdm(desc="pairs", unit="pair", disable=not enabled, position=1, smoothing=0.1)
        self._counts = pair_counts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while not self._stop.is_set() or not self._counts.empty():
            try:
                self.pairs.update(self._counts.get(timeout=0.2))
            except queue.Empty:
                continue
            except (EOFError, OSError, BrokenPipeError):  # the manager went away at shutdown
                return

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.pairs.close()
        self.videos.close()


def run_extract(jobs: Sequence[VideoJob], cfg: ExtractConfig, *, retry_failed: bool = False,
                show_progress: bool = True, log: Callable[[str], None] = print,
                executor: str = "local", executor_options: dict | None = None) -> ExtractSummary:
    """Extract ``jobs`` into the store ``cfg.out`` (created or resumed).

    ``executor_options`` are keyword options of the executor (e.g. ``ray_address`` for ``ray``).
    """
    from ..flow import build_flow

    executor_class = find_executor(executor)
    executor_options = {k: v for k, v in (executor_options or {}).items() if v is not None}
    executor_class.check(executor_options)  # before any work: unknown options, a missing package
    out = Path(cfg.out)
    check_devices(cfg.devices or [cfg.device])
    summary = ExtractSummary(planned=len(jobs))
    # Built once here: validates method/params/checkpoint before any work (and before the store
    # directory is created), and describes the manifest.
    description = build_flow(cfg.method, engine=cfg.engine, device=cfg.device,
                             params=dict(cfg.flow_params), **dict(cfg.flow_options)).describe()
    check_writable(out)
    t0 = time.perf_counter()
    store = None
    try:
        with stop_on_signals() as signals, StoreLock(out):
            try:
                store = StoreWriter(out, cfg.settings(description))
            except OSError as exc:
                raise StoreWriteError(describe_os_error(exc, f"the store {out}")) from exc
            todo = choose_todo(jobs, store, retry_failed, summary)
            for change in summary.changed_sources:
                log(f"warning: {change['id']}: its source {change['source']} changed since it was extracted "
                    f"({change['change']}); the committed video is kept (extract into a new --out to redo it)")
            n_workers = min(cfg.n_workers, max(1, len(todo)))
            try:
                with executor_class(cfg, n_workers, uuid.uuid4().hex, **executor_options) as pool, \
                        Progress(len(todo), pool.progress, show_progress) as progress:
                    try:
                        for result in pool.results(todo):
                            with signals.deferred():  # a signal waits until the video is committed
                                commit_result(store, result, summary)
                            progress.videos.update(1)
                            if pool.status():
                                progress.videos.set_postfix_str(pool.status(), refresh=False)
                    except StopRequested:
                        pool.stop()
                        raise
            except WorkerDiedError as exc:
                raise WorkerDiedError(f"{exc.message}; the {summary.ok} video(s) committed so far are safe: "
                                      "rerun the same command to continue") from None
            finally:
                try:
                    with signals.deferred():
                        store.checkpoint()
                except OSError as exc:  # the commit log still holds every committed video
                    log(f"warning: could not checkpoint the store's catalog ({exc}); commits.jsonl keeps the commits")
            wanted = {j.id for j in jobs}
            summary.failures = [f for f in store.failures() if f["id"] in wanted]
    except StopRequested as exc:  # workers stopped, commits kept, manifest checkpointed
        raise exc.stopped(len(store) if store is not None else 0) from None
    summary.seconds = time.perf_counter() - t0
    return summary
