"""Video clips: mmaction2 SampleFrames indices (hand-derived, incl. short videos), the clip
dataset on a tiny store (RGB (T, 3, H, W), flow (T, 2, H, W), one crop and flip per clip), and
the N_t x N_s test views (counts, crop positions, flip negation on flow clips)."""
from __future__ import annotations

import numpy as np
import pytest

from flowstore.data.clip_sampling import clip_indices, clip_offsets, sample_clips
from flowstore.data.transforms import Clip, RandomHorizontalFlip, TEN_CROP_ORDER, hflip
from flowstore.data.views import SpatialViews, spatial_crop_boxes
from flowstore.errors import InputError


def draws(fn, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([fn(rng) for _ in range(n)])


# ------------------------------------------------------------------ SampleFrames, by hand
def test_test_mode_centre_and_evenly_spread_clips():
    # 50 frames, 4 x 2: extent (4-1)*2+1 = 7, max_offset = 43
    np.testing.assert_array_equal(clip_offsets(50, 4, 2, 1, train=False), [21])
    np.testing.assert_array_equal(sample_clips(50, 4, 2, 1, train=False), [[21, 23, 25, 27]])
    # 3 clips: round(k * 43 / 2) = 0, round(21.5) = 22 (half to even), 43: the last clip ends the video
    np.testing.assert_array_equal(clip_offsets(50, 4, 2, 3, train=False), [0, 22, 43])
    np.testing.assert_array_equal(sample_clips(50, 4, 2, 3, train=False)[-1], [43, 45, 47, 49])
    # 20 frames, 4 x 1, 4 clips: max_offset 16, 16/3 = 5.33 -> 0, 5, 11, 16
    np.testing.assert_array_equal(clip_offsets(20, 4, 1, 4, train=False), [0, 5, 11, 16])


def test_train_mode_one_random_offset_per_part():
    # 50 frames, 4 x 2: span 4*2 = 8 (mmaction2's training span), avg = (50-8+1)//3 = 14
    got = draws(lambda r: clip_offsets(50, 4, 2, 3, train=True, rng=r))
    for k in range(3):
        assert set(got[:, k]) == set(range(14 * k, 14 * k + 14))
    # avg = (10-8+1)//3 = 1: the offsets are fixed, 0 1 2
    np.testing.assert_array_equal(clip_offsets(10, 4, 2, 3, train=True, rng=np.random.default_rng(0)), [0, 1, 2])


def test_train_mode_short_videos_as_mmaction2():
    # avg = 3//4 = 0 and 10 > max(4, 8): 4 sorted offsets uniform in 0 .. 10-8 = 2
    got = draws(lambda r: clip_offsets(10, 4, 2, 4, train=True, rng=r))
    assert set(got.ravel()) == {0, 1, 2} and (np.diff(got, axis=1) >= 0).all()
    # 8 frames, span 8, 2 clips: avg = 1//2 = 0, 8 > 8 is false -> round(k * 1/2) = 0, 0
    np.testing.assert_array_equal(clip_offsets(8, 4, 2, 2, train=True, rng=np.random.default_rng(0)), [0, 0])
    # 6 frames < span - 1: avg = -1 -> all zeros; index 6 loops to 0
    np.testing.assert_array_equal(sample_clips(6, 4, 2, 1, train=True, rng=np.random.default_rng(0)),
                                  [[0, 2, 4, 0]])


def test_short_video_loops_or_repeats_its_last_index():
    # 5 frames, 4 x 2 in testing: max_offset 0, clip 0 2 4 6
    np.testing.assert_array_equal(sample_clips(5, 4, 2, 1, train=False), [[0, 2, 4, 1]])
    np.testing.assert_array_equal(sample_clips(5, 4, 2, 1, train=False, out_of_bound="repeat_last"), [[0, 2, 4, 4]])
    np.testing.assert_array_equal(clip_indices([0, 1], 3, 1, 2, "repeat_last"), [[0, 1, 1], [1, 1, 1]])
    np.testing.assert_array_equal(sample_clips(1, 3, 5, 2, train=False), [[0, 0, 0], [0, 0, 0]])


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError):
        clip_offsets(0, 4, 1, 1, train=False)
    with pytest.raises(InputError):
        clip_offsets(10, 4, 0, 1, train=False)
    with pytest.raises(InputError, match="Generator"):
        clip_offsets(10, 4, 1, 1, train=True)
    with pytest.raises(InputError, match="out_of_bound"):
        clip_indices([0], 2, 1, 3, "wrap")


