"""Small helpers shared by test modules."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import flowstore
from flowstore.store.records import record_counts

REPO = Path(__file__).resolve().parents[1]


def flowstore_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "flowstore", *args]


def run_cli(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(flowstore_cmd(*args), capture_output=True, text=True, timeout=timeout, env=env, **kwargs)


def all_records(store_path) -> dict:
    """Every committed record's payload, keyed by (video, kind, index): the store's content."""
    out = {}
    with flowstore.open_store(store_path, check=True) as reader:
        for vid in reader.videos:
            shard = reader._shard(vid)
            for kind, n in record_counts(reader.entry(vid), reader.quant.scheme, reader.directions):
                for i in range(n):
                    out[(vid, kind, i)] = shard.get(vid, kind, i, check=True)
    return out


def small_store(out, videos: dict, *, size=(64, 48), **settings):
    """A store at ``out`` extracted (farneback, one worker) from ``videos``: id -> video path."""
    from flowstore.decode import FrameResize
    from flowstore.extract import ExtractConfig, VideoJob, run_extract

    cfg = ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=size), workers=1, **settings)
    summary = run_extract([VideoJob(k, str(v)) for k, v in videos.items()], cfg, show_progress=False)
    assert summary.ok == len(videos) and not summary.failures, summary.failures
    return out
