"""Issue 11, items 2, 3, 5 and 7: environment errors, signals, bad parameters, inputs and recipes
mean what they say. Every mistake below is tried as a user would, on the shared clips."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, flowstore_cmd, run_cli

CLIPS = ("clean_and_jerk", "demo", "part_0", "skateboarding", "test")
FAST = ("--method", "farneback", "--size", "96x72", "--no-progress")


def clips(videos: Path, names=CLIPS) -> list[str]:
    return [str(videos / f"{n}.mp4") for n in names]


def one_line_error(result, *words):
    """Exit 2, one ``error:`` line naming ``words``, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def small_store(tmp_path_factory, shared_videos) -> Path:
    out = tmp_path_factory.mktemp("store") / "s"
    r = run_cli("extract", *clips(shared_videos, ("part_0", "clean_and_jerk")), "--out", str(out), *FAST,
                "--workers", "1")
    assert r.returncode == 0, r.stderr
    return out


def without(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    """``flowstore ARGS`` where ``import MODULE`` fails as if the package were not installed."""
    shim = tmp_path / f"without-{module}"
    shim.mkdir(exist_ok=True)
    (shim / f"{module}.py").write_text(f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), str(REPO)])}
    return subprocess.run(flowstore_cmd(*args), capture_output=True, text=True, timeout=600, env=env)


# --- 2. environment errors --------------------------------------------------------------

def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize("args, words", [
    (("--device", "tpu"), ("bad device 'tpu'", "cuda:N")),
    (("--device", "cuda:x"), ("bad device 'cuda:x'",)),
    (("--gpu", "zero"), ("--gpu 'zero'", "0,1,2,3")),
    (("--gpu", "0", "--device", "cpu"), ("not both",)),
])
def test_bad_device_strings_exit_2_before_the_store_exists(tmp_path, shared_videos, args, words):
    out = tmp_path / "store"
    one_line_error(run_cli("extract", *clips(shared_videos, ("part_0",)), "--out", str(out), *args), *words)
    assert not out.exists()


@pytest.mark.parametrize("args", [("--gpu", "0"), ("--device", "cuda:0"), ("--device", "cuda"), ("--gpu", "0,1")])
def test_a_cuda_device_on_a_machine_without_one_exits_2_saying_what_to_do(tmp_path, shared_videos, args):
    if _cuda():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "store"
    one_line_error(run_cli("extract", *clips(shared_videos, ("part_0",)), "--out", str(out), *args),
                   "no usable CUDA GPU", "run on the CPU")
    assert not out.exists()


def test_features_and_bench_flow_check_their_device_the_same_way(tmp_path, small_store, flow_gt_dir):
    out = tmp_path / "f.h5"
    one_line_error(run_cli("features", "--store", str(small_store), "--stream", "rgb", "--out", str(out),
                           "--device", "tpu"), "bad device 'tpu'")
    if not _cuda():
        one_line_error(run_cli("features", "--store", str(small_store), "--stream", "rgb", "--out", str(out),
                               "--gpu", "0"), "no usable CUDA GPU")
        one_line_error(run_cli("bench-flow", str(flow_gt_dir), "--method", "farneback@torch",
                               "--device", "cuda:0"), "no usable CUDA GPU")
    one_line_error(run_cli("bench-flow", str(flow_gt_dir), "--device", "gpu0"), "bad device 'gpu0'")
    assert not out.exists()


def test_a_missing_optional_package_exits_2_with_how_to_install_it(tmp_path, shared_videos, small_store):
    out = tmp_path / "store"
    video = clips(shared_videos, ("part_0",))
    one_line_error(without(tmp_path, "ptlflow", "extract", *video, "--out", str(out), "--method", "gmflow"),
                   "ptlflow")
    one_line_error(without(tmp_path, "av", "extract", *video, "--out", str(out), "--decoder", "pyav"),
                   "'av' package", "--decoder opencv")
    assert not out.exists()
    feats = tmp_path / "f.h5"
    one_line_error(without(tmp_path, "timm", "features", "--store", str(small_store), "--stream", "rgb",
                           "--out", str(feats)), "timm", "pip install timm")
    assert not feats.exists()


