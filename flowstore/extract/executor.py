"""Executors move video jobs to workers and their results back; they never commit.

An :class:`Executor` is entered as a context (it starts and stops its workers), takes every
job through :meth:`Executor.results`, which yields each :class:`~.worker.VideoResult` as it
finishes, in any order, and raises :class:`~flowstore.errors.WorkerDiedError` when a worker
dies. Workers report pairs done on :attr:`Executor.progress` (drained by the progress bar).
Executors register by name in :data:`EXECUTORS`; ``LocalExecutor`` (joblib processes) is the
default, ``ray`` (:mod:`.ray_executor`, Ray actors on a cluster) is the other.
"""
from __future__ import annotations

import abc
import queue
from collections.abc import Iterator, Sequence

from ..errors import InputError, WorkerDiedError
from ..registry import Registry, resolve
from .config import ExtractConfig
from .plan import VideoJob
from .worker import VideoResult, extract_video

#: executor name -> class
EXECUTORS: Registry[type["Executor"]] = Registry("executor")


def register_executor(name: str):
    def wrap(cls):
        cls.name = name
        return EXECUTORS.register(name, cls)

    return wrap


def list_executors() -> list[str]:
    return EXECUTORS.names()


def executor_class(name: str) -> type["Executor"]:
    """The executor registered as ``name`` (a ``"module:Class"`` entry is imported now)."""
    return resolve(EXECUTORS[name])


class Executor(abc.ABC):
    name: str = ""
    #: keyword options of this executor (``run_extract(executor_options=...)``)
    OPTIONS: tuple[str, ...] = ()

    def __init__(self, cfg: ExtractConfig, n_workers: int, run_token: str):
        self.cfg, self.n_workers, self.run_token = cfg, n_workers, run_token
        #: a queue of ints (pairs done) that workers put and the progress bar drains
        self.progress = None

    @classmethod
    def check(cls, options: dict) -> None:
        """Refuse, before any work, options this executor does not take (or cannot use here)."""
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            raise InputError(f"{flags}: not an option of the {cls.name} executor"
                             + (" (choose --executor ray)" if cls.name == "local" else ""))

    def status(self) -> str:
        """A few words for the progress bar (e.g. workers alive); empty when there is nothing to say."""
        return ""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    @abc.abstractmethod
    def results(self, jobs: Sequence[VideoJob]) -> Iterator[VideoResult]:
        """Run ``jobs``; yield each result as it finishes."""

    def stop(self) -> None:
        """Stop every worker now (SIGTERM/SIGINT reached the driver): running jobs are
        abandoned uncommitted, :meth:`results` yields nothing more. Called before ``__exit__``;
        ``__exit__`` must still release what is left."""


@register_executor("local")
class LocalExecutor(Executor):
    """Worker processes on this machine (joblib/loky); one worker runs in this process."""

    def __enter__(self) -> "LocalExecutor":
        self._manager = None
        self.device_queue = None
        if self.n_workers > 1:
            import multiprocessing

            self._manager = multiprocessing.Manager()
            self.progress = self._manager.Queue()
            if len(self.cfg.devices) > 1:  # one device token per worker process
                self.device_queue = self._manager.Queue()
                for device in self.cfg.devices:
                    self.device_queue.put(device)
        else:
            self.progress = queue.Queue()
        import cv2

        self._caller_threads = cv2.getNumThreads()  # a one-worker run happens in this process
        return self

    def __exit__(self, *exc) -> None:
        import cv2

        cv2.setNumThreads(self._caller_threads)
        if self._manager is not None:
            self._manager.shutdown()

    def results(self, jobs: Sequence[VideoJob]) -> Iterator[VideoResult]:
        self._results = self._results_of(jobs)
        return self._results

    def stop(self) -> None:
        # closing joblib's generator aborts the Parallel call: loky terminates its workers
        # (kill_workers=True); a one-worker run stops in this process
        results = getattr(self, "_results", None)
        if results is not None:
            results.close()

    def _results_of(self, jobs: Sequence[VideoJob]) -> Iterator[VideoResult]:
        from joblib import Parallel, delayed
        from joblib.externals.loky.process_executor import TerminatedWorkerError

        try:
            yield from Parallel(n_jobs=self.n_workers, return_as="generator_unordered")(
                delayed(extract_video)(job, self.cfg, self.run_token, self.progress, self.device_queue)
                for job in jobs
            )
        except TerminatedWorkerError as exc:
            raise WorkerDiedError(
                f"a worker process died ({' '.join(str(exc).split())[:200]}); with --workers 1 the video "
                "that kills the process is the one shown by the progress bar"
            ) from None


# Ray is an optional extra: its module (which imports ray only when used) is named, not imported.
EXECUTORS.register("ray", "flowstore.extract.ray_executor:RayExecutor")
