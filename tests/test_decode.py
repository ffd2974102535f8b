"""Decode stage on the real shared clips and the bad inputs."""
import csv

import numpy as np
import pytest

from flowstore.decode import FrameResize, VideoDecodeError, iter_frames, parse_size, read_frames


def decoded_counts(shared_data):
    with open(shared_data / "videos.tsv", newline="") as f:
        return {row["file"]: (int(row["frames_decoded"]), row["resolution"]) for row in csv.DictReader(f, delimiter="\t")}


def test_frame_counts_come_from_decoding(shared_data):
    for name, (count, resolution) in decoded_counts(shared_data).items():
        frames = read_frames(shared_data / "videos" / name)
        w, h = (int(x) for x in resolution.split("x"))
        assert len(frames) == count, name
        assert frames[0].shape == (h, w, 3) and frames[0].dtype == np.uint8


@pytest.mark.parametrize("resize,expected", [
    (FrameResize(size=(340, 256)), (256, 340)),
    (FrameResize(size=(171, 129)), (129, 171)),          # odd sizes
    (FrameResize(short_side=97), (97, round(320 * 97 / 240))),
    (FrameResize(), (240, 320)),
])
def test_resize(shared_videos, resize, expected):
    frame = next(iter_frames(shared_videos / "test.avi", resize=resize))
    assert frame.shape == (*expected, 3)


def test_rgb_order(shared_videos):
    import cv2

    cap = cv2.VideoCapture(str(shared_videos / "test.avi"))
    ok, bgr = cap.read()
    cap.release()
    np.testing.assert_array_equal(next(iter_frames(shared_videos / "test.avi")), bgr[..., ::-1])


def test_bad_inputs(shared_data):
    bad = shared_data / "bad_inputs"
    for name, match in [("empty.mp4", "empty file"), ("notavideo.avi", "cannot open"), ("truncated.mp4", "cannot open")]:
        with pytest.raises(VideoDecodeError, match=match):
            read_frames(bad / name)
    assert len(read_frames(bad / "one_frame.mp4")) == 1
    assert len(read_frames(bad / "clip é 01.mp4")) == 32


def test_pyav_agrees_on_frame_count(shared_videos):
    pytest.importorskip("av")
    assert len(read_frames(shared_videos / "part_0.mp4", decoder="pyav")) == len(read_frames(shared_videos / "part_0.mp4"))


def test_parse_size():
    assert parse_size("340x256") == (340, 256)
    for bad in ("340", "axb", "0x5"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)
    with pytest.raises(ValueError, match="not both"):
        FrameResize(size=(2, 2), short_side=3)