def test_make_venv_checks_free_space_first_and_says_how_much_and_where(tmp_path):
    shutil.copy(REPO / "Makefile", tmp_path)
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    r = subprocess.run(["make", "venv", "VENV_NEED_GB=1000000"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "needs about 1e+06 GB free in " + str(tmp_path / ".venv") in r.stderr
    assert not (tmp_path / ".venv").exists()


# --- 5. bad parameters are refused before any work -----------------------------------------

@pytest.mark.parametrize("method, engine, param, words", [
    ("farneback", "opencv", "pyr_scale=1.5", ("pyr_scale", "in (0, 1)")),
    ("farneback", "torch", "pyr_scale=0", ("pyr_scale", "in (0, 1)")),
    ("farneback", "opencv", "winsize=0", ("winsize", ">= 1")),      # OpenCV returns NaN for it
    ("farneback", "torch", "poly_n=6", ("poly_n", "one of 5, 7")),
    ("farneback", "opencv", "flags=4", ("flags", "256")),             # cv2.error: no initial flow
    ("farneback", "opencv", "levels=2.5", ("levels", "whole number")),
    ("tvl1", "opencv", "theta=0", ("theta", "> 0")),                  # OpenCV returns NaN for it
    ("tvl1", "torch", "nscales=0", ("nscales", ">= 1")),              # cv2.error
    ("tvl1", "opencv", "scaleStep=1.5", ("scaleStep", "in (0, 1)")),  # cv2.error
    ("tvl1", "torch", "medianFiltering=7", ("medianFiltering", "3 or 5")),  # cv2.error for 4, 7
    ("tvl1", "opencv", "epsilon=-1", ("epsilon", "> 0")),
    ("tvl1", "opencv", "warps=abc", ("warps", "whole number")),
])
def test_flow_parameters_outside_their_range_exit_2_naming_the_range(tmp_path, shared_videos, method, engine,
                                                                     param, words):
    out = tmp_path / "store"
    one_line_error(run_cli("extract", *clips(shared_videos, ("part_0",)), "--out", str(out), "--method", method,
                           "--engine", engine, "--param", param, "--workers", "1"), *words)
    assert not out.exists()


def test_each_range_holds_the_defaults_of_both_engines():
    from flowstore.flow.opencv import FARNEBACK_DEFAULTS, FARNEBACK_RANGES, TVL1_DEFAULTS, TVL1_RANGES

    for defaults, ranges in ((FARNEBACK_DEFAULTS, FARNEBACK_RANGES), (TVL1_DEFAULTS, TVL1_RANGES)):
        assert set(ranges) == set(defaults)
        assert all(ranges[k].contains(v) for k, v in defaults.items())


@pytest.mark.parametrize("args, words", [
    (("--size", "0x72"), ("--size '0x72'", "positive")),
    (("--size", "96"), ("--size '96'", "WIDTHxHEIGHT")),
    (("--short-side", "0"), ("short_side", "positive")),
])
def test_bad_extract_sizes_exit_2_before_the_store_exists(tmp_path, shared_videos, args, words):
    out = tmp_path / "store"
    one_line_error(run_cli("extract", *clips(shared_videos, ("part_0",)), "--out", str(out), *args), *words)
    assert not out.exists()


@pytest.mark.parametrize("args, words", [
    (("--crop", "200"), ("--crop 200x200 does not fit", "96x72", "crop <=")),
    (("--resize", "48", "--crop", "80x60"), ("--crop 80x60 does not fit", "after --resize 48")),
    (("--crop", "0"), ("--crop '0'", "positive")),
    (("--resize", "10x-3"), ("--resize '10x-3'",)),
    (("--spatial-views", "10", "--crop", "97x50"), ("does not fit",)),
])
def test_crops_and_resizes_that_cannot_work_are_refused_before_the_feature_file(tmp_path, small_store, args,
                                                                                 words):
    out = tmp_path / "f.h5"
    one_line_error(run_cli("features", "--store", str(small_store), "--stream", "flow", "--out", str(out), *args),
                   *words)
    assert not out.exists()


def test_loader_transforms_refuse_sizes_that_are_not_positive_pixels():
    from flowstore.data import transforms as T
    from flowstore.errors import InputError

    for make, size in ((T.CenterCrop, 0), (T.ResizeClip, (224, -1)), (T.TenCrop, (0, 5)), (T.MultiScaleCrop, True),
                       (T.CenterCrop, 22.5)):
        with pytest.raises(InputError, match="size"):
            make(size)
    assert T.CenterCrop(224).size == (224, 224)


class _NaNFlow:
    method, engine, batch_size = "nan-test", "test", 4

    def prepare(self, rgb):
        import numpy as np

        return np.zeros(rgb.shape[:2], np.float32)

    def compute(self, prev, nxt):
        import numpy as np

        flows = np.zeros((len(prev), *prev[0].shape, 2), np.float32)
        flows[-1, 0, 0, 1] = np.nan
        return flows


def test_a_flow_engine_returning_nan_fails_that_video_with_a_reason_and_stores_nothing(tmp_path, shared_videos,
                                                                                       monkeypatch):
    import flowstore
    from flowstore.decode import FrameResize
    from flowstore.extract import ExtractConfig, plan_jobs, run_extract, worker
    from flowstore.store.writer import ShardAllocator

    cfg = ExtractConfig(out=str(tmp_path / "store"), method="farneback", resize=FrameResize(size=(64, 48)), workers=1)
    monkeypatch.setattr(worker, "worker_state", lambda cfg, token, dq=None: (
        _NaNFlow(), ShardAllocator(cfg.out, cfg.backend, cfg.shard_size)))
    summary = run_extract(plan_jobs(clips(shared_videos, ("part_0",))), cfg, show_progress=False, log=lambda m: None)
    assert (summary.ok, summary.failed) == (0, 1)
    (failure,) = summary.failures
    assert failure["id"] == "part_0" and "non-finite values (NaN or inf)" in failure["reason"]
    assert "flow(s) [3]" in failure["reason"]  # the last of the first batch of 4
    assert len(flowstore.open_store(cfg.out).videos) == 0


# --- 3. signals ------------------------------------------------------------------------

def _children(pid: int) -> set[int]:
    """Every descendant of ``pid`` now (from /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _interrupt(args, sig, ready, timeout=180):
    """Start ``flowstore ARGS``, wait until ``ready()``, send ``sig``; (exit code, stderr, child pids)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    p = subprocess.Popen(flowstore_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    children: set[int] = set()
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert p.poll() is None, "the run ended before the signal: " + p.communicate()[1]
            assert time.monotonic() < deadline, "not ready in time"
            children |= _children(p.pid)
            time.sleep(0.05)
        children |= _children(p.pid)
        p.send_signal(sig)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err, children


def _committed(store: Path) -> int:
    try:
        return len([line for line in (store / "commits.jsonl").read_text().splitlines() if line.strip()])
    except OSError:
        return 0


@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 1), (signal.SIGTERM, 2), (signal.SIGINT, 1),
                                          (signal.SIGINT, 2)])
