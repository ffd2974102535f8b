"""The synthetic motion demo: real decodable videos, consistent labels, deterministic output, and
true motion in motion.json that agrees with what a flow method measures on the decoded videos."""
from __future__ import annotations

import csv
import json
import warnings

import cv2
import numpy as np
import pytest

from flowstore.synthetic import (
    MOTION_CLASSES,
    load_motion,
    make_demo_dataset,
    object_mask,
    render_clip,
    true_flow,
)

CLIPS = 4
FRAMES = 8


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), clips_per_class=CLIPS, num_frames=FRAMES)


@pytest.fixture(scope="module")
def motion(demo):
    return load_motion(demo.motion_path)


def decode(path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def gray(frames):
    return [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]


def farneback(a, b):
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def inner_mask(entry, t, pixels=3):
    mask = object_mask(entry, t).astype(np.uint8)
    return cv2.erode(mask, np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)).astype(bool)


def curl(flow):
    return np.gradient(flow[..., 1], axis=1) - np.gradient(flow[..., 0], axis=0)


def divergence(flow):
    return np.gradient(flow[..., 0], axis=1) + np.gradient(flow[..., 1], axis=0)


def first_clip(motion, class_name, split=None):
    return next(e for e in motion["clips"].values()
                if e["class_name"] == class_name and split in (None, e["split"]))


def test_videos_written_and_decodable(demo):
    width, height = demo.size
    assert demo.num_clips == CLIPS * len(MOTION_CLASSES) == len(demo.video_ids)
    files = sorted(demo.videos_dir.rglob(f"*{demo.video_ext}"))
    assert len(files) == demo.num_clips
    for video_id in demo.video_ids:
        path = demo.video_path(video_id)
        assert path.parent.name == video_id.split("/")[0]
        frames = decode(path)
        assert len(frames) == FRAMES, path
        assert all(f.shape == (height, width, 3) for f in frames), path


def test_labels_and_class_index_consistent(demo, motion):
    lines = demo.class_index_path.read_text().splitlines()
    class_index = {name: int(idx) for idx, name in (line.split() for line in lines)}
    assert list(class_index) == list(MOTION_CLASSES)
    assert sorted(class_index.values()) == list(range(1, len(MOTION_CLASSES) + 1))

    with open(demo.labels_path, newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == ["video_id", "label", "class_name", "split"]
        rows = list(reader)
    assert [r["video_id"] for r in rows] == list(demo.video_ids)
    assert set(r["video_id"] for r in rows) == set(motion["clips"])
    for row in rows:
        assert int(row["label"]) == class_index[row["class_name"]] - 1
        assert row["video_id"].startswith(row["class_name"] + "/")
        assert demo.video_path(row["video_id"]).is_file()
        entry = motion["clips"][row["video_id"]]
        assert (entry["class_name"], entry["label"], entry["split"]) == (
            row["class_name"], int(row["label"]), row["split"])
    # split: same clip indices are test in every class, about a quarter of them
    for name in MOTION_CLASSES:
        splits = [r["split"] for r in rows if r["class_name"] == name]
        assert splits == [r["split"] for r in rows if r["class_name"] == MOTION_CLASSES[0]]
        assert set(splits) <= {"train", "test"}
        assert splits.count("test") == round(0.25 * CLIPS)
    assert demo.read_labels()[0]["label"] == 0


def test_deterministic_for_a_seed(tmp_path):
    kwargs = dict(clips_per_class=2, num_frames=5, camera_shake=1.0)
    a = make_demo_dataset(tmp_path / "a", seed=3, **kwargs)
    b = make_demo_dataset(tmp_path / "b", seed=3, **kwargs)
    c = make_demo_dataset(tmp_path / "c", seed=4, **kwargs)
    files_a = sorted(p.relative_to(a.root) for p in a.root.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b.root) for p in b.root.rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 + 2 * len(MOTION_CLASSES)
    for rel in files_a:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes(), rel
    assert a.motion_path.read_bytes() != c.motion_path.read_bytes()
    assert a.video_path(a.video_ids[0]).read_bytes() != c.video_path(c.video_ids[0]).read_bytes()


def test_refuses_to_overwrite_unless_asked(demo, tmp_path):
    make_demo_dataset(tmp_path, clips_per_class=1, num_frames=3)
    with pytest.raises(FileExistsError):
        make_demo_dataset(tmp_path, clips_per_class=1, num_frames=3)
    ds = make_demo_dataset(tmp_path, clips_per_class=1, num_frames=4, overwrite=True)
    assert len(decode(ds.video_path(ds.video_ids[0]))) == 4


def test_true_flow_explains_rendered_frames(tmp_path):
    """Warping frame t+1 back by the true flow reproduces frame t (object and background)."""
    ds = make_demo_dataset(tmp_path, clips_per_class=1, num_frames=4, camera_shake=1.5, verify=False)
    motion = load_motion(ds.motion_path)
    height, width = ds.size[1], ds.size[0]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for entry in motion["clips"].values():
        frames = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) for f in render_clip(entry)]
        for t in range(len(entry["steps"])):
            flow = true_flow(entry, t, ds.size)
            assert flow.shape == (height, width, 2) and flow.dtype == np.float32
            back = cv2.remap(frames[t + 1], xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR)
            obj = inner_mask(entry, t)
            bg = ~cv2.dilate(object_mask(entry, t).astype(np.uint8) | object_mask(entry, t + 1).astype(np.uint8),
                             np.ones((7, 7), np.uint8)).astype(bool)
            bg[:4], bg[-4:], bg[:, :4], bg[:, -4:] = False, False, False, False
            for region in (obj, bg):
                warped_err = np.abs(back - frames[t])[region].mean()
                still_err = np.abs(frames[t + 1] - frames[t])[region].mean()
                assert warped_err < 2.0 and warped_err < 0.3 * still_err, (entry["video_id"], t)


