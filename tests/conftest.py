"""Shared test fixtures.

Real test data lives in ``../shared/data`` beside the repository (read-only). Tests that need
it skip on a developer machine without it, but FAIL when ``CI`` is set: CI must never go green
by skipping the real-data tests.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def require_shared_data() -> Path:
    """Return ../shared/data, or fail (CI) / skip (elsewhere) when it is missing."""
    if not (SHARED_DATA / "README.md").exists():
        message = f"shared test data not found at {SHARED_DATA}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is an error, not a skip)")
        pytest.skip(message)
    return SHARED_DATA


def require_package(name: str, extra: str = "interop"):
    """Import and return the optional package ``name``, or fail (CI) / skip (elsewhere) when it is
    missing: ``make test`` installs it (the ``interop`` extra, and mmaction2 with --no-deps)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"{name} is not importable ({exc}); `make venv` installs the {extra!r} extra"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this is an error, not a skip)")
        pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return require_shared_data()


@pytest.fixture(scope="session")
def shared_videos(shared_data) -> Path:
    return shared_data / "videos"


@pytest.fixture(scope="session")
def flow_gt_dir(shared_data) -> Path:
    return shared_data / "flow_gt"


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch intra-op thread for a module: the 2 cores are shared, and torch's many small
    ops wait on straggling threads when the CPU is oversubscribed."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def torch_two_threads():
    """At most two torch threads for a module (the machine's two cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)
