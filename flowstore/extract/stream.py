"""The per-video stream: decoded frames -> flow -> records, with decoding, flow and encoding
overlapping on three threads."""
from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

import numpy as np

from ..errors import InputError
from ..store.format import FORWARD, MAX_RECORDS_PER_VIDEO, RGB
from ..store.records import Record, flow_records, frame_records
from .config import ExtractConfig

#: encoded-but-unwritten frames/flows in flight; bounds memory while encoding overlaps flow
ENCODE_QUEUE_DEPTH = 8


class NonFiniteFlowError(InputError):
    """The flow engine returned NaN or inf: the video fails, nothing of it is stored."""


def check_finite(flows: np.ndarray, first: int, estimator) -> None:
    """Once per flow batch: NaN/inf would quantize to arbitrary values (or 0) silently."""
    if not np.isfinite(flows).all():
        bad = [first + k for k in range(len(flows)) if not np.isfinite(flows[k]).all()]
        raise NonFiniteFlowError(
            f"the {estimator.method or 'flow'} engine ({estimator.engine or '?'}) returned non-finite values "
            f"(NaN or inf) for flow(s) {bad[:5]}{' ...' if len(bad) > 5 else ''}; "
            + ("check the checkpoint (--ckpt) and --fp16" if estimator.engine == "ptlflow" else "check --param values"))


@dataclasses.dataclass
class VideoStats:
    num_frames: int = 0
    num_flows: int = 0
    width: int = 0
    height: int = 0
    flow_seconds: float = 0.0  # time inside the flow engine: how busy the device was kept


def prefetch(iterator: Iterable, depth: int = 4):
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


def encode_records(kind: str, index: int, array: np.ndarray, cfg: ExtractConfig) -> list[Record]:
    """One frame (``kind == "rgb"``) or flow (``kind`` its direction) into its records (runs in
    the encoder thread)."""
    if kind == RGB:
        return frame_records(index, array, cfg.frame_codec, cfg.frame_quality)
    return flow_records(index, array, cfg.quant, cfg.flow_codec, cfg.flow_quality, direction=kind)


def compute_video_records(frames: Iterable[np.ndarray], estimator, cfg: ExtractConfig, put: Callable,
                          progress: Callable[[int], None] | None = None) -> VideoStats:
    """Stream frames -> records through ``put(kind, index, payload)``.

    Three stages overlap: decoding (the ``frames`` iterator, a background thread in
    :func:`~flowstore.extract.worker.extract_video`), flow on this thread, and quantize + encode
    on an encoder thread (OpenCV and numpy release the GIL). ``put`` is always called from this
    thread, in submission order, so records are written deterministically and LMDB
    transactions stay on the thread that opened them. Memory stays bounded: at most
    ``stride + batch_size`` prepared frames and ``ENCODE_QUEUE_DEPTH`` frames/flows in flight.
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
        in_flight.append(encoder.submit(encode_records, kind, index, array, cfg))
        write_done(ENCODE_QUEUE_DEPTH)

    def flush() -> None:
        nonlocal n_flows, flow_seconds
        if not prev_batch:
            return
        for direction in cfg.directions:
            # backward flow i (frame i + stride -> frame i): the same engine on the swapped
            # pairs, i.e. the batch's first and second frames exchanged, never -forward
            pairs = (prev_batch, next_batch) if direction == FORWARD else (next_batch, prev_batch)
            start = time.perf_counter()
            flows = estimator.compute(*pairs)
            flow_seconds += time.perf_counter() - start
            check_finite(flows, n_flows, estimator)
            for k, flow in enumerate(flows):
                submit(direction, n_flows + k, flow)
        n_flows += len(prev_batch)
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
