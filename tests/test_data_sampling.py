"""Sampling indices of every mode, derived from the definitions in flowstore.data.sampling."""
import numpy as np
import pytest

from flowstore.data.sampling import (
    default_length, evenly_spaced_starts, non_overlapping_starts, sample_starts, snippet_indices,
    stack_start, tsn_starts,
)


def draws(fn, n=400, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([fn(rng) for _ in range(n)])


def test_tsn_train_one_uniform_start_per_segment():
    # 30 frames, K=3, L=1: A = 30 starts, segments [0,10) [10,20) [20,30)
    got = draws(lambda r: tsn_starts(30, 3, 1, train=True, rng=r))
    assert got.shape == (400, 3)
    for k, (lo, hi) in enumerate([(0, 10), (10, 20), (20, 30)]):
        assert set(got[:, k]) == set(range(lo, hi))  # every start of the segment, nothing else


def test_tsn_train_flow_snippets_stay_inside_the_video():
    # 30 flows, K=3, L=5: A = 26 valid starts, segments floor(k*26/3) = 0, 8, 17, 26
    got = draws(lambda r: tsn_starts(30, 3, 5, train=True, rng=r))
    for k, (lo, hi) in enumerate([(0, 8), (8, 17), (17, 26)]):
        assert set(got[:, k]) == set(range(lo, hi))
    idx = snippet_indices(got[0], 5, 30)
    assert idx.shape == (3, 5) and idx.max() <= 29
    np.testing.assert_array_equal(idx[:, 1:] - idx[:, :-1], 1)


def test_tsn_test_takes_segment_centres():
    # floor((k + 1/2) * A / K)
    np.testing.assert_array_equal(tsn_starts(30, 3, 1, train=False), [5, 15, 25])
    np.testing.assert_array_equal(tsn_starts(30, 3, 5, train=False), [4, 13, 21])  # A = 26
    np.testing.assert_array_equal(tsn_starts(7, 7, 1, train=False), np.arange(7))


def test_tsn_with_fewer_starts_than_segments():
    # 2 frames, K = 3: segments [0,0) [0,1) [1,2) -> the empty one gives its left boundary
    got = draws(lambda r: tsn_starts(2, 3, 1, train=True, rng=r), n=50)
    np.testing.assert_array_equal(np.unique(got, axis=0), [[0, 0, 1]])
    np.testing.assert_array_equal(tsn_starts(2, 3, 1, train=False), [0, 1, 1])


def test_stack_train_uniform_test_centre():
    # 25 flows, L = 10: A = 16 starts 0..15
    got = draws(lambda r: stack_start(25, 10, train=True, rng=r))
    assert got.shape == (400, 1) and set(got[:, 0]) == set(range(16))
    np.testing.assert_array_equal(stack_start(25, 10, train=False), [8])
    np.testing.assert_array_equal(snippet_indices([8], 10, 25), [np.arange(8, 18)])


def test_short_video_repeats_its_last_flow():
    np.testing.assert_array_equal(stack_start(4, 10, train=False), [0])
    np.testing.assert_array_equal(snippet_indices([0], 10, 4), [[0, 1, 2, 3, 3, 3, 3, 3, 3, 3]])


def test_evenly_spaced_test_views():
    # 100 frames, 25 views: floor((2j+1) * 100 / 50) = 2, 6, 10, ..., 98
    np.testing.assert_array_equal(evenly_spaced_starts(100, 25, 1), 4 * np.arange(25) + 2)
    # flows with stacks of 10: A = 91 starts
    starts = evenly_spaced_starts(100, 25, 10)
    np.testing.assert_array_equal(starts, ((2 * np.arange(25) + 1) * 91) // 50)
    assert starts.max() + 9 <= 99 and np.all(np.diff(starts) >= 3)
    np.testing.assert_array_equal(evenly_spaced_starts(5, 1, 1), [2])  # one view is the centre


def test_frame_mode_and_dispatch():
    got = draws(lambda r: sample_starts("frame", 12, length=1, train=True, rng=r))
    assert got.shape == (400, 1) and set(got[:, 0]) == set(range(12))
    np.testing.assert_array_equal(sample_starts("frame", 12, length=1, train=False), [6])
    np.testing.assert_array_equal(sample_starts("tsn", 30, length=1, train=False, num_segments=3), [5, 15, 25])
    np.testing.assert_array_equal(sample_starts("stack", 100, length=10, train=False, test_views=25),
                                  evenly_spaced_starts(100, 25, 10))
    assert len(sample_starts("tsn", 300, length=5, train=True, num_segments=7,
                             rng=np.random.default_rng(0))) == 7
    with pytest.raises(ValueError, match="frame sampling has length 1"):
        sample_starts("frame", 12, length=3, train=True, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown sampling"):
        sample_starts("dense", 12, length=1, train=False)


def test_same_generator_state_same_indices():
    a = tsn_starts(300, 3, 5, train=True, rng=np.random.default_rng([1, 2, 3]))
    b = tsn_starts(300, 3, 5, train=True, rng=np.random.default_rng([1, 2, 3]))
    np.testing.assert_array_equal(a, b)


def test_defaults_and_tiling():
    assert default_length("stack", "flow") == 10
    assert default_length("tsn", "flow") == 5 and default_length("tsn", "rgb") == 1
    assert default_length("frame", "flow") == 1
    np.testing.assert_array_equal(non_overlapping_starts(25, 10), [0, 10])
    np.testing.assert_array_equal(non_overlapping_starts(4, 10), [0])
