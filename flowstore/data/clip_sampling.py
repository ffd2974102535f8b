"""Clip sampling for video (3D) backbones, with the meaning of mmaction2's ``SampleFrames``.

A *clip* is ``clip_len`` items (frames, or flows: flow ``t`` is frame ``t -> t + stride``) taken
every ``frame_interval`` items from a clip offset ``o``: indices ``o, o + i, ..., o + (clip_len-1) i``.
A video gives ``num_clips`` clips. Everything is 0-based store indices; ``count`` is the number
of items (frames for rgb, flows for flow). This follows
``mmaction/datasets/transforms/loading.py:SampleFrames`` (mmaction2 1.x) with its defaults
``keep_tail_frames=False``, ``temporal_jitter=False``, ``twice_sample=False``, including its
two span conventions:

Training (random offsets), with ``span = clip_len * frame_interval`` and
``avg = (count - span + 1) // num_clips``:

* ``avg > 0``: clip ``k`` starts at ``k * avg + u_k``, ``u_k`` uniform in ``0 .. avg-1``
  (one random offset inside each of ``num_clips`` equal parts);
* else, if ``count > max(num_clips, span)``: ``num_clips`` offsets uniform in
  ``0 .. count - span``, sorted;
* else, if ``avg == 0``: ``round(k * (count - span + 1) / num_clips)`` (numpy's round);
* else (the video is shorter than the span minus one): every offset is 0.

Testing (evenly spread, deterministic), with ``span = (clip_len - 1) * frame_interval + 1``
(the clip's true extent) and ``max_offset = max(count - span, 0)``:

* ``num_clips = 1``: ``max_offset // 2`` (the centre clip);
* ``num_clips = n > 1``: ``round(k * max_offset / (n - 1))`` for ``k = 0 .. n-1`` (numpy's
  round, half to even): the first clip starts the video, the last one ends it.

Short videos (an index ``>= count``): mmaction2's default ``out_of_bound_opt="loop"`` wraps
the index, ``i mod count``; ``"repeat_last"`` repeats the clip's last valid index instead.
So a 5-frame video sampled with ``clip_len=4, frame_interval=2`` in testing has
``max_offset = 0`` and the clip ``0, 2, 4, 6 -> 0, 2, 4, 1`` (loop) or ``0, 2, 4, 4``
(repeat_last).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError

OUT_OF_BOUND = ("loop", "repeat_last")


def _check(count: int, clip_len: int, frame_interval: int, num_clips: int) -> None:
    if count < 1:
        raise InputError(f"cannot sample clips from {count} items")
    if clip_len < 1 or frame_interval < 1 or num_clips < 1:
        raise InputError(f"clip_len, frame_interval and num_clips must be >= 1, got "
                         f"{clip_len}, {frame_interval}, {num_clips}")


def clip_offsets(count: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1, *, train: bool,
                 rng: np.random.Generator | None = None) -> np.ndarray:
    """The ``num_clips`` clip offsets (int64, shape ``(num_clips,)``); see the module docstring."""
    _check(count, clip_len, frame_interval, num_clips)
    n = int(num_clips)
    if not train:
        max_offset = max(count - ((clip_len - 1) * frame_interval + 1), 0)
        if n == 1:
            return np.array([max_offset // 2], dtype=np.int64)
        return np.round(np.arange(n) * (max_offset / float(n - 1))).astype(np.int64)
    if rng is None:
        raise InputError("training-mode sampling needs a numpy Generator (rng)")
    span = clip_len * frame_interval
    avg = (count - span + 1) // n
    if avg > 0:
        return np.arange(n, dtype=np.int64) * avg + rng.integers(avg, size=n).astype(np.int64)
    if count > max(n, span):
        return np.sort(rng.integers(count - span + 1, size=n)).astype(np.int64)
    if avg == 0:
        return np.around(np.arange(n) * ((count - span + 1.0) / n)).astype(np.int64)
    return np.zeros(n, dtype=np.int64)


def clip_indices(offsets, clip_len: int, frame_interval: int, count: int,
                 out_of_bound: str = "loop") -> np.ndarray:
    """``(num_clips, clip_len)`` item indices ``offset + i * frame_interval``, out-of-range
    ones looped (``i mod count``) or replaced by the clip's last valid index."""
    if out_of_bound not in OUT_OF_BOUND:
        raise InputError(f"unknown out_of_bound {out_of_bound!r}; choose from {list(OUT_OF_BOUND)}")
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1)
    idx = offsets[:, None] + np.arange(clip_len, dtype=np.int64)[None, :] * int(frame_interval)
    if out_of_bound == "loop":
        return np.mod(idx, count)
    safe = idx < count
    last = np.max(np.where(safe, idx, 0), axis=1, keepdims=True)
    return np.where(safe, idx, last)


def sample_clips(count: int, clip_len: int, frame_interval: int = 1, num_clips: int = 1, *, train: bool,
                 rng: np.random.Generator | None = None, out_of_bound: str = "loop") -> np.ndarray:
    """:func:`clip_offsets` then :func:`clip_indices`: the ``(num_clips, clip_len)`` indices."""
    offsets = clip_offsets(count, clip_len, frame_interval, num_clips, train=train, rng=rng)
    return clip_indices(offsets, clip_len, frame_interval, count, out_of_bound)


__all__ = ["OUT_OF_BOUND", "clip_indices", "clip_offsets", "sample_clips"]
