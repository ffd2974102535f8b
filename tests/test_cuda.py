"""CUDA checks (``pytest -m cuda``): every check of :mod:`flowstore.bench.cuda_checks` on the GPU
against the CPU result; they skip without CUDA. ``benchmarks/gpu_check.py`` runs this file and
``tests/test_gpu_check.py`` runs the same checks on the CPU, so they cannot rot."""
from __future__ import annotations

import pytest

from flowstore.bench.cuda_checks import CHECKS, run_check

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_on_cuda(name):
    result = run_check(name, "cuda")
    if result["status"] == "skipped":
        pytest.skip(result["reason"])
    assert result["status"] == "passed", result["reason"]
