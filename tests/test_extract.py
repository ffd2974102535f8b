"""flowstore extract end to end on the real shared clips: both methods x both formats."""
import json

import cv2
import numpy as np
import pytest

import flowstore
from flowstore.decode import FrameResize, read_frames
from flowstore.extract import ExtractConfig, PlanError, plan_jobs, run_extract
from flowstore.flow import build_flow
from flowstore.quantize import QuantSpec, quantize
from flowstore.store.verify import verify_store

SMALL = (128, 96)  # TV-L1 on 2 CPU cores: keep the clips small


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
@pytest.mark.parametrize("method", ["farneback", "tvl1"])
def test_methods_x_formats_store_exactly_the_quantized_opencv_flow(tmp_path, shared_videos, backend, method):
    clip = shared_videos / "part_0.mp4"
    cfg = ExtractConfig(out=str(tmp_path / "store"), backend=backend, method=method, flow_codec="raw",
                        frame_codec="png", resize=FrameResize(size=SMALL), workers=1)
    summary = run_extract(plan_jobs([clip]), cfg, show_progress=False)
    assert summary.ok == 1 and not summary.failures
    frames = read_frames(clip, resize=FrameResize(size=SMALL))
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    with flowstore.open_store(tmp_path / "store", check=True) as store:
        assert store.videos == ["part_0"]
        assert store.num_frames("part_0") == len(frames) == 32
        assert store.num_flows("part_0") == len(frames) - 1
        assert store.manifest["flow"]["method"] == method
        assert store.manifest["flow"]["library_version"] == cv2.__version__
        for i in (0, 7, len(frames) - 2):
            np.testing.assert_array_equal(store.frame("part_0", i), frames[i])  # png frames: lossless
            if method == "farneback":
                direct = cv2.calcOpticalFlowFarneback(gray[i], gray[i + 1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
            else:
                direct = cv2.optflow.DualTVL1OpticalFlow_create().calc(gray[i], gray[i + 1], None)
            ours = build_flow(method)(frames[i], frames[i + 1])
            np.testing.assert_array_equal(ours, direct)  # before quantization: the same OpenCV call
            np.testing.assert_array_equal(store.flow_q("part_0", i), quantize(direct, QuantSpec())[0])
            assert np.abs(store.flow("part_0", i) - np.clip(direct, -20, 20)).max() <= 20 / 255 + 1e-5
    report = verify_store(tmp_path / "store", decode=True)
    assert report.ok and report.records == 32 + 2 * 31


def test_minmax_stride_and_jpeg(tmp_path, shared_videos):
    clip = shared_videos / "test.avi"
    cfg = ExtractConfig(out=str(tmp_path / "s"), method="farneback", quant=QuantSpec("minmax"), stride=2,
                        resize=FrameResize(short_side=60), workers=1)
    run_extract(plan_jobs([clip]), cfg, show_progress=False)
    frames = read_frames(clip, resize=FrameResize(short_side=60))
    with flowstore.open_store(tmp_path / "s") as store:
        vid = store.videos[0]
        assert store.num_flows(vid) == len(frames) - 2 and store.frame_size(vid) == (80, 60)
        direct = build_flow("farneback")(frames[10], frames[12])
        lo_x, hi_x, lo_y, hi_y = store.flow_range(vid, 10)
        assert np.isclose(lo_x, direct[..., 0].min()) and np.isclose(hi_y, direct[..., 1].max())
        err = np.abs(store.flow(vid, 10) - direct)
        # JPEG q95 of the quantized planes: a few levels at most
        assert np.median(err[..., 0]) <= 2 * (hi_x - lo_x) / 255
    assert verify_store(tmp_path / "s").ok


def test_bad_inputs_are_recorded_not_fatal(tmp_path, shared_data):
    from tests.helpers import run_cli

    out = tmp_path / "store"
    args = ["extract", str(shared_data / "bad_inputs"), "--out", str(out), "--method", "farneback",
            "--size", "96x72", "--workers", "2", "--no-progress"]
    first = run_cli(*args)
    assert first.returncode == 3, first.stderr
    failures = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    reasons = {f["id"]: f["reason"] for f in failures}
    assert set(reasons) == {"empty", "truncated", "notavideo", "one_frame"}
    assert "empty" in reasons["empty"] and "1 frame" in reasons["one_frame"]
    assert all(f["source"].startswith(str(shared_data / "bad_inputs")) for f in failures)
    assert all("\n" not in r for r in reasons.values())
    with flowstore.open_store(out) as store:
        assert store.videos == ["clip é 01"] and store.num_frames("clip é 01") == 32
    # a rerun skips everything; failures still make the exit code 3 unless allowed
    again = run_cli(*args)
    assert again.returncode == 3 and "1 already in the store, 4 skipped" in again.stdout
    allowed = run_cli(*args, "--allow-failures")
    assert allowed.returncode == 0
    retried = run_cli(*args, "--retry-failed")
    assert retried.returncode == 3 and "0 ok, 4 failed this run" in retried.stdout
    info = json.loads(run_cli("info", str(out), "--json").stdout)
    assert len(info["failures"]) == 4 and [v["id"] for v in info["videos"]] == ["clip é 01"]


def test_id_collision_is_an_error_before_any_work(tmp_path, shared_videos):
    import shutil

    from tests.helpers import run_cli

    (tmp_path / "in").mkdir()
    shutil.copy(shared_videos / "part_0.mp4", tmp_path / "in" / "a.mp4")
    shutil.copy(shared_videos / "test.avi", tmp_path / "in" / "a.avi")
    with pytest.raises(PlanError, match="collision"):
        plan_jobs([tmp_path / "in"])
    result = run_cli("extract", str(tmp_path / "in"), "--out", str(tmp_path / "store"))
    assert result.returncode == 2 and "collision" in result.stderr
    assert not (tmp_path / "store").exists()


def test_list_file_and_ids(tmp_path, shared_videos):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# comment\n{shared_videos / 'part_0.mp4'}\n\n")
    jobs = plan_jobs([shared_videos / "test.avi"], list_file=listing)
    assert [j.id for j in jobs] == ["part_0", "test"]
    jobs = plan_jobs([shared_videos / "part_0.mp4"], root=shared_videos.parent)
    assert [j.id for j in jobs] == ["videos/part_0"]
    # the shared clips themselves hold test.avi and test.mp4: one id, so a plan error
    with pytest.raises(PlanError, match="'test'"):
        plan_jobs([shared_videos])
    with pytest.raises(PlanError, match="not found"):
        plan_jobs([tmp_path / "nope.mp4"])
    listing.write_text("missing.mp4\n")
    with pytest.raises(PlanError, match="list.txt:1"):
        plan_jobs([], list_file=listing)


def test_settings_mismatch_on_resume_is_refused(tmp_path, shared_videos):
    from flowstore.store.writer import SettingsMismatchError

    clip = shared_videos / "part_0.mp4"
    run_extract(plan_jobs([clip]), ExtractConfig(out=str(tmp_path / "s"), method="farneback", resize=FrameResize(size=(64, 48)), workers=1), show_progress=False)
    with pytest.raises(SettingsMismatchError, match="quantization"):
        run_extract(plan_jobs([clip]), ExtractConfig(out=str(tmp_path / "s"), method="farneback", quant=QuantSpec("bound", 10),
                                                    resize=FrameResize(size=(64, 48)), workers=1), show_progress=False)


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_every_shared_clip_every_codec_and_container(tmp_path, shared_data, backend):
    """All real clips (H.264 MP4, MPEG-4 AVI, GIF; 19.62 to 30 fps): frame counts as decoded by ffprobe."""
    import csv

    with open(shared_data / "videos.tsv", newline="") as f:
        expected = {row["file"]: int(row["frames_decoded"]) for row in csv.DictReader(f, delimiter="\t")}
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in expected:  # test.mp4 and test.avi would share an id: keep the extension in the name
        src = shared_data / "videos" / name
        (folder / f"{src.stem}_{src.suffix[1:]}{src.suffix}").symlink_to(src)
    cfg = ExtractConfig(out=str(tmp_path / "s"), backend=backend, method="farneback", resize=FrameResize(size=(48, 36)), workers=2)
    summary = run_extract(plan_jobs([folder]), cfg, show_progress=False)
    assert summary.ok == len(expected) and not summary.failures
    with flowstore.open_store(tmp_path / "s") as store:
        for name, frames in expected.items():
            src = shared_data / "videos" / name
            vid = f"{src.stem}_{src.suffix[1:]}"
            assert store.num_frames(vid) == frames and store.num_flows(vid) == frames - 1, vid
    assert verify_store(tmp_path / "s").ok
