"""Which frames or flows a clip is made of: TSN segments, Simonyan–Zisserman stacks, single frames.

Everything here is pure index arithmetic on 0-based store indices (mmaction2's 1-based file
numbers appear only in :mod:`flowstore.data.rawframes`). A *snippet* is ``length`` consecutive
indices starting at ``start``; a clip is one or more snippets. With ``count`` items (frames or
flows) there are ``A = max(count - length + 1, 1)`` valid starts ``0 .. A-1``.

``tsn`` (Wang et al. 2016), K segments (default 3)
    The valid starts are split into K segments ``[floor(k*A/K), floor((k+1)*A/K))``.
    Training: one start drawn uniformly inside each segment (an empty segment, possible only
    when ``A < K``, gives its left boundary, clamped to ``A-1``). Testing: the centre of each
    segment, ``floor((k + 1/2) * A / K)``.
``stack`` (Simonyan & Zisserman 2014), L flows (default 10)
    One snippet of L consecutive flows (2L channels: x/y interleaved). Training: start uniform
    in ``0 .. A-1``; testing: ``floor(A / 2)``.
``frame``
    ``stack`` with ``length = 1``: a single frame (or flow) per clip.

Test-time views: N snippets evenly spaced over the valid starts, ``floor((j + 1/2) * A / N)``
for ``j = 0 .. N-1`` (the TSN test formula with N segments; N = 1 is the centre).

Videos shorter than a snippet (``count < length``) repeat their last item:
indices are clamped to ``count - 1``.
"""
from __future__ import annotations

import numpy as np
from ..errors import InputError

SAMPLINGS = ("tsn", "stack", "frame")
DEFAULT_SEGMENTS = 3
DEFAULT_STACK = 10  # L flows of a Simonyan–Zisserman stack
DEFAULT_TSN_FLOW_LENGTH = 5  # TSN's flow snippets are 5 flows (10 channels)
DEFAULT_TEST_VIEWS = 25  # TSN / two-stream testing: 25 evenly spaced snippets


def check_sampling(name: str) -> str:
    if name not in SAMPLINGS:
        raise InputError(f"unknown sampling {name!r}; choose from {list(SAMPLINGS)}")
    return name


def default_length(sampling: str, modality: str) -> int:
    """Snippet length when none is given: tsn 1 frame / 5 flows, stack 10, frame 1."""
    check_sampling(sampling)
    if sampling == "stack":
        return DEFAULT_STACK
    if sampling == "tsn" and modality != "rgb":
        return DEFAULT_TSN_FLOW_LENGTH
    return 1


def _valid_starts(count: int, length: int) -> int:
    if count < 1:
        raise InputError(f"cannot sample from {count} items")
    if length < 1:
        raise InputError(f"snippet length must be >= 1, got {length}")
    return max(count - length + 1, 1)


def tsn_starts(count: int, num_segments: int = DEFAULT_SEGMENTS, length: int = 1, *,
               train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Start of each of ``num_segments`` TSN snippets (int64, shape ``(K,)``)."""
    if num_segments < 1:
        raise InputError(f"num_segments must be >= 1, got {num_segments}")
    a = _valid_starts(count, length)
    if not train:
        return evenly_spaced_starts(count, num_segments, length)
    if rng is None:
        raise InputError("training-mode sampling needs a numpy Generator (rng)")
    k = np.arange(num_segments, dtype=np.int64)
    lo = (k * a) // num_segments
    hi = ((k + 1) * a) // num_segments  # exclusive
    width = np.maximum(hi - lo, 1)
    starts = lo + (rng.random(num_segments) * width).astype(np.int64)
    return np.minimum(starts, a - 1)


def stack_start(count: int, length: int = DEFAULT_STACK, *, train: bool,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """Start of one stack (int64, shape ``(1,)``): uniform in training, the centre in testing."""
    a = _valid_starts(count, length)
    if not train:
        return np.array([a // 2], dtype=np.int64)
    if rng is None:
        raise InputError("training-mode sampling needs a numpy Generator (rng)")
    return np.array([int(rng.integers(a))], dtype=np.int64)


def evenly_spaced_starts(count: int, num: int = DEFAULT_TEST_VIEWS, length: int = 1) -> np.ndarray:
    """``num`` test-time snippet starts ``floor((j + 1/2) * A / num)`` (int64, shape ``(num,)``)."""
    if num < 1:
        raise InputError(f"number of views must be >= 1, got {num}")
    a = _valid_starts(count, length)
    j = np.arange(num, dtype=np.int64)
    return ((2 * j + 1) * a) // (2 * num)


def snippet_indices(starts, length: int, count: int) -> np.ndarray:
    """``(S, length)`` indices ``start + 0 .. length-1``, clamped to ``count - 1``."""
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    idx = starts[:, None] + np.arange(length, dtype=np.int64)[None, :]
    return np.minimum(idx, count - 1)


def sample_starts(sampling: str, count: int, *, length: int, train: bool,
                  num_segments: int = DEFAULT_SEGMENTS, test_views: int | None = None,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """Snippet starts of one clip for any sampling mode.

    Training: ``tsn`` gives K starts, ``stack``/``frame`` one. Testing: ``test_views`` evenly
    spaced starts if given, else the K segment centres (tsn) or the single centre (stack/frame).
    """
    check_sampling(sampling)
    if sampling == "frame" and length != 1:
        raise InputError(f"frame sampling has length 1, got {length}")
    if not train:
        n = test_views if test_views is not None else (num_segments if sampling == "tsn" else 1)
        return evenly_spaced_starts(count, n, length)
    if sampling == "tsn":
        return tsn_starts(count, num_segments, length, train=True, rng=rng)
    return stack_start(count, length, train=True, rng=rng)


def non_overlapping_starts(count: int, length: int) -> np.ndarray:
    """Starts ``0, L, 2L, ...`` of the snippets that tile a video without overlap (benchmarks)."""
    n = max(count // length, 1)
    return np.arange(n, dtype=np.int64) * length


__all__ = [
    "DEFAULT_SEGMENTS", "DEFAULT_STACK", "DEFAULT_TEST_VIEWS", "DEFAULT_TSN_FLOW_LENGTH", "SAMPLINGS",
    "check_sampling", "default_length", "evenly_spaced_starts", "non_overlapping_starts",
    "sample_starts", "snippet_indices", "stack_start", "tsn_starts",
]
