"""``--executor ray``: the same store as a local run, and the faults survived (a worker killed
mid-video, a node lost, a poison video, the driver killed). Ray runs on 127.0.0.1 only, in a
two-node ``ray.cluster_utils.Cluster`` started once for the module."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from flowstore.decode import FrameResize
from flowstore.errors import EnvironmentProblem
from flowstore.extract import ExtractConfig, plan_jobs, run_extract
from flowstore.store.verify import verify_store
from helpers import REPO, all_records, flowstore_cmd

# before Ray is imported: else it swaps 127.0.0.1 for the machine's outward address
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray")
TESTS = Path(__file__).resolve().parent
CLIPS = ["demo.mp4", "part_0.mp4", "test.mp4", "v_Basketball_g01_c01.avi"]
SIZE = (96, 72)


def _config(out, **kw) -> ExtractConfig:
    return ExtractConfig(out=str(out), method="farneback", resize=FrameResize(size=kw.pop("size", SIZE)), workers=2, **kw)


@pytest.fixture(scope="module")
def cluster():
    """Two one-CPU nodes on 127.0.0.1, a temp dir of their own; shut down after the module."""
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="fsray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_TMPDIR", "PYTHONPATH")}
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # else Ray swaps 127.0.0.1 for the outward address
    os.environ["RAY_TMPDIR"] = tmp
    # the workers import this worktree's flowstore and the poison decoder module
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), str(TESTS), saved["PYTHONPATH"]]))
    node = dict(num_cpus=1, object_store_memory=80 << 20)
    c = Cluster(initialize_head=True, head_node_args=dict(node, include_dashboard=False, temp_dir=f"{tmp}/ray"))
    c.add_node(**node)
    c.node_args = node
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
    yield c
    ray.shutdown()
    c.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def jobs(shared_videos):
    return plan_jobs([str(shared_videos / c) for c in CLIPS])


@pytest.fixture(scope="module")
def reference(tmp_path_factory, jobs):
    """The records of a local run, per backend."""
    out = {}
    for backend in ("lmdb", "hdf5"):
        store = tmp_path_factory.mktemp(f"local-{backend}") / "store"
        run_extract(jobs, _config(store, backend=backend), show_progress=False)
        out[backend] = all_records(store)
    return out


def _check(store, reference, jobs, failed=()):
    assert verify_store(store).ok
    records = all_records(store)
    expected = {k: v for k, v in reference.items() if k[0] not in failed}
    assert records == expected
    assert {k[0] for k in records} == {j.id for j in jobs} - set(failed)


@pytest.mark.parametrize("backend", ["lmdb", "hdf5"])
def test_same_records_as_a_local_run(cluster, jobs, reference, tmp_path, backend):
    summary = run_extract(jobs, _config(tmp_path / "s", backend=backend), executor="ray", show_progress=False)
    assert summary.ok == len(jobs) and not summary.failures
    _check(tmp_path / "s", reference[backend], jobs)
    assert not list((tmp_path / "s").glob(".worker-crash-*")) and not list((tmp_path / "s").glob(".write-test-*"))


def _busy_workers() -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if cmd.startswith("ray::WorkerActor.call"):
            out.append(p.pid)
    return out


def _run_in_thread(*args, **kwargs):
    box = {}

    def target():
        try:
            box["summary"] = run_extract(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            box["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def _wait_for(predicate, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_worker_killed_mid_video(cluster, jobs, reference, tmp_path):
    store = tmp_path / "s"
    thread, box = _run_in_thread(jobs, _config(store), executor="ray", show_progress=False)
    import psutil

    def worker_writing_a_shard():
        """A worker inside a video: in a call, with a shard of this store open (an actor is in
        its call a moment before it opens the shard)."""
        for pid in _busy_workers():
            try:
                shards = [f.path for f in psutil.Process(pid).open_files() if f.path.startswith(f"{store}/shards/")]
            except psutil.Error:  # it finished or died meanwhile
                continue
            if shards:
                return pid, shards
        return None

    pid, shards = _wait_for(worker_writing_a_shard)
    os.kill(pid, signal.SIGKILL)
    written = {s: os.stat(s).st_mtime_ns for s in shards}
    thread.join(300)
    assert "error" not in box, box.get("error")
    assert box["summary"].ok == len(jobs)
    _check(store, reference["lmdb"], jobs)
    assert shards and {s: os.stat(s).st_mtime_ns for s in shards} == written  # its shard was never reopened


@pytest.fixture
def poison_decoder():
    """The poison decoder registered here (the workers import its module themselves), and
    unregistered after the test so that the registry lists only the built-in decoders again."""
    from flowstore.decode import DECODERS

    import ray_poison_decoder

    yield ray_poison_decoder
    DECODERS.unregister(ray_poison_decoder.NAME)
    sys.modules.pop("ray_poison_decoder")


def test_poison_video_fails_after_max_retries(cluster, jobs, reference, tmp_path, poison_decoder):
    ray_poison_decoder = poison_decoder
    store = tmp_path / "s"
    summary = run_extract(jobs, _config(store, decoder=ray_poison_decoder.NAME), executor="ray",
                          executor_options={"max_retries": 3}, show_progress=False)
    poison = [j.id for j in jobs if j.id == ray_poison_decoder.POISON_STEM]
    assert summary.ok == len(jobs) - 1
    assert [f["id"] for f in summary.failures] == poison
    assert summary.failures[0]["reason"] == "worker died 3 times on this video: SIGSEGV"
    _check(store, reference["lmdb"], jobs, failed=poison)
    assert not list(store.glob(".worker-crash-*"))


def test_node_lost_mid_run(cluster, jobs, reference, tmp_path):
    store = tmp_path / "s"
    doomed = cluster.worker_nodes and next(iter(cluster.worker_nodes))
    thread, box = _run_in_thread(jobs, _config(store), executor="ray", show_progress=False)
    _wait_for(lambda: len(_busy_workers()) >= 2)  # both nodes inside a video
    cluster.add_node(**cluster.node_args)          # room for the actor to move to
    cluster.remove_node(doomed)
    thread.join(300)
    assert "error" not in box, box.get("error")
    assert box["summary"].ok == len(jobs)
    _check(store, reference["lmdb"], jobs)


@pytest.mark.slow
def test_driver_killed_then_rerun_resumes(cluster, jobs, reference, tmp_path):
    store = tmp_path / "s"
    argv = flowstore_cmd("extract", *[j.path for j in jobs], "--out", str(store), "--method", "farneback",
                         "--size", f"{SIZE[0]}x{SIZE[1]}", "--workers", "2", "--executor", "ray",
                         "--ray-address", cluster.address, "--no-progress")
    env = dict(os.environ)
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: (store / "commits.jsonl").exists() and (store / "commits.jsonl").read_text().strip(), 180)
    finally:
        driver.kill()
        driver.wait()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "already in the store" in done.stdout and " 0 already" not in done.stdout
    _check(store, reference["lmdb"], jobs)


def test_without_ray_it_says_how_to_install(monkeypatch, jobs, tmp_path):
    from click.testing import CliRunner

    from flowstore.cli.main import cli

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(EnvironmentProblem, match=r"pip install 'flowstore\[ray\]'"):
        run_extract(jobs, _config(tmp_path / "s"), executor="ray")
    assert not (tmp_path / "s").exists()  # nothing was done
    result = CliRunner().invoke(cli, ["extract", jobs[0].path, "--out", str(tmp_path / "s"), "--executor", "ray"])
    assert result.exit_code == 2 and "pip install" in result.output


def test_recipe_maps_executor_options():
    from flowstore.cli.recipe import plan_stages

    recipe = {"recipe": {"stages": ["extract"]},
              "extract": {"inputs": ["v"], "out": "s", "executor": "ray", "ray_address": "auto", "gpus-per-worker": 0.5}}
    argv = plan_stages(recipe)[0].argv
    assert argv[argv.index("--executor") + 1] == "ray"
    assert argv[argv.index("--ray-address") + 1] == "auto"
    assert argv[argv.index("--gpus-per-worker") + 1] == "0.5"


def test_features_on_ray_match_local_and_resume(cluster, jobs, tmp_path):
    import numpy as np

    from flowstore.features.extract import FeatureConfig, extract_features
    from flowstore.features.store import open_features

    store = tmp_path / "store"
    run_extract(jobs, _config(store), show_progress=False)
    local = extract_features(store, tmp_path / "local.h5", FeatureConfig(stream="flow"), show_progress=False)
    first = extract_features(store, tmp_path / "ray.h5", FeatureConfig(stream="flow"), show_progress=False,
                             executor="ray", executor_options={"workers": 2})
    assert first.computed == local.computed == len(jobs)
    again = extract_features(store, tmp_path / "ray.h5", FeatureConfig(stream="flow"), show_progress=False,
                             executor="ray")
    assert again.computed == 0 and again.skipped == len(jobs)
    with open_features(tmp_path / "local.h5") as a, open_features(tmp_path / "ray.h5") as b:
        assert sorted(a.videos) == sorted(b.videos)
        np.testing.assert_allclose(a.features(b.videos), b.features(), rtol=1e-5, atol=1e-6)
        assert a.provenance["store"] == b.provenance["store"]


def test_executor_registry_and_cli_choices():
    from click.testing import CliRunner

    from flowstore.cli.main import cli
    from flowstore.extract import list_executors
    from flowstore.extract.executor import executor_class

    assert list_executors() == ["local", "ray"]
    assert executor_class("ray").name == "ray"
    result = CliRunner().invoke(cli, ["extract", "x.mp4", "--out", "s", "--executor", "spark"])
    assert result.exit_code == 2 and "'local', 'ray'" in result.output
