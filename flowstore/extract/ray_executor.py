"""The Ray executor: one long-lived Ray actor per worker slot runs the same worker code as a local
process (:func:`~.worker.extract_video`: its own flow engine, its own shards) and returns entries;
the driver commits them. Ray is imported only when this executor is used.

:class:`ActorPool` is the part shared with ``flowstore features --executor ray``: it keeps a
bounded number of jobs in flight per actor, re-runs the jobs of an actor that died (Ray restarts
the actor in a new process, on any node with room), and gives up on a job that killed its worker
``max_retries`` times, naming the signal when the worker's fault handler saw one.
"""
from __future__ import annotations

import collections
import dataclasses
import faulthandler
import os
import queue
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..errors import EnvironmentProblem, FlowstoreError, InputError, WorkerDiedError
from .config import ExtractConfig
from .executor import Executor
from .plan import VideoJob
from .worker import VideoResult, extract_video, worker_state

INSTALL_HINT = "the ray executor needs Ray: pip install 'flowstore[ray]' (ray 2.60)"
#: a worker that dies leaves the fatal signal here (faulthandler); the driver reads and deletes it
CRASH_PREFIX = ".worker-crash-"
#: faulthandler's words -> signal names
_FATAL = {"Segmentation fault": "SIGSEGV", "Aborted": "SIGABRT", "Bus error": "SIGBUS",
          "Floating point exception": "SIGFPE", "Illegal instruction": "SIGILL"}
NO_WORKER_TIMEOUT = 300.0  # seconds with no live worker before the run gives up


def import_ray():
    try:
        import ray
    except ImportError:
        raise EnvironmentProblem(INSTALL_HINT) from None
    return ray