# ------------------------------------------------------------------ views: counts and positions
def test_spatial_crop_positions():
    # 160x120 frames, 112 crops: centre (24, 4); along the long side step = (160-112)//(n-1)
    assert spatial_crop_boxes(160, 120, 112, 112, 1) == [(24, 4, 112, 112, False)]
    assert [b[:2] for b in spatial_crop_boxes(160, 120, 112, 112, 3)] == [(0, 4), (24, 4), (48, 4)]  # ThreeCrop
    assert [b[:2] for b in spatial_crop_boxes(160, 120, 112, 112, 4)] == [(0, 4), (16, 4), (32, 4), (48, 4)]
    assert [b[:2] for b in spatial_crop_boxes(160, 120, 112, 112, 2)] == [(0, 4), (48, 4)]
    # 161 wide: ThreeCrop's step (49)//2 = 24 -> the right crop starts at 48, as in mmaction2
    assert [b[0] for b in spatial_crop_boxes(161, 120, 112, 112, 3)] == [0, 24, 48]
    # a portrait frame spreads along its height
    assert [b[:2] for b in spatial_crop_boxes(90, 150, 90, 90, 3)] == [(0, 0), (0, 30), (0, 60)]
    ten = spatial_crop_boxes(160, 120, 112, 112, 10)
    assert len(ten) == 10 == len(TEN_CROP_ORDER)
    assert [b[:2] for b in ten[:5]] == [(0, 0), (48, 0), (0, 8), (48, 8), (24, 4)]
    assert [b[4] for b in ten] == [False] * 5 + [True] * 5
    with pytest.raises(InputError, match="does not fit"):
        spatial_crop_boxes(100, 80, 112, 112, 1)


def _flow_clip(n_t=2, t=3, h=6, w=10, seed=0):
    rng = np.random.default_rng(seed)
    return Clip(flow=rng.integers(0, 256, (n_t, 2 * t, h, w), dtype=np.uint8))


@pytest.mark.parametrize("n_s", [1, 2, 3, 4, 10])
def test_view_counts_are_nt_times_ns_clip_major(n_s):
    clip = _flow_clip()
    views = SpatialViews(n_s, (4, 4))(clip)
    assert views.flow.shape == (2 * n_s, 6, 4, 4)
    boxes = spatial_crop_boxes(10, 6, 4, 4, n_s)
    for t in range(2):
        for s, (x, y, w, h, flipped) in enumerate(boxes):
            expect = clip.flow[t:t + 1, :, y:y + h, x:x + w]
            if flipped:
                expect = hflip(Clip(flow=expect)).flow
            np.testing.assert_array_equal(views.flow[t * n_s + s], expect[0])


def test_flip_negates_u_of_every_flow_of_a_clip():
    clip = _flow_clip(n_t=1, t=4)
    flipped = RandomHorizontalFlip(p=1.0)(clip, np.random.default_rng(0)).flow.reshape(1, 4, 2, 6, 10)
    orig = clip.flow.reshape(1, 4, 2, 6, 10)
    np.testing.assert_array_equal(flipped[:, :, 0], 255 - orig[:, :, 0, :, ::-1])  # u negated, mirrored
    np.testing.assert_array_equal(flipped[:, :, 1], orig[:, :, 1, :, ::-1])        # v mirrored only


# ------------------------------------------------------------------ the dataset on a tiny store
@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract
    from flowstore.synthetic import make_demo_dataset

    root = tmp_path_factory.mktemp("clips")
    ds = make_demo_dataset(root / "data", clips_per_class=1, num_frames=9, size=(40, 32))
    cfg = ExtractConfig(out=str(root / "store"), method="farneback", workers=1, frame_codec="png",
                        flow_codec="png")
    summary = run_extract(plan_jobs([str(ds.videos_dir)]), cfg, show_progress=False, log=lambda m: None)
    assert not summary.failures
    return root / "store"


