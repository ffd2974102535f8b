"""The command line: --help of every command, the writer lock, verify on a corrupted shard,
unwritable outputs and a full disk, recipes."""
import json
import os
import signal
import subprocess

import pytest
from click.testing import CliRunner

from flowstore.cli.main import COMMANDS, cli
from flowstore.store.writer import StoreLock
from tests.helpers import REPO, flowstore_cmd, run_cli


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command(name):
    runner = CliRunner()
    listed = runner.invoke(cli, ["--help"])
    assert listed.exit_code == 0
    if name not in cli.list_commands(None):
        pytest.skip(f"command {name} is not part of this build yet")
    assert name in listed.output
    result = runner.invoke(cli, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and name in result.output and len(result.output) > 200


def test_unknown_command_and_version():
    runner = CliRunner()
    assert runner.invoke(cli, ["nope"]).exit_code == 2
    assert "0.1.0" in runner.invoke(cli, ["--version"]).output


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, shared_videos):
    out = tmp_path_factory.mktemp("cli") / "store"
    result = run_cli("extract", str(shared_videos / "part_0.mp4"), str(shared_videos / "test.avi"), "--out", str(out),
                     "--method", "farneback", "--size", "96x72", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    return out


def test_info_json_and_text(small_store):
    info = json.loads(run_cli("info", str(small_store), "--json").stdout)
    for key in ("format", "version", "method", "quantization", "videos", "failures"):
        assert key in info
    assert info["format"] == "flowstore" and info["method"] == "farneback" and info["quantization"]["bound"] == 20
    assert {v["id"]: (v["num_frames"], v["num_flows"]) for v in info["videos"]} == {"part_0": (32, 31), "test": (164, 163)}
    text = run_cli("info", str(small_store)).stdout
    assert "farneback" in text and "part_0: 32 frames, 31 flows" in text


def test_show_writes_a_picture(small_store, tmp_path):
    import cv2

    out = tmp_path / "show.png"
    result = run_cli("show", str(small_store), "part_0", "--frame", "3", "-o", str(out))
    assert result.returncode == 0, result.stderr
    img = cv2.imread(str(out))
    assert img.shape == (72, 96 * 2 + 4, 3)
    bad = run_cli("show", str(small_store), "nope", "-o", str(out))
    assert bad.returncode == 2 and "'nope' is not in store" in bad.stderr
    bad = run_cli("show", str(small_store), "part_0", "--frame", "31", "-o", str(out))
    assert bad.returncode == 2 and "out of range" in bad.stderr


def test_flow_command_writes_flo(flow_gt_dir, tmp_path):
    from flowstore.flo import mean_epe, read_flo

    pair = flow_gt_dir / "chairs_00001"
    out = tmp_path / "out.flo"
    result = run_cli("flow", str(pair / "frame1.png"), str(pair / "frame2.png"), "--method", "farneback", "-o", str(out))
    assert result.returncode == 0, result.stderr
    flow, gt = read_flo(out), read_flo(pair / "flow.flo")
    assert flow.shape == gt.shape
    assert mean_epe(flow, gt) < mean_epe(flow * 0, gt)  # better than no motion at all


def test_second_writer_fails_at_once_with_a_lock_error(small_store):
    with StoreLock(small_store):
        result = run_cli("extract", str(REPO / "pyproject.toml"), "--out", str(small_store), "--method", "farneback",
                         "--size", "96x72", timeout=120)
    assert result.returncode == 4
    assert "locked by another writer" in result.stderr and f"pid {os.getpid()}" in result.stderr


def test_lock_held_by_a_running_extract(tmp_path, shared_videos):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["extract", str(shared_videos / "test.avi"), "--out", str(tmp_path / "s"), "--method", "tvl1",
            "--size", "160x120", "--workers", "1", "--no-progress"]
    first = subprocess.Popen(flowstore_cmd(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        for _ in range(600):  # wait until the first run holds the lock
            if (tmp_path / "s" / "manifest.json").exists():
                break
            if first.poll() is not None:
                pytest.fail("first writer ended too early: " + first.stderr.read().decode())
            import time

            time.sleep(0.1)
        second = run_cli(*args, timeout=120)
        assert second.returncode == 4 and "locked" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()


def corrupt_record_bytes(store, video, kind, index):
    """Flip one byte inside the payload of one record, found in the shard file by its content."""
    import flowstore

    with flowstore.open_store(store) as reader:
        payload = (reader.frame_bytes(video, index) if kind == "rgb" else reader.flow_bytes(video, [index])[0][0])
        shard = store / "shards" / reader.entry(video)["shard"]
    data = bytearray(shard.read_bytes())
    where = data.find(payload)
    assert where >= 0 and data.find(payload, where + 1) < 0
    data[where + len(payload) // 2] ^= 0x5A
    shard.write_bytes(bytes(data))


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_verify_names_the_corrupted_record(tmp_path, shared_videos, backend):
    out = tmp_path / "s"
    result = run_cli("extract", str(shared_videos / "part_0.mp4"), "--out", str(out), "--format", backend,
                     "--method", "farneback", "--size", "96x72", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    ok = run_cli("verify", str(out), "--no-progress")
    assert ok.returncode == 0 and "OK" in ok.stdout
    corrupt_record_bytes(out, "part_0", "rgb", 17)
    bad = run_cli("verify", str(out), "--no-progress")
    assert bad.returncode == 6
    assert "checksum mismatch: part_0/rgb/17 in shards/shard-00000" in bad.stdout
    assert bad.stdout.count("BAD ") == 1


def test_unwritable_output_is_a_clear_error(tmp_path, shared_videos):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_cli("extract", str(shared_videos / "part_0.mp4"), "--out", str(blocker / "store"),
                     "--method", "farneback", "--size", "96x72")
    assert result.returncode == 5
    assert "cannot write the store directory" in result.stderr and "Traceback" not in result.stderr


def _tiny_filesystem(path, size):
    """A real small file system (tmpfs) for the disk-full test; None where mounting is not allowed."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return path if done.returncode == 0 else None


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_full_disk_is_a_clear_error_and_the_store_stays_consistent(tmp_path, shared_videos, backend):
    from flowstore.store.verify import verify_store

    mount = _tiny_filesystem(tmp_path / "small", "1500k")
    if mount is None:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        out = mount / "store"
        args = ["extract", str(shared_videos / "part_0.mp4"), str(shared_videos / "test.avi"),
                str(shared_videos / "v_Basketball_g01_c01.avi"), "--out", str(out), "--method", "farneback",
                "--size", "160x120", "--workers", "1", "--no-progress", "--format", backend, "--shard-size", "100KB"]
        full = run_cli(*args)
        assert full.returncode == 5, full.stdout + full.stderr
        assert "the disk is full" in full.stderr and "Traceback" not in full.stderr
        report = verify_store(out)  # whatever was committed is intact
        assert report.ok, report.problems
        committed = report.videos
        assert committed < 3
        # make room (a bigger file system with the same content) and rerun: the job completes
        subprocess.run(["mount", "-o", "remount,size=20m", str(mount)], check=True)
        again = run_cli(*args)
        assert again.returncode == 0, again.stderr
        assert f"{committed} already in the store" in again.stdout
        assert verify_store(out, decode=True).ok
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_run_recipe_with_overrides(tmp_path, shared_videos):
    recipe = tmp_path / "r.toml"
    store = tmp_path / "store"
    recipe.write_text(f"""
[recipe]
name = "tiny"
stages = ["extract", "verify", "picture"]

[extract]
inputs = ["{shared_videos / 'part_0.mp4'}"]
out = "{store}"
method = "tvl1"
size = "64x48"
workers = 1
no_progress = true

[verify]
store = "{store}"

[picture]
command = "show"
store = "{store}"
video = "part_0"
frame = 2
out = "{tmp_path / 'p.png'}"
""")
    result = run_cli("run", str(recipe), "--set", "extract.method=farneback")
    assert result.returncode == 0, result.stderr
    assert json.loads(run_cli("info", str(store), "--json").stdout)["method"] == "farneback"
    assert (tmp_path / "p.png").exists()
    bad = run_cli("run", str(recipe), "--set", "extract.colour=red")
    assert bad.returncode == 2 and "unknown setting(s) ['colour']" in bad.stderr
    dry = run_cli("run", str(recipe), "--dry-run")
    assert dry.returncode == 0 and "flowstore extract --out" in dry.stderr


def test_bench_flow_reports_the_epe_of_a_direct_call(tmp_path, flow_gt_dir):
    import cv2

    from flowstore.flo import mean_epe, read_flo

    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "chairs_00001").symlink_to(flow_gt_dir / "chairs_00001")
    result = run_cli("bench-flow", str(tmp_path / "pairs"), "--method", "farneback", "--method", "farneback@torch",
                     "--batch-size", "2", "--markdown", str(tmp_path / "b.md"))
    assert result.returncode == 0, result.stderr
    gray = [cv2.cvtColor(cv2.imread(str(flow_gt_dir / "chairs_00001" / f)), cv2.COLOR_BGR2GRAY) for f in ("frame1.png", "frame2.png")]
    direct = cv2.calcOpticalFlowFarneback(gray[0], gray[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    expected = mean_epe(direct, read_flo(flow_gt_dir / "chairs_00001" / "flow.flo"))
    rows = [line for line in result.stdout.splitlines() if line.startswith("| farneback")]
    assert len(rows) == 2 and f"| {expected:.3f} |" in rows[0]
    assert "(B=2)" in rows[1] and "bench-flow on pairs" in (tmp_path / "b.md").read_text()