def connect(address: str | None, num_cpus: int | None, log: Callable[[str], None] = lambda m: None) -> bool:
    """Connect this driver to Ray; ``True`` if this call did (and :func:`disconnect` should undo it).

    ``address`` None: a running cluster (``auto``), else a local one with ``num_cpus``;
    ``"local"``: always a new local one; anything else: that cluster.
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    common = dict(include_dashboard=False, log_to_driver=False, configure_logging=False)
    if address in (None, "auto"):
        try:
            ray.init(address="auto", **common)
            return True
        except ConnectionError:
            if address == "auto":
                raise EnvironmentProblem("--ray-address auto: no running Ray cluster found "
                                         "(start one with `ray start --head`)") from None
        address = "local"
    if address == "local":
        # Ray runs its workers at niceness 15, so on a busy machine they lose the CPU to everything
        # else (Farneback at 0.41x the local executor's speed, measured); a local Ray gets 0
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=num_cpus, **common)
    else:
        try:
            ray.init(address=address, **common)
        except ConnectionError as exc:
            raise EnvironmentProblem(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return True


def crash_reason(crash_file: str | None, error: BaseException | None = None) -> str:
    """What killed a worker: the signal its fault handler wrote, else what Ray says."""
    text = ""
    if crash_file:
        try:
            text = Path(crash_file).read_text(errors="replace")
        except OSError:
            pass
    for words, name in _FATAL.items():
        if f"Fatal Python error: {words}" in text:
            return name
    message = str(error or "")
    if "memory" in message.lower():
        return "out of memory"
    if "node" in message.lower() and ("died" in message.lower() or "dead" in message.lower()):
        return "its node was lost"
    return "killed without a Python error (SIGKILL, e.g. the out-of-memory killer, or its node was lost)"


class WorkerActor:
    """The body of one worker slot's actor (wrapped with ``ray.remote`` at run time).

    ``setup`` is called once in the actor process (load the engine); ``call(job)`` runs one job.
    A fault handler writes a fatal signal into ``crash_dir`` so the driver can name it.
    """

    def __init__(self, setup: Callable[[], object], call: Callable, crash_dir: str, modules: Sequence[str] = ()):
        import importlib

        for module in modules:  # registrations (decoders, flow methods) the job needs
            importlib.import_module(module)
        self.crash_file = os.path.join(crash_dir, f"{CRASH_PREFIX}{socket.gethostname()}-{os.getpid()}")
        self._crash = open(self.crash_file, "w")
        faulthandler.enable(self._crash)
        self.state = setup()
        self.call_fn = call

    def ready(self) -> dict:
        return {"pid": os.getpid(), "host": socket.gethostname(), "crash_file": self.crash_file}

    def call(self, job):
        return self.call_fn(self.state, job)


@dataclasses.dataclass
class _Slot:
    actor: object
    ready_ref: object = None          # pending until the (re)started actor answers
    info: dict | None = None
    in_flight: collections.deque = dataclasses.field(default_factory=collections.deque)  # (ref, job)


class ActorPool:
    """``n`` actors running ``call(state, job)``; :meth:`run` yields ``(job, result)`` as they finish
    and ``(job, WorkerDied(reason))`` for a job that killed ``max_retries`` workers."""

    def __init__(self, n: int, setup: Callable, call: Callable, *, crash_dir: str, modules: Sequence[str] = (),
                 num_cpus: float = 1, num_gpus: float = 0, in_flight: int = 2, max_retries: int = 3):
        ray = import_ray()
        self.ray, self.crash_dir = ray, crash_dir
        self.max_retries, self.per_actor = max_retries, max(1, in_flight)
        remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=-1, max_task_retries=0)(WorkerActor)
        # held here for the whole run: a restarted actor is built again from these
        self._args = [ray.put(a) for a in (setup, call, crash_dir, tuple(modules))]
        self.slots = []
        for _ in range(n):
            actor = remote.remote(*self._args)
            self.slots.append(_Slot(actor, actor.ready.remote()))
        self.deaths: collections.Counter = collections.Counter()

    @property
    def alive(self) -> int:
        return sum(1 for s in self.slots if s.info is not None)

    def pids(self) -> list[int]:
        return [s.info["pid"] for s in self.slots if s.info is not None]

    def run(self, jobs: Sequence, key: Callable = lambda job: job) -> Iterator[tuple]:
        ray = self.ray
        todo = collections.deque(jobs)
        last_alive = time.monotonic()
        while todo or any(s.in_flight for s in self.slots):
            for slot in self.slots:
                while slot.info is not None and todo and len(slot.in_flight) < self.per_actor:
                    job = todo.popleft()
                    slot.in_flight.append((slot.actor.call.remote(job), job))
            refs = {}
            for slot in self.slots:
                if slot.ready_ref is not None:
                    refs[slot.ready_ref] = (slot, None)
                for ref, job in slot.in_flight:
                    refs[ref] = (slot, job)
            if self.alive:
                last_alive = time.monotonic()
            elif time.monotonic() - last_alive > NO_WORKER_TIMEOUT:
                raise WorkerDiedError(f"no Ray worker has been alive for {NO_WORKER_TIMEOUT:.0f} s; "
                                      "check the cluster (`ray status`)")
            done, _ = ray.wait(list(refs), num_returns=1, timeout=1.0)
            for ref in done:
                slot, job = refs[ref]
                if job is None:
                    try:
                        slot.info, slot.ready_ref = ray.get(ref), None
                    except ray.exceptions.RayActorError as exc:
                        if getattr(exc, "actor_init_failed", False):  # its setup raised: it never will start
                            raise WorkerDiedError(f"a Ray worker could not start: {_cause(exc)}") from None
                        time.sleep(0.2)
                        slot.ready_ref = slot.actor.ready.remote()  # still restarting
                    continue
                yield from self._finished(slot, todo, key)  # in order: a later answer waits for its elders

    def _finished(self, slot: _Slot, todo: collections.deque, key: Callable) -> Iterator[tuple]:
        """Take the finished jobs at the head of ``slot``; on a dead actor, charge its running job."""
        ray = self.ray
        while slot.in_flight:
            ref, job = slot.in_flight[0]
            ready, _ = ray.wait([ref], timeout=0)
            if not ready:
                return
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                yield from self._died(slot, todo, key, exc)
                return
            except ray.exceptions.RayTaskError as exc:  # e.g. StoreWriteError: stops the run, as locally
                cause = getattr(exc, "cause", None)
                if isinstance(cause, FlowstoreError):
                    raise cause from None
                raise
            slot.in_flight.popleft()
            yield job, result

    def _died(self, slot: _Slot, todo: collections.deque, key: Callable, exc) -> Iterator[tuple]:
        # actor tasks run in order: the oldest unfinished one was running when the actor died
        crash_file = (slot.info or {}).get("crash_file")
        reason = crash_reason(crash_file, exc)
        if crash_file:
            try:
                os.unlink(crash_file)
            except OSError:
                pass
        _, culprit = slot.in_flight.popleft()
        rest = [job for _, job in slot.in_flight]
        slot.in_flight.clear()
        slot.info, slot.ready_ref = None, slot.actor.ready.remote()
        todo.extendleft(reversed(rest))
        self.deaths[key(culprit)] += 1
        n = self.deaths[key(culprit)]
        if n >= self.max_retries:
            yield culprit, WorkerDied(f"worker died {n} time{'s' if n > 1 else ''} on this video: {reason}")
        else:
            todo.appendleft(culprit)

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor)
            except Exception:
                pass
        for crash in Path(self.crash_dir).glob(f"{CRASH_PREFIX}*"):
            try:
                crash.unlink()
            except OSError:
                pass


def _cause(exc: BaseException) -> str:
    """One line of what a Ray error wraps."""
    text = str(getattr(exc, "cause", None) or getattr(exc, "error_msg", None) or exc)
    return " ".join(text.split())[:300]


@dataclasses.dataclass
class WorkerDied:
    reason: str


class PairCounter:
    """A tiny actor the workers add pairs to; :class:`CounterQueue` makes it look like a queue."""

    def __init__(self):
        self.n = 0

    def add(self, n: int) -> None:
        self.n += n

    def take(self) -> int:
        n, self.n = self.n, 0
        return n


class CounterQueue:
    """The ``get(timeout)`` / ``empty()`` of a queue over a :class:`PairCounter` (for Progress)."""

    def __init__(self, ray, counter):
        self.ray, self.counter = ray, counter

    def get(self, timeout: float = 0.2) -> int:
        time.sleep(timeout)
        try:
            n = self.ray.get(self.counter.take.remote(), timeout=5)
        except Exception:
            raise queue.Empty from None
        if not n:
            raise queue.Empty
        return n

    def empty(self) -> bool:
        return True


class _Reporter:
    """Pairs done, sent to the driver's counter at most every half second (fire and forget)."""

    def __init__(self, counter):
        self.counter, self.pending, self.last = counter, 0, time.monotonic()

    def put(self, n: int) -> None:
        self.pending += n
        if time.monotonic() - self.last > 0.5:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.counter.add.remote(self.pending)
        self.pending, self.last = 0, time.monotonic()