def test_dataset_rgb_and_flow_clips_hold_the_sampled_items(tiny_store):
    from flowstore import open_store
    from flowstore.data.video_clips import StoreVideoClipDataset
    from flowstore.store.records import decode_flow_component, decode_frame

    reader = open_store(tiny_store)
    video = reader.videos[0]
    rgb = StoreVideoClipDataset(reader, None, modality="rgb", clip_len=4, frame_interval=2, num_clips=2,
                                train=False, rgb_values="uint8", read_ahead=0)
    s = rgb[0]
    assert s["rgb"].shape == (2, 4, 3, 32, 40) and s["video"] == video
    # 9 frames: extent 7, max_offset 2, offsets 0 2
    np.testing.assert_array_equal(s["frame_inds"], [[0, 2, 4, 6], [2, 4, 6, 8]])
    for c in range(2):
        for t, i in enumerate(s["frame_inds"][c]):
            frame = decode_frame(reader.frame_bytes(video, int(i)), reader.frame_codec, (32, 40))
            np.testing.assert_array_equal(s["rgb"][c, t].numpy(), frame.transpose(2, 0, 1))
    flow = StoreVideoClipDataset(reader, None, modality="flow", clip_len=3, frame_interval=3, train=False,
                                 flow_values="uint8", read_ahead=0)
    f = flow[0]
    n_flows = reader.num_flows(video)                     # 8 flows: extent 7, max_offset 1 -> offset 0
    assert f["flow"].shape == (1, 3, 2, 32, 40) and n_flows == 8
    np.testing.assert_array_equal(f["frame_inds"], [[0, 3, 6]])
    xs, ys = reader.flow_bytes(video, [3])
    np.testing.assert_array_equal(f["flow"][0, 1, 0].numpy(), decode_flow_component(xs[0], reader.flow_codec, (32, 40)))
    np.testing.assert_array_equal(f["flow"][0, 1, 1].numpy(), decode_flow_component(ys[0], reader.flow_codec, (32, 40)))


def test_dataset_one_crop_and_flip_for_the_whole_clip(tiny_store):
    from flowstore.data.transforms import Compose, MultiScaleCrop
    from flowstore.data.video_clips import StoreVideoClipDataset

    kw = dict(modality="flow", clip_len=4, frame_interval=1, train=True, flow_values="uint8", read_ahead=0, seed=3)
    plain = StoreVideoClipDataset(tiny_store, None, **kw)[0]
    crop = MultiScaleCrop(24, fix_crop=True)
    tf = StoreVideoClipDataset(tiny_store, None, transform=Compose([crop, RandomHorizontalFlip(1.0)]), **kw)
    got = tf[0]
    np.testing.assert_array_equal(got["frame_inds"], plain["frame_inds"])  # same random clip
    # redo the transform's one random crop on the plain clip by hand (same generator draws)
    from flowstore.data.clips import sample_rng
    from flowstore.data.transforms import crop as crop_fn, resize

    rng = sample_rng(3, 0, 0)
    plain.pop("frame_inds")
    tf.starts(0, rng)  # the sampler's draw comes first
    x, y, w, h = crop.sample(40, 32, rng)
    flow = plain["flow"].numpy().reshape(1, 8, 32, 40)
    expect = hflip(resize(crop_fn(Clip(flow=flow), x, y, w, h), (24, 24))).flow.reshape(1, 4, 2, 24, 24)
    np.testing.assert_array_equal(got["flow"].numpy(), expect)


def test_test_views_through_the_dataset(tiny_store):
    from flowstore.data.video_clips import StoreVideoClipDataset

    ds = StoreVideoClipDataset(tiny_store, None, modality="rgb", clip_len=2, frame_interval=1, num_clips=2,
                               train=False, transform=SpatialViews(3, 24), read_ahead=0)
    s = ds[1]
    assert s["rgb"].shape == (6, 2, 3, 24, 24) and s["rgb"].dtype.is_floating_point
    with pytest.raises(InputError, match="clip_len"):
        StoreVideoClipDataset(tiny_store, None, clip_len=2, sampling="tsn")
