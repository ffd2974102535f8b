"""extract through the torch engines and a ptlflow model loaded from --ckpt, on a shared clip."""
import json

import numpy as np
import pytest

import flowstore
from tests.helpers import all_records, run_cli


def test_torch_engine_through_extract(tmp_path, shared_videos):
    out = tmp_path / "s"
    result = run_cli("extract", str(shared_videos / "part_0.mp4"), "--out", str(out), "--method", "farneback",
                     "--device", "cpu", "--batch-size", "4", "--size", "64x48", "--workers", "1", "--no-progress")
    assert result.returncode == 0, result.stderr
    info = json.loads(run_cli("info", str(out), "--json").stdout)
    assert info["engine"] == "torch" and info["flow"]["device"] == "cpu" and info["flow"]["batch_size"] == 4
    # the same pairs through OpenCV: the torch engine stores (nearly) the same quantized flow
    ref = tmp_path / "ref"
    assert run_cli("extract", str(shared_videos / "part_0.mp4"), "--out", str(ref), "--method", "farneback",
                   "--size", "64x48", "--workers", "1", "--no-progress", "--flow-codec", "png").returncode == 0
    with flowstore.open_store(out) as a, flowstore.open_store(ref) as b:
        assert a.num_flows("part_0") == b.num_flows("part_0") == 31
        diff = np.abs(a.flow("part_0", 5) - b.flow("part_0", 5))
        assert np.median(diff) <= 0.2  # JPEG q95 vs PNG of (almost) the same values


def test_gmflow_from_a_checkpoint_file_through_extract(tmp_path, shared_videos):
    pytest.importorskip("ptlflow")
    from flowstore.flow.learned import save_random_checkpoint

    ckpts = [save_random_checkpoint("gmflow", tmp_path / f"gmflow_seed{s}.ckpt", seed=s) for s in (0, 1)]
    args = ["extract", str(shared_videos / "part_0.mp4"), "--method", "gmflow", "--size", "64x48",
            "--batch-size", "4", "--workers", "1", "--no-progress", "--flow-codec", "png"]
    stores = []
    for i, ckpt in enumerate([ckpts[0], ckpts[0], ckpts[1]]):
        out = tmp_path / f"s{i}"
        result = run_cli(*args, "--out", str(out), "--ckpt", str(ckpt), timeout=900)
        assert result.returncode == 0, result.stderr
        stores.append(out)
    info = json.loads(run_cli("info", str(stores[0]), "--json").stdout)
    assert info["engine"] == "ptlflow" and info["method"] == "gmflow"
    assert info["flow"]["ckpt_sha256"] and info["videos"][0]["num_flows"] == 31
    with flowstore.open_store(stores[0]) as s:
        assert s.flow("part_0", 0).shape == (48, 64, 2) and s.flow("part_0", 0).dtype == np.float32
    same, other = all_records(stores[0]), all_records(stores[1])
    assert same == other  # deterministic on the CPU
    third = all_records(stores[2])
    assert any(third[k] != same[k] for k in same if k[1] == "flow_x")  # other weights, other flow


def test_missing_checkpoint_is_a_clear_error(tmp_path, shared_videos, monkeypatch):
    pytest.importorskip("ptlflow")
    monkeypatch.delenv("FLOWSTORE_CKPT_DIR", raising=False)
    result = run_cli("extract", str(shared_videos / "part_0.mp4"), "--out", str(tmp_path / "s"), "--method", "gmflow",
                     "--ckpt", str(tmp_path / "nope.ckpt"))
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "--ckpt" in result.stderr and "Traceback" not in result.stderr


def test_several_devices_one_worker_each(tmp_path, shared_videos):
    """--gpu 0,1 / --device a,b: one worker per device, each holding its own device for the run
    (exercised here with two CPU 'devices' through the same code path)."""
    out = tmp_path / "s"
    result = run_cli("extract", str(shared_videos / "part_0.mp4"), str(shared_videos / "test.avi"), "--out", str(out),
                     "--method", "farneback", "--device", "cpu,cpu", "--size", "64x48", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "2 worker(s)" in result.stderr
    info = json.loads(run_cli("info", str(out), "--json").stdout)
    assert info["engine"] == "torch" and len(info["videos"]) == 2
    assert run_cli("verify", str(out), "--no-progress").returncode == 0
