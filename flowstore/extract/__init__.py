"""``flowstore extract``: plan jobs, run workers, commit videos, resume, record failures.

The per-video data path is straight and each stage is a function of its own module::

    decode.iter_frames -> flow estimator -> store.records (quantize + encode) -> ShardWriter.put

One job a module:

* :mod:`.plan`      inputs -> :class:`VideoJob` s and their ids, checked before any work
* :mod:`.config`    :class:`ExtractConfig` and the manifest settings it implies
* :mod:`.stream`    one video's frames -> records, decode / flow / encode overlapping
* :mod:`.worker`    :func:`extract_video` in a worker: one video into the worker's own shard
* :mod:`.executor`  moving jobs to workers and results back (local joblib processes)
* :mod:`.run`       :func:`run_extract`: the lock, the todo list, progress, commits
"""
from .config import DEFAULT_SHARD_SIZE, ExtractConfig
from .executor import EXECUTORS, Executor, LocalExecutor, list_executors, register_executor
from .plan import PlanError, Skipped, VideoJob, plan_jobs, video_id
from .run import ExtractSummary, run_extract
from .stream import VideoStats, compute_video_records
from .worker import VideoResult, extract_video
from ..decode import VIDEO_EXTENSIONS
from ..errors import WorkerDiedError

__all__ = [
    "DEFAULT_SHARD_SIZE", "EXECUTORS", "ExtractConfig", "ExtractSummary", "Executor", "LocalExecutor", "PlanError", "Skipped",
    "VIDEO_EXTENSIONS", "VideoJob", "VideoResult", "VideoStats", "WorkerDiedError", "compute_video_records",
    "extract_video", "list_executors", "plan_jobs", "register_executor", "run_extract", "video_id",
]
