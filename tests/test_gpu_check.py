"""benchmarks/gpu_check.py cannot rot: its smoke run (tiny sizes, CPU) runs here, and the
flowstore modules it imports work without the packages benchmarks/gpu_wheels.txt would add."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import REPO


@pytest.mark.slow
def test_smoke_run_writes_json_and_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--smoke", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["smoke"] and report["seconds"] < 120
    parts = {r["part"] for r in report["rows"]}
    assert {"tvl1", "farneback", "extract"} <= parts
    assert all(r["status"] == "passed" for r in report["checks"]["direct"].values()
               if not r.get("reason", "").startswith("ptlflow is not importable")), report["checks"]
    assert "skipped" in report["checks"]["pytest"]["result"]  # no CUDA here: the cuda tests skip
    assert any(r["ratio_to_cpu"] for r in report["rows"])
    busy = [r["flow_engine_busy"] for r in report["rows"] if r["part"] == "extract"]
    assert busy and all(0 < b <= 1 for b in busy)
    loader = report["extract"]["loader"]  # part 4 on the extract run's store
    assert loader["decode"]["clips_per_s"]["device_decode"] > 0 and loader["online_flow"]["clips_per_s"]["online"] > 0
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| part | config | device | pairs/s |" in table and "ratio to CPU" in table


BLOCKED = """
import importlib.abc, sys
BLOCKED = {"lmdb", "ptlflow"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} blocked: not on the GPU machine")
sys.meta_path.insert(0, Block())
"""


def test_check_imports_work_without_lmdb_and_ptlflow(tmp_path):
    """What gpu_check imports and runs, with lmdb and ptlflow unimportable (as on the GPU machine):
    the flow engines, the checks (gmflow one skipped), an HDF5 extraction and its loader."""
    code = BLOCKED + textwrap.dedent(f"""
        import torch; torch.set_num_threads(1)
        sys.path.insert(0, {str(REPO / 'benchmarks')!r})
        import gpu_check
        import flowstore.cli.main, flowstore.data, flowstore.flow.torch_engines, flowstore.extract
        from flowstore.bench import cuda_checks
        assert cuda_checks._backend() == "hdf5" and not cuda_checks.ptlflow_available()
        assert cuda_checks.run_check("gmflow_fp16_vs_fp32", "cpu")["status"] == "skipped"
        r = cuda_checks.run_check("torch_farneback_vs_cpu", "cpu", size=(32, 24))
        assert r["status"] == "passed", r
        from pathlib import Path
        from flowstore.decode import FrameResize
        from flowstore.extract import ExtractConfig, VideoJob, run_extract
        clips = cuda_checks.clip_folder(Path({str(tmp_path)!r}) / "clips", count=1, frames=3, size=(32, 24))
        cfg = ExtractConfig(out={str(tmp_path / 'store')!r}, backend="hdf5", method="farneback", workers=1)
        s = run_extract([VideoJob("c", str(clips / "clip0.avi"))], cfg, show_progress=False)
        assert s.ok == 1, s.failures
        import flowstore
        with flowstore.open_store({str(tmp_path / 'store')!r}) as reader:
            assert reader.flow("c", 0).shape == (24, 32, 2)
        assert "lmdb" not in sys.modules and "ptlflow" not in sys.modules
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout[-2000:] + proc.stderr[-3000:]


def test_gpu_wheels_are_pinned_and_fit_64_mib():
    names, total = set(), 0
    for line in (REPO / "benchmarks" / "gpu_wheels.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        requirement, _, comment = line.partition("#")
        name, sep, version = requirement.strip().partition("==")
        assert sep and version, f"not pinned: {line}"
        names.add(name.lower())
        total += int(comment.split()[0])
    assert {"lmdb", "ptlflow", "pytest"} <= names
    assert total <= 64 * 2**20
