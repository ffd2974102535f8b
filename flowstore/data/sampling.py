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

Stackings: what the L flows of a flow snippet are (one table, :data:`STACKINGS`; S&Z 2014 sec. 3.1)
------------------------------------------------------------------------------------------------
A flow snippet at start ``s`` always reads the flow indices ``s .. s+L-1`` (so the starts above
are the same for every stacking); the stacking says which direction each one is read in and
what is done with it:

``stack`` (S&Z eq. 1, "optical flow stacking")
    the forward flows ``s .. s+L-1``, channels ``2l, 2l+1`` = u, v of flow ``s+l``.
``bidirectional`` (S&Z sec. 3.1, "bi-directional optical flow")
    S&Z: at frame τ, "L/2 forward flows between frames τ and τ+L/2 and L/2 backward flows
    between frames τ−L/2 and τ", 2L channels like the L-flow stack. Here ``τ = s + L/2`` (L
    even): channels ``0 .. L-1`` are the **backward** flows ``s .. τ-1`` (backward flow ``j``
    goes from frame ``j + stride`` to frame ``j``; with stride 1 they cover frames ``τ-L/2 ..
    τ``), channels ``L .. 2L-1`` the **forward** flows ``τ .. τ+L/2-1`` (frames ``τ .. τ+L/2``);
    each flow's u, v interleaved as in ``stack``, flows in index order (time order). The store
    needs backward flow (``flowstore extract --direction both``). The middle RGB frame of
    ``modality="both"``, ``s + L // 2``, is τ.
``trajectory`` (S&Z eq. 2, "trajectory stacking")
    the forward flows ``s .. s+L-1`` sampled along trajectories: channel pair ``k`` (``k = 0 ..
    L-1``) at pixel ``(u, v)`` is flow ``s+k`` at ``p_k``, with ``p_0 = (u, v)`` and ``p_{k+1} =
    p_k + d_{s+k}(p_k)`` (bilinear, see :func:`flowstore.data.transforms.trajectory_stack`).
    It follows flow ``i`` into flow ``i + 1``, so it needs stride 1.
"""
from __future__ import annotations

import dataclasses

import numpy as np
from ..errors import InputError
from ..registry import Registry

SAMPLINGS = ("tsn", "stack", "frame")
DEFAULT_SEGMENTS = 3
DEFAULT_STACK = 10  # L flows of a Simonyan–Zisserman stack
DEFAULT_TSN_FLOW_LENGTH = 5  # TSN's flow snippets are 5 flows (10 channels)
DEFAULT_TEST_VIEWS = 25  # TSN / two-stream testing: 25 evenly spaced snippets


@dataclasses.dataclass(frozen=True)
class Stacking:
    """One way of making a flow snippet's 2L channels (module docstring, "Stackings")."""

    name: str
    #: the flow direction of each of the L flows of a snippet, from L (see :meth:`directions_of`)
    backward_half: bool = False
    #: whether the flows are re-sampled along trajectories (S&Z eq. 2) after decoding
    trajectory: bool = False
    reference: str = ""

    def directions_of(self, length: int) -> tuple[str, ...]:
        """The direction each of the ``length`` flows of a snippet is read in, in channel order."""
        if not self.backward_half:
            return ("forward",) * length
        if length < 2 or length % 2:
            raise InputError(f"{self.name} stacking takes L/2 backward and L/2 forward flows: the snippet "
                             f"length must be even and >= 2, got {length}")
        return ("backward",) * (length // 2) + ("forward",) * (length // 2)

    @property
    def directions(self) -> tuple[str, ...]:
        """The flow directions a source must hold for this stacking."""
        return ("forward", "backward") if self.backward_half else ("forward",)

    @property
    def mean_groups(self) -> int:
        """Stack-mean subtraction: the channel groups with their own mean. The backward half of a
        bidirectional stack moves against the forward half (a camera pan is +c forward and -c
        backward), so each half has its own mean; otherwise the whole stack has one."""
        return 2 if self.backward_half else 1


#: the stackings by name: what ``stacking=`` of the datasets (and CLI choices, via
#: :func:`list_stackings`) accept
STACKINGS: Registry[Stacking] = Registry("stacking")
for _stacking in (Stacking("stack", reference="Simonyan & Zisserman 2014, eq. 1"),
                  Stacking("bidirectional", backward_half=True, reference="Simonyan & Zisserman 2014, sec. 3.1"),
                  Stacking("trajectory", trajectory=True, reference="Simonyan & Zisserman 2014, eq. 2")):
    STACKINGS.register(_stacking.name, _stacking)
DEFAULT_STACKING = "stack"


def list_stackings() -> list[str]:
    return STACKINGS.names()


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
    "DEFAULT_STACKING", "STACKINGS", "Stacking", "list_stackings",
    "DEFAULT_SEGMENTS", "DEFAULT_STACK", "DEFAULT_TEST_VIEWS", "DEFAULT_TSN_FLOW_LENGTH", "SAMPLINGS",
    "check_sampling", "default_length", "evenly_spaced_starts", "non_overlapping_starts",
    "sample_starts", "snippet_indices", "stack_start", "tsn_starts",
]
