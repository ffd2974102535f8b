"""Reading ahead: the records of upcoming samples are read on background threads while the
current one is decoded, and a batch's :class:`Lookahead` names the worker's next batch so its
reads overlap this one's decoding too (a cold page cache then costs little more than a warm one).

Both sides mostly run without the GIL: cv2.imdecode releases it, and py-lmdb faults record pages
in with it released. A sample here is a plan (:class:`~flowstore.data.clips.SamplePlan`:
``index``, ``video``, ``starts``); :class:`ReadAhead` reads it with its subclass's
``fetch(video, starts)``.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class Lookahead(tuple):
    """Appended to a batch's keys by :class:`~flowstore.data.loader.StoreLoader`: the keys of
    the batch the same worker receives next, so the worker reads its records while decoding this
    batch (without it, every batch would start with an unhidden read). A wrong guess only costs
    the read."""


class LookaheadBatches:
    """A batch sampler's batches, each followed by a :class:`Lookahead` of batch ``b + workers``:
    with ``in_order`` (the default) a DataLoader hands batch ``b`` of an epoch to worker
    ``b % workers``."""

    def __init__(self, batches, workers: int):
        self.batches, self.workers = batches, int(workers)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        batches = [list(b) for b in self.batches]
        for b, keys in enumerate(batches):
            nxt = b + self.workers
            yield keys + [Lookahead(batches[nxt])] if nxt < len(batches) else keys


def fetch_key(plan) -> tuple:
    """What identifies a plan's records: its sample, video and snippet starts."""
    return plan.index, plan.video, np.asarray(plan.starts, np.int64).tobytes()


class ReadAhead:
    """Base of the datasets: reads plans' records with ``self.fetch(video, starts)`` on
    ``read_threads`` background threads, up to ``read_ahead`` samples ahead (0: in the calling
    thread, no read-ahead). The thread pool is made per process (threads do not survive a
    fork) and is not pickled."""

    def __init__(self, read_ahead: int = 8, read_threads: int = 2):
        self.read_ahead = int(read_ahead)
        self.read_threads = max(1, int(read_threads))
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = None
        self._early: dict = {}  # records read ahead for the next batch: fetch key -> future

    def fetch(self, video: str, starts: np.ndarray) -> dict:
        raise NotImplementedError

    def fetched(self, plans, ahead=()) -> Iterator[tuple]:
        """``(plan, records)`` in order, the records read ahead while the caller works on the
        previous ones.

        ``ahead``: plans of the batch this worker gets next (see :class:`Lookahead`); their
        records are read once every record of ``plans`` is queued, and used by the next call."""
        plans = iter(plans)
        if self.read_ahead <= 0:
            for p in plans:
                yield p, self.fetch(p.video, p.starts)
            return
        pool = self._reader_pool()
        early, self._early = self._early, {}
        ahead = list(ahead)

        def start(p):
            fut = early.pop(fetch_key(p), None)
            return fut if fut is not None else pool.submit(self.fetch, p.video, p.starts)

        def start_ahead():  # queued behind this batch's own reads
            for p in ahead:
                self._early[fetch_key(p)] = pool.submit(self.fetch, p.video, p.starts)
            ahead.clear()

        pending: deque = deque()
        for p in plans:
            pending.append((p, start(p)))
            if len(pending) > self.read_ahead:
                break
        else:
            start_ahead()
        try:
            while pending:
                p, fut = pending.popleft()
                nxt = next(plans, None)
                if nxt is not None:
                    pending.append((nxt, start(nxt)))
                elif ahead:
                    start_ahead()
                yield p, fut.result()
        finally:
            for fut in early.values():  # read ahead for a batch that went elsewhere: drop
                fut.cancel()

    def _reader_pool(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():  # threads do not survive a fork
            self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="flowstore-read")
            self._pool_pid = os.getpid()
            self._early = {}
        return self._pool

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_early"] = {}
        return state


__all__ = ["Lookahead", "LookaheadBatches", "ReadAhead", "fetch_key"]
