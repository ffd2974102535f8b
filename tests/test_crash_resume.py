"""Nothing lost, nothing duplicated: kill -9 at random moments, rerun the same command, and the
store verifies and holds byte-identical records to an uninterrupted run."""
import os
import random
import signal
import subprocess
import time

import pytest

from flowstore.store.manifest import load_manifest
from flowstore.store.verify import verify_store
from tests.helpers import REPO, all_records, flowstore_cmd


def extract_args(inputs, out, backend):
    return ["extract", *map(str, inputs), "--out", str(out), "--format", backend, "--method", "farneback",
            "--size", "96x72", "--workers", "2", "--shard-size", "300KB", "--no-progress"]


def start(args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(flowstore_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, start_new_session=True)


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_kill_9_and_resume_is_byte_identical(tmp_path, shared_data, backend):
    videos = shared_data / "videos"
    clips = [videos / "part_0.mp4", shared_data / "bad_inputs" / "clip é 01.mp4",
             videos / "v_Basketball_g01_c01.avi", videos / "test.avi"]
    # eight videos (each clip twice, under two folders) so that kills land between commits
    for folder in ("a", "b"):
        (tmp_path / "in" / folder).mkdir(parents=True)
        for clip in clips:
            (tmp_path / "in" / folder / clip.name).symlink_to(clip)
    inputs = [tmp_path / "in"]
    reference = tmp_path / "reference"
    started = time.perf_counter()
    ref = subprocess.run(flowstore_cmd(*extract_args(inputs, reference, backend)), capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    full_run = time.perf_counter() - started  # kill moments scale with this machine's speed
    assert ref.returncode == 0, ref.stderr
    expected = all_records(reference)
    assert len(expected) > 900
    started = time.perf_counter()  # a rerun with nothing left to do: start-up and planning
    noop = subprocess.run(flowstore_cmd(*extract_args(inputs, reference, backend)), capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    startup = time.perf_counter() - started
    assert noop.returncode == 0
    work = max(full_run - startup, 0.5)

    out = tmp_path / "killed"
    rng = random.Random(1234)
    kills, partial_states = 0, set()
    stretch = 1.0  # grows while kills land before any new commit (a machine slower now than when measured)
    for attempt in range(12):
        proc = start(extract_args(inputs, out, backend))
        # random moments, from interpreter start-up to well into what is left of the work (each
        # kill leaves less: delays shrink with it, so later attempts are killed too); the last
        # attempt runs to the end
        done_before = len(load_manifest(out)["videos"]) if (out / "manifest.json").exists() else 0
        left = 8 - done_before
        delay = stretch * (rng.uniform(0.3, 1.0) * startup + rng.uniform(0.1, 0.7) * work * left / 8)
        if attempt == 11:
            delay = 600
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the main process and all its workers, at once
            proc.wait()
            kills += 1
            done = len(load_manifest(out)["videos"]) if (out / "manifest.json").exists() else 0
            if (out / "manifest.json").exists():
                partial_states.add(done)
            stretch = stretch * 1.6 if done == done_before else 1.0
            continue
        stdout, stderr = proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        break
    assert kills >= 3, f"only {kills} kills landed; the test did not exercise resume"
    assert partial_states - {0, 8}, f"no kill landed between commits (committed counts seen: {partial_states})"
    report = verify_store(out, decode=True)
    assert report.ok, report.problems[:5]
    got = all_records(out)
    assert got.keys() == expected.keys()
    assert all(got[k] == expected[k] for k in expected), "records differ from the uninterrupted run"
    # one more rerun is a no-op
    again = subprocess.run(flowstore_cmd(*extract_args(inputs, out, backend)), capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    assert again.returncode == 0 and "8 already in the store" in again.stdout