def probe_storage(ray, store: Path) -> None:
    """Every alive node writes a probe into ``store`` and reads the driver's: the same storage
    at the same path. A node that cannot is named in an :class:`EnvironmentProblem`."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    mine = store / f".write-test-driver-{token}"
    mine.write_text(token)

    def check(path: str, token: str) -> str | None:
        host = socket.gethostname()
        try:
            if Path(path, f".write-test-driver-{token}").read_text() != token:
                return f"sees another {path} than the driver (not the same shared storage)"
            probe = Path(path, f".write-test-{host}-{os.getpid()}")
            probe.write_text(token)
            ok = probe.read_text() == token
            probe.unlink()
            return None if ok else "reads back another probe than it wrote"
        except OSError as exc:
            return f"cannot write and read a probe in {path}: {exc.strerror or exc}"

    remote = ray.remote(num_cpus=0)(check)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [remote.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(store), token) for n in nodes]
        answers = []
        for ref in refs:
            try:
                answers.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                answers.append(f"could not run the storage probe: {_cause(exc)}")
    finally:
        mine.unlink()
    bad = [f"node {n['NodeManagerAddress']} ({n['NodeID'][:12]}) {a}" for n, a in zip(nodes, answers) if a]
    if bad:
        raise EnvironmentProblem("the store must be on storage every Ray node mounts at the same path "
                                 "(docs/cluster.md):\n  " + "\n  ".join(bad))


def workers_that_fit(ray, cpus: float, gpus: float) -> int:
    """How many actors of ``cpus`` and ``gpus`` each the cluster has room for (at least 1)."""
    res = ray.cluster_resources()
    fits = [res.get("CPU", 1) / cpus] if cpus else []
    fits += [res.get("GPU", 0) / gpus] if gpus else []
    return max(1, int(min(fits or [1])))


def worker_modules(cfg: ExtractConfig) -> list[str]:
    """Modules outside flowstore whose import registers the decoder the job uses."""
    from ..decode import DECODERS

    entry = DECODERS[cfg.decoder]
    module = entry.partition(":")[0] if isinstance(entry, str) else getattr(entry, "__module__", "")
    return [module] if module and not module.startswith("flowstore.") else []


def _extract_setup(cfg: ExtractConfig, run_token: str, counter):
    worker_state(cfg, run_token)  # the engine, loaded once per actor
    return cfg, run_token, _Reporter(counter)


def _extract_call(state, job: VideoJob) -> VideoResult:
    cfg, run_token, reporter = state
    result = extract_video(job, cfg, run_token, reporter)
    reporter.flush()
    return result


class RayExecutor(Executor):
    """Ray actors, one per worker slot, on a running cluster or a local one."""

    name = "ray"
    OPTIONS = ("ray_address", "gpus_per_worker", "cpus_per_worker", "max_retries", "in_flight")

    @classmethod
    def check(cls, options: dict) -> None:
        super().check(options)
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise EnvironmentProblem(INSTALL_HINT)

    def __init__(self, cfg: ExtractConfig, n_workers: int, run_token: str, *, ray_address: str | None = None,
                 gpus_per_worker: float = 0, cpus_per_worker: float = 1, max_retries: int = 3, in_flight: int = 2):
        super().__init__(cfg, n_workers, run_token)
        if cpus_per_worker < 0 or gpus_per_worker < 0:
            raise InputError("--cpus-per-worker and --gpus-per-worker must be >= 0")
        if max_retries < 1:
            raise InputError(f"--max-retries must be >= 1, got {max_retries}")
        self.address, self.gpus, self.cpus = ray_address, gpus_per_worker, cpus_per_worker
        self.max_retries, self.in_flight = max_retries, in_flight
        self.startup_seconds = 0.0

    def __enter__(self) -> "RayExecutor":
        start = time.perf_counter()
        self.ray = import_ray()
        self._connected = connect(self.address, max(1, int(self.n_workers * max(self.cpus, 1))))
        try:
            probe_storage(self.ray, Path(self.cfg.out))
            self._counter = self.ray.remote(num_cpus=0)(PairCounter).remote()
            self.progress = CounterQueue(self.ray, self._counter)
        except BaseException:
            self._disconnect()
            raise
        self.pool = None
        self.startup_seconds = time.perf_counter() - start
        return self

    def _workers_for(self, n_jobs: int) -> int:
        if self.cfg.workers > 0 or len(self.cfg.devices) > 1:
            return self.n_workers
        return min(workers_that_fit(self.ray, self.cpus, self.gpus), n_jobs)

    def _disconnect(self) -> None:
        if self._connected:
            self.ray.shutdown()

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.close()
        self._disconnect()

    def status(self) -> str:
        return f"{self.pool.alive}/{len(self.pool.slots)} workers alive" if self.pool else ""

    def stop(self) -> None:
        """Kill the actors now (a signal reached the driver); their videos stay uncommitted."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def results(self, jobs: Sequence[VideoJob]) -> Iterator[VideoResult]:
        self.n_workers = self._workers_for(len(jobs))
        self.pool = ActorPool(self.n_workers, _bind(_extract_setup, self.cfg, self.run_token, self._counter),
                              _extract_call, crash_dir=str(self.cfg.out), modules=worker_modules(self.cfg),
                              num_cpus=self.cpus, num_gpus=self.gpus, in_flight=self.in_flight,
                              max_retries=self.max_retries)
        for job, result in self.pool.run(jobs, key=lambda j: j.id):
            if isinstance(result, WorkerDied):
                result = VideoResult(job.id, job.path, reason=result.reason)
            yield result


def _bind(fn, *args):
    """``fn`` with ``args`` bound, picklable by reference (a module-level function)."""
    import functools

    return functools.partial(fn, *args)
