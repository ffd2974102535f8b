"""``extract --fps N``: the decoded frames nearest to a regular N fps grid (flowstore.decode,
module docstring), their source indices and timestamps in the video entry (format 1.2)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import flowstore
from flowstore.cli.main import cli
from flowstore.decode import DecodedFrame, FrameResize, iter_kept, select_fps
from flowstore.errors import InputError
from flowstore.extract import ExtractConfig, VideoJob, run_extract
from flowstore.store.format import FormatError, check_entry, decode_runs, encode_runs
from flowstore.store.writer import SettingsMismatchError


def decoded_times(path) -> np.ndarray:
    """Every frame's decoded timestamp in seconds, straight from cv2."""
    cap = cv2.VideoCapture(str(path))
    times = []
    while cap.read()[0]:
        times.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)
    cap.release()
    return np.asarray(times)


def expected_indices(times: np.ndarray, fps: float) -> list[int]:
    """The rule, computed independently: for every grid point t0 + j/fps up to the last frame,
    the index of the nearest frame (argmin takes the first, i.e. the earlier, on a tie); each
    frame once, in order."""
    grid = times[0] + np.arange(int((times[-1] - times[0]) * fps) + 2) * (1.0 / fps)
    grid = grid[grid <= times[-1]]
    return sorted({int(np.argmin(np.abs(times - g))) for g in grid})


@pytest.mark.parametrize("clip,fps", [("v_Basketball_g01_c01.avi", 10.0),   # 29.97 fps
                                      ("v_Basketball_g01_c01.avi", 12.5),
                                      ("v_GGSY1Qvo990.mp4", 10.0),          # 19.62 fps
                                      ("v_GGSY1Qvo990.mp4", 7.0),
                                      ("v_GGSY1Qvo990.mp4", 25.0)])         # faster than the clip
def test_kept_frames_on_the_shared_clips(shared_videos, clip, fps):
    times = decoded_times(shared_videos / clip)
    kept = [(f.index, f.time) for f in iter_kept(shared_videos / clip, fps=fps)]
    want = expected_indices(times, fps)
    assert [i for i, _ in kept] == want
    np.testing.assert_array_equal([t for _, t in kept], times[want])
    if fps > 1 / np.diff(times).min():
        assert want == list(range(len(times)))  # a clip slower than N fps keeps every frame
    else:
        source_fps = (len(times) - 1) / (times[-1] - times[0])
        assert len(want) == pytest.approx((times[-1] - times[0]) * fps + 1, abs=1)
        assert len(want) < len(times) * fps / source_fps + 2


def test_ties_keep_the_earlier_frame_and_nothing_is_duplicated():
    frames = lambda times: [DecodedFrame(i, t, None) for i, t in enumerate(times)]
    # grid 0, 0.5, 1.0: 0.5 is halfway between 0.25 and 0.75
    assert [f.index for f in select_fps(frames([0, 0.25, 0.75, 1.0]), 2.0)] == [0, 1, 3]
    # grid every 0.25 s over frames every 0.5 s: each frame once
    assert [f.index for f in select_fps(frames([0, 0.5, 1.0]), 4.0)] == [0, 1, 2]
    # the grid starts at the first frame's timestamp, not at 0
    assert [f.index for f in select_fps(frames([3.0, 3.25, 3.5, 3.75, 4.0]), 2.0)] == [0, 2, 4]
    with pytest.raises(InputError, match="timestamps"):
        list(select_fps([DecodedFrame(0, None, None)], 2.0))
    with pytest.raises(InputError, match="back in time"):
        list(select_fps(frames([0, 0.5, 0.25]), 2.0))
    with pytest.raises(InputError, match="--fps must be a positive"):
        ExtractConfig(out="x", fps=0)


def test_runs():
    for indices in ([0], [0, 3, 6, 9, 11, 13, 14], [5, 6, 7, 20], list(range(0, 300, 3))):
        runs = encode_runs(indices)
        assert decode_runs(runs) == indices
    assert encode_runs([0, 3, 6, 8]) == [[0, 3, 3], [8, 1, 1]]
    assert encode_runs(range(0, 300, 3)) == [[0, 3, 100]]