@pytest.mark.parametrize("class_name", ["translate_right", "translate_left"])
def test_farneback_measures_the_true_translation(demo, motion, class_name):
    entry = first_clip(motion, class_name)
    frames = gray(decode(demo.video_path(entry["video_id"])))
    for t in (2, 4):
        step = entry["steps"][t]
        mask = inner_mask(entry, t)
        flow = farneback(frames[t], frames[t + 1])
        median = np.median(flow[mask], axis=0)
        expected = np.array([step["dx"], step["dy"]])
        assert np.abs(median - expected).max() < 0.35, (t, median, expected)


@pytest.mark.parametrize("class_name", ["rotate_cw", "rotate_ccw"])
def test_rotation_curl_sign(demo, motion, class_name):
    entry = first_clip(motion, class_name)
    frames = gray(decode(demo.video_path(entry["video_id"])))
    for t in range(len(entry["steps"])):
        m = np.asarray(entry["steps"][t]["matrix"])
        expected_curl = m[1, 0] - m[0, 1]  # d v/dx - d u/dy of the affine step
        mask = inner_mask(entry, t)
        assert np.sign(curl(true_flow(entry, t))[mask].mean()) == np.sign(expected_curl)
        measured = curl(farneback(frames[t], frames[t + 1]))[mask].mean()
        assert np.sign(measured) == np.sign(expected_curl), (t, measured, expected_curl)


@pytest.mark.parametrize("class_name", ["zoom_in", "zoom_out"])
def test_zoom_divergence_sign(demo, motion, class_name):
    entry = first_clip(motion, class_name)
    frames = gray(decode(demo.video_path(entry["video_id"])))
    measured = []
    for t in range(len(entry["steps"])):
        mask = inner_mask(entry, t)
        measured.append(divergence(farneback(frames[t], frames[t + 1]))[mask].mean())
    expected = np.sign(np.log(entry["steps"][0]["scale"]))
    assert np.sign(np.mean(measured)) == expected, measured


def test_rgb_statistics_do_not_separate_classes(demo):
    """Per-class mean colour differs far less than clips differ among themselves."""
    per_clip = {name: [] for name in MOTION_CLASSES}
    for row in demo.read_labels():
        frames = decode(demo.video_path(row["video_id"]))
        per_clip[row["class_name"]].append(np.mean([f.mean(axis=(0, 1)) for f in frames], axis=0))
    clip_means = np.array([per_clip[n] for n in MOTION_CLASSES])  # (classes, clips, 3)
    class_means = clip_means.mean(axis=1)
    spread = class_means.max(axis=0) - class_means.min(axis=0)
    standard_error = clip_means.reshape(-1, 3).std(axis=0) / np.sqrt(CLIPS)
    assert np.all(spread < 0.5 * standard_error), (spread, standard_error)


def test_unpaired_appearance_is_still_balanced(tmp_path):
    """Without pairing, appearance is drawn independently per class, from the same distribution."""
    ds = make_demo_dataset(tmp_path, clips_per_class=6, num_frames=2, paired_appearance=False, verify=False)
    motion = load_motion(ds.motion_path)
    seeds = {json.dumps(e["appearance_seed"]) for e in motion["clips"].values()}
    assert len(seeds) == ds.num_clips
    means = {n: [] for n in MOTION_CLASSES}
    for entry in motion["clips"].values():
        means[entry["class_name"]].append(render_clip(entry)[0].mean())
    per_class = np.array([np.mean(means[n]) for n in MOTION_CLASSES])
    clip_sd = np.std(np.concatenate(list(means.values())))
    # class means are averages of 6 iid clips: allow 4 standard errors of a difference
    assert per_class.max() - per_class.min() < 4 * np.sqrt(2) * clip_sd / np.sqrt(6)


def test_objects_stay_in_frame_even_when_speeds_are_capped(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = make_demo_dataset(tmp_path, clips_per_class=1, num_frames=40, camera_shake=1.5, verify=False)
    assert any("capped" in str(w.message) for w in caught)
    motion = load_motion(ds.motion_path)
    cap = motion["config"]["motion_ranges"]["translate"][1]
    for entry in motion["clips"].values():
        if entry["motion"]["kind"] == "translate":
            assert abs(entry["motion"]["rate"]) <= cap + 1e-9
        for t in range(entry["num_frames"]):
            mask = object_mask(entry, t)
            assert mask.any()
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_unknown_codec_falls_back_to_mjpg_avi(tmp_path):
    with pytest.warns(UserWarning, match="falling back to MJPG"):
        ds = make_demo_dataset(tmp_path, clips_per_class=1, num_frames=3, codec="ZZZZ")
    assert (ds.codec, ds.video_ext) == ("MJPG", ".avi")
    assert len(decode(ds.video_path(ds.video_ids[0]))) == 3
    assert load_motion(ds.motion_path)["config"]["video_ext"] == ".avi"