def test_a_signal_stops_extract_cleanly_and_a_rerun_completes_the_store(tmp_path, shared_videos, sig, workers):
    import flowstore

    out = tmp_path / "store"
    args = ("extract", *clips(shared_videos), "--out", str(out), *FAST, "--size", "160x120",
            "--workers", str(workers))
    code, err, children = _interrupt(args, sig, lambda: _committed(out) >= 1)
    name = signal.Signals(sig).name
    assert code == 128 + sig == {"SIGTERM": 143, "SIGINT": 130}[name], err
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1, err
    n = len(flowstore.open_store(out).videos)
    assert 1 <= n < len(CLIPS)
    assert stopped[0] == f"stopped by {name}: {n} videos committed, rerun the same command to continue"
    deadline = time.monotonic() + 10  # helpers (loky's resource tracker) exit once the run's pipes close
    while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:200] for pid in children if _alive(pid)]
    assert not left, f"processes left behind: {left}"
    catalog = json.loads((out / "catalog" / "catalog.json").read_text())
    assert catalog["videos"] == n  # checkpointed: the catalog covers the whole log
    assert catalog["log"]["offset"] == (out / "commits.jsonl").stat().st_size
    assert run_cli("verify", str(out)).returncode == 0
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"{len(CLIPS) - n} ok, 0 failed this run, {n} already in the store" in r.stdout
    assert run_cli("verify", str(out)).returncode == 0
    assert sorted(flowstore.open_store(out).videos) == sorted(CLIPS)


@pytest.fixture(scope="module")
def five_video_store(tmp_path_factory, shared_videos) -> Path:
    out = tmp_path_factory.mktemp("store5") / "s"
    r = run_cli("extract", *clips(shared_videos), "--out", str(out), *FAST, "--workers", "2")
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGINT takes the same path (extract tests both)
def test_a_signal_stops_features_cleanly_and_a_rerun_computes_the_rest(tmp_path, five_video_store, sig):
    from flowstore.features.store import open_features

    out = tmp_path / "f.h5"
    args = ("features", "--store", str(five_video_store), "--stream", "rgb", "--out", str(out), "--no-progress",
            "--temporal-views", "8", "--spatial-views", "10", "--crop", "64", "--batch-size", "40",
            "--threads", "1")
    started = []

    def ready():  # the feature file exists and the model has had time to run a few batches
        if out.exists() and not started:
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 2

    code, err, children = _interrupt(args, sig, ready)
    name = signal.Signals(sig).name
    assert code == 128 + sig, err
    assert "Traceback" not in err
    stopped = [line for line in err.splitlines() if line.startswith("stopped by")]
    assert len(stopped) == 1 and stopped[0].startswith(f"stopped by {name}: "), err
    assert stopped[0].endswith(" videos committed, rerun the same command to continue")
    n = int(stopped[0].split(": ")[1].split()[0])
    with open_features(out) as fs:  # readable, and holds what the message says
        assert len(fs.videos) == n < 5
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"{5 - n} video(s) computed, {n} already stored" in r.stdout
    with open_features(out) as fs:
        assert sorted(fs.videos) == sorted(CLIPS)


