"""``flowstore features --executor ray``: Ray actors, one per worker slot (e.g. one per GPU), each
holding its frozen backbone and reading the flow store (on shared storage); they return the
features of a few videos at a time and the driver appends them to the one feature store file
(:meth:`~.store.FeatureStore.append` commits each batch by raising its count), so readers see one
store and a rerun resumes. Dead actors and poison videos are handled as in extraction
(:class:`flowstore.extract.ray_executor.ActorPool`)."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

from ..errors import InputError
from ..extract.executor import executor_class
from ..extract.ray_executor import ActorPool, WorkerDied, connect, probe_storage, workers_that_fit

VIDEOS_PER_TASK = 4
OPTIONS = ("ray_address", "gpus_per_worker", "cpus_per_worker", "max_retries", "workers")


def check_executor(name: str, options: dict) -> None:
    if name != "ray":
        raise InputError(f"features run on the local machine or with --executor ray, not {name!r}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) of the ray executor: {unknown}")
    executor_class("ray").check({})  # Ray installed


def run_on_ray(todo, fs, cfg, reader, summary, show_progress, setup, call, *, signals=None, ray_address=None,
               gpus_per_worker=None, cpus_per_worker=None, max_retries=None, workers=None) -> None:
    """Compute ``todo`` on Ray actors built by ``setup(store_root, cfg, threads)`` that run
    ``call(state, videos)`` -> a list of :class:`~.extract.FeatureRows`; append each to ``fs``
    (whole appends only: a stop signal waits for the append in progress, ``signals``)."""
    from tqdm import tqdm

    from ..extract.ray_executor import import_ray

    ray = import_ray()
    cpus = 1 if cpus_per_worker is None else cpus_per_worker
    gpus = gpus_per_worker or 0
    chunks = [tuple(todo[i:i + VIDEOS_PER_TASK]) for i in range(0, len(todo), VIDEOS_PER_TASK)]
    connected = connect(ray_address, max(1, int((workers or 1) * max(cpus, 1))))
    try:
        crash_dir = Path(fs.path).resolve().parent
        probe_storage(ray, crash_dir)
        workers = workers or workers_that_fit(ray, cpus, gpus)
        pool = ActorPool(min(workers, len(chunks)), functools.partial(setup, str(reader.root), cfg, int(cpus) or 1),
                         call, crash_dir=str(crash_dir), num_cpus=cpus, num_gpus=gpus,
                         max_retries=max_retries or 3)
        bar = tqdm(total=len(todo), unit="video", desc=f"features {cfg.stream} (ray)", disable=not show_progress)
        failed = []
        try:
            for chunk, result in pool.run(chunks):
                if isinstance(result, WorkerDied):
                    failed.append((chunk, result.reason))
                    continue
                for rows in result:
                    with signals.deferred() if signals is not None else contextlib.nullcontext():
                        fs.append(*rows.columns())
                    summary.images += rows.images
                    summary.forward_calls += rows.forward_calls
                    summary.computed += len(rows.videos)
                bar.update(len(chunk))
                bar.set_postfix_str(f"{pool.alive}/{len(pool.slots)} workers alive", refresh=False)
        finally:
            bar.close()
            pool.close()
        if failed:
            from ..errors import WorkerDiedError

            raise WorkerDiedError("; ".join(f"videos {list(c)}: {r}" for c, r in failed)
                                  + "; the other videos are stored: rerun to retry these")
    finally:
        if connected:
            ray.shutdown()