def test_synthetic_video_through_the_cli(tmp_path):
    """Frame i of a 25 fps video has brightness 10 i, so a stored frame names its source frame."""
    path = tmp_path / "ramp.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (32, 24))
    for i in range(20):
        writer.write(np.full((24, 32, 3), 10 * i, np.uint8))
    writer.release()
    out = tmp_path / "s"
    runner = CliRunner()
    assert "--fps FLOAT" in runner.invoke(cli, ["extract", "--help"]).output
    result = runner.invoke(cli, ["extract", str(path), "--out", str(out), "--method", "farneback", "--fps", "10",
                                 "--workers", "1", "--no-progress", "--frame-codec", "png"])
    assert result.exit_code == 0, result.output
    times = decoded_times(path)
    want = expected_indices(times, 10.0)
    assert len(want) == 8  # 0.76 s at 10 fps: grid 0, 0.1, ..., 0.7
    with flowstore.open_store(out) as store:
        entry = store.entry("ramp")
        assert store.manifest["fps"] == 10.0
        assert entry["num_frames"] == len(want) and entry["num_flows"] == len(want) - 1
        assert decode_runs(entry["source_frames"]) == want
        assert entry["source_times"] == [round(float(t), 6) for t in times[want]]
        brightness = [int(round(store.frame("ramp", k).mean() / 10)) for k in range(entry["num_frames"])]
        assert brightness == want
    check_entry(entry, backend="lmdb", stride=1, where="e")
    # fps is a settings key: resuming at another rate is refused, the same rate resumes
    with pytest.raises(SettingsMismatchError, match="fps: store has 10.0, this command asks for null"):
        run_extract([VideoJob("ramp", str(path))], ExtractConfig(out=str(out), method="farneback", workers=1,
                                                                 frame_codec="png"), show_progress=False)
    again = run_extract([VideoJob("ramp", str(path))], ExtractConfig(out=str(out), method="farneback", workers=1,
                                                                     frame_codec="png", fps=10.0), show_progress=False)
    assert again.skipped_committed == 1
    # without --fps an entry has no such keys
    run_extract([VideoJob("ramp", str(path))], ExtractConfig(out=str(tmp_path / "all"), method="farneback", workers=1,
                                                             resize=FrameResize(size=(16, 12))), show_progress=False)
    with flowstore.open_store(tmp_path / "all") as store:
        plain = store.entry("ramp")
    assert "source_frames" not in plain and plain["num_frames"] == 20


@pytest.mark.parametrize("bad,message", [
    ({"source_frames": [[0, 2, 3]]}, "source_times"),
    ({"source_frames": [[0, 2, 2]], "source_times": [0.0, 0.1, 0.2]}, "3 increasing frame indices"),
    ({"source_frames": [[0, 0, 3]], "source_times": [0.0, 0.1, 0.2]}, "step >= 1"),
    ({"source_frames": [[4, 1, 2], [0, 1, 1]], "source_times": [0.0, 0.1, 0.2]}, "increasing"),
    ({"source_frames": [[0, 2, 3]], "source_times": [0.0, 0.2, 0.1]}, "non-decreasing"),
])
def test_check_entry_refuses_bad_source_frames(bad, message):
    entry = {"id": "v", "source": "v.mp4", "source_size": 1, "source_sha256": "0" * 64, "num_frames": 3,
             "num_flows": 2, "width": 4, "height": 4, "shard": "shard-00000.lmdb", "bytes": 1}
    check_entry({**entry, "source_frames": [[0, 2, 3]], "source_times": [0.0, 0.1, 0.2]},
                backend="lmdb", stride=1, where="e")
    with pytest.raises(FormatError, match=message):
        check_entry({**entry, **bad}, backend="lmdb", stride=1, where="e")
