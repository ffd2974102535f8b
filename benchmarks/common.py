"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import sys
from itertools import islice
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
CLIP = SHARED / "videos" / "test.mp4"


def clip_frames(count: int, width: int, height: int, clip: Path = CLIP) -> list[np.ndarray]:
    """The first ``count`` RGB frames of a shared clip at ``width`` x ``height`` (flowstore's decoder)."""
    from flowstore.decode import FrameResize, iter_frames

    frames = list(islice(iter_frames(clip, resize=FrameResize(size=(width, height))), count))
    if len(frames) < count:
        raise SystemExit(f"{clip} has only {len(frames)} frames; ask for at most that many")
    return frames