# --- 7. inputs and recipes mean what they say ------------------------------------------------

def test_directory_inputs_follow_symlinked_folders_once_and_report_what_they_skip(tmp_path, shared_videos):
    from flowstore.extract import Skipped, plan_jobs

    root = tmp_path / "videos"
    (root / "a").mkdir(parents=True)
    os.symlink(shared_videos / "part_0.mp4", root / "a" / "one.mp4")
    linked = tmp_path / "elsewhere"
    linked.mkdir()
    os.symlink(shared_videos / "clean_and_jerk.mp4", linked / "two.mp4")
    os.symlink(linked, root / "b")                  # a symlinked folder: followed
    os.symlink(root, root / "a" / "loop")           # a cycle back to the top: searched once
    os.symlink(linked, root / "again")              # a second link to one folder: searched once
    os.symlink(tmp_path / "gone.mp4", root / "broken.mp4")
    (root / "notes.txt").write_text("not a video")
    skipped = Skipped()
    jobs = plan_jobs([root], skipped=skipped)
    assert [j.id for j in jobs] in (["a/one", "again/two"], ["a/one", "b/two"])
    assert [p.name for p in skipped.not_video] == ["notes.txt"]
    assert [p.name for p in skipped.broken_links] == ["broken.mp4"]
    assert len(skipped.loops) == 2

    r = run_cli("extract", str(root), "--out", str(tmp_path / "store"), *FAST, "--size", "32x24", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "skipped 1 non-video file(s): " in r.stderr and "notes.txt" in r.stderr
    assert "skipped 1 broken symlink(s): " in r.stderr
    assert "skipped 2 symlinked folder(s) searched already" in r.stderr
    assert "2 video(s)" in r.stderr


def test_a_committed_video_whose_source_changed_is_reported_not_silently_kept(tmp_path, shared_videos):
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("part_0", "test"):
        shutil.copy(shared_videos / f"{name}.mp4", videos / f"{name}.mp4")
    args = ("extract", str(videos), "--out", str(tmp_path / "store"), *FAST, "--size", "32x24", "--workers", "1")
    assert run_cli(*args).returncode == 0
    r = run_cli(*args)
    assert r.returncode == 0 and "changed" not in r.stderr + r.stdout  # unchanged: nothing to say
    with open(videos / "part_0.mp4", "ab") as f:
        f.write(b"\0" * 10)                                 # another size
    data = bytearray((videos / "test.mp4").read_bytes())
    data[-5] ^= 0xFF                                        # same size, other content
    (videos / "test.mp4").write_bytes(bytes(data))
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert "part_0: its source" in warnings[0] and "size 158581 -> 158591 bytes" in warnings[0]
    assert "test: its source" in warnings[1] and "same size, different SHA-256" in warnings[1]
    assert "extract into a new --out" in warnings[0]
    assert "2 video(s) kept as committed although their source file changed" in r.stdout
    help_text = run_cli("extract", "--help").stdout
    assert "extract it into a new --out" in " ".join(help_text.split())


@pytest.mark.parametrize("settings, words", [
    ({"retry_failed": "true"}, ("stage [extract] retry_failed = 'true'", "true or false")),
    ({"allow-failures": 1}, ("allow_failures = 1", "true or false")),
    ({"method": ["tvl1", "farneback"]}, ("method", "one value, not a list")),
    ({"workers": "2"}, ("workers = '2'", "whole number")),
    ({"bound": "20"}, ("bound = '20'", "number")),
    ({"size": True}, ("size = True", "not true/false")),
    ({"param": [["winsize=21"]]}, ("param", "single values")),
])
def test_recipe_values_must_have_the_type_of_their_option(settings, words):
    from flowstore.cli.extract import command
    from flowstore.cli.recipe import stage_argv
    from flowstore.errors import InputError

    with pytest.raises(InputError) as info:
        stage_argv(command, {"inputs": ["v"], "out": "s", **settings}, "extract")
    for word in words:
        assert word in str(info.value)


def test_a_recipe_with_a_string_for_a_flag_exits_2_before_any_stage_runs(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[recipe]\nstages = ["extract"]\n[extract]\ninputs = ["v"]\nout = "s"\nretry_failed = "true"\n')
    one_line_error(run_cli("run", str(recipe)), "stage [extract] retry_failed = 'true'")
    assert not (tmp_path / "s").exists()
