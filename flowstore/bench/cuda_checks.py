"""Device checks: each engine and the loader on a torch device against the CPU result.

One plain function per check, taking the device (``"cuda"`` on a GPU machine, ``"cpu"`` in the
smoke run that keeps them from rotting). ``tests/test_cuda.py`` runs them under ``pytest -m
cuda`` and ``benchmarks/gpu_check.py`` runs them directly where pytest is not installed. A
check returns a dict of what it measured and raises ``AssertionError`` when a result is off;
:class:`CheckSkipped` says why a check could not run (a missing optional package).

Tolerances (stated once, here):

* torch TV-L1 on the device vs on the CPU, fused (compiled, CUDA graphs; on the CPU the fused
  path uncompiled) and unfused: mean |d| <= 0.05 px and mean EPE to the ground truth within 2%
  (the iteration stops on a threshold, so float rounding may change where it stops);
* torch Farneback: mean |d| <= 0.01 px (no data-dependent stopping);
* a learned model in fp16 vs fp32 (random weights): mean |d| <= 5% of the mean |flow| + 0.05 px;
* pinned-memory loading: the device batch is bit-identical to the unpinned CPU batch;
* ``--gpu 0,0``: two workers on one device extract both clips, every flow identical in shape
  and within 1 quantization step of a one-worker run.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import EnvironmentProblem

#: flow_gt pair the engine checks share (``../shared/data/flow_gt/NAME``)
GT_PAIR = "sintel_clean_alley_1_0002"


class CheckSkipped(EnvironmentProblem):
    """A check that cannot run here (no CUDA, a package missing); the message says why."""


def shared_data(repo: Path | None = None) -> Path | None:
    """The shared test data beside the repository, or ``shared/data`` inside it, or None."""
    repo = repo or Path(__file__).resolve().parents[2]
    for where in (repo.parent / "shared" / "data", repo / "shared" / "data"):
        if (where / "README.md").exists():
            return where
    return None


def texture_frames(count: int, width: int, height: int, seed: int = 0) -> list[np.ndarray]:
    """``count`` RGB frames of a smooth random texture moving 1.5 px right and 0.5 px down per frame."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.integers(0, 256, (height + 64, width + 64, 3), dtype=np.uint8), (0, 0), 2.0)
    frames = []
    for k in range(count):
        m = np.float32([[1, 0, 16 - 1.5 * k % 32], [0, 1, 16 - 0.5 * k % 32]])
        frames.append(np.ascontiguousarray(cv2.warpAffine(big, m, (width, height), borderMode=cv2.BORDER_REFLECT)))
    return frames


def gt_pair(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The shared flow_gt pair resized to ``width`` x ``height`` (flow scaled with it), or a moving
    texture with no ground truth when the shared data is missing."""
    import cv2

    from ..flo import read_flo

    data = shared_data()
    if data is None:
        a, b = texture_frames(2, width, height)
        return a, b, None
    folder = data / "flow_gt" / GT_PAIR
    rgb = [cv2.cvtColor(cv2.imread(str(folder / f"frame{k}.png")), cv2.COLOR_BGR2RGB) for k in (1, 2)]
    gt = read_flo(folder / "flow.flo")
    h0, w0 = gt.shape[:2]
    rgb = [cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in rgb]
    gt = cv2.resize(gt, (width, height), interpolation=cv2.INTER_NEAREST) * np.float32([width / w0, height / h0])
    return rgb[0], rgb[1], gt


def _epe(flow: np.ndarray, gt: np.ndarray | None) -> float | None:
    if gt is None:
        return None
    from ..flo import mean_epe

    return float(mean_epe(flow, gt))


def check_torch_engine(method: str, device: str, size=(160, 128), fused: bool | None = None) -> dict:
    """torch TV-L1 / Farneback on ``device`` against the same engine on the CPU (TV-L1: ``fused``
    or not; the fused path is compiled on CUDA only, compiling on the CPU takes a minute)."""
    from ..flow import build_flow

    a, b, gt = gt_pair(*size)
    options = {} if fused is None else {"fused": fused, "compile": None if device.startswith("cuda") else False}
    on_device = build_flow(method, engine="torch", device=device, batch_size=1, **options)(a, b)
    on_cpu = build_flow(method, engine="torch", device="cpu", batch_size=1)(a, b)
    diff = float(np.abs(on_device - on_cpu).mean())
    epe_dev, epe_cpu = _epe(on_device, gt), _epe(on_cpu, gt)
    limit = 0.05 if method == "tvl1" else 0.01
    assert np.isfinite(on_device).all(), f"{method} on {device}: non-finite flow"
    assert diff <= limit, f"{method} on {device} differs from the CPU by {diff:.4f} px (limit {limit})"
    if method == "tvl1" and gt is not None:
        assert abs(epe_dev - epe_cpu) <= 0.02 * epe_cpu, f"EPE {epe_dev:.3f} on {device} vs {epe_cpu:.3f} on the CPU"
    return {"mean_abs_diff_px": diff, "epe_device": epe_dev, "epe_cpu": epe_cpu, "size": list(size), **options}


def ptlflow_available() -> bool:
    try:
        from ..flow.learned import import_ptlflow

        import_ptlflow()
        return True
    except ImportError:
        return False


def check_fp16(model: str, device: str, size=(128, 96)) -> dict:
    """A learned model (random weights, seed 0) in fp16 against fp32 on ``device``; on the CPU
    fp16 is ignored, so there both runs are fp32 and must agree exactly."""
    if not ptlflow_available():
        raise CheckSkipped("ptlflow is not importable")
    from ..flow import build_flow
    from ..flow.catalog import fp16_tolerance, min_frame_side
    from ..flow.learned import save_random_checkpoint

    side = min_frame_side(model) or 0  # below it the model's coarsest level is 1 px wide: NaN
    a, b, _ = gt_pair(*(max(s, side) for s in size))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = save_random_checkpoint(model, Path(tmp) / f"{model}-random.ckpt", seed=0)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # fp16 ignored on the CPU
            f32 = build_flow(f"ptlflow:{model}", device=device, ckpt=ckpt)(a, b)
            f16 = build_flow(f"ptlflow:{model}", device=device, ckpt=ckpt, fp16=True)(a, b)
    if not np.isfinite(f32).all():
        raise CheckSkipped(f"{model} gives non-finite flow in fp32 at {a.shape[1]}x{a.shape[0]}")
    diff = float(np.abs(f16 - f32).mean())
    scale = float(np.abs(f32).mean())
    assert np.isfinite(f16).all(), f"{model} fp16 on {device}: non-finite flow"
    assert diff <= fp16_tolerance(model, scale), f"{model} fp16 differs from fp32 by {diff:.4f} px (mean |flow| {scale:.3f})"
    return {"mean_abs_diff_px": diff, "mean_abs_flow_px": scale}


def clip_folder(folder: Path, count: int = 2, frames: int = 6, size=(64, 48)) -> Path:
    """``count`` short MJPG clips (moving textures) in ``folder``."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        writer = cv2.VideoWriter(str(folder / f"clip{k}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 25, size)
        for frame in texture_frames(frames, *size, seed=k):
            writer.write(frame[:, :, ::-1])
        writer.release()
    return folder


def _backend() -> str:
    try:
        import lmdb  # noqa: F401

        return "lmdb"
    except ImportError:
        return "hdf5"


def _extract(clips: Path, out: Path, *device_args: str, method: str = "farneback", size: str = "64x48") -> dict:
    """``flowstore extract`` in a subprocess (the real CLI); its summary JSON."""
    summary = out.parent / f"{out.name}-summary.json"
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "flowstore", "extract", str(clips), "--out", str(out), "--method", method,
           "--engine", "torch", "--format", _backend(), "--size", size, "--no-progress",
           "--summary-json", str(summary), *device_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return json.loads(summary.read_text())


def _flows(store: Path) -> dict:
    import flowstore

    with flowstore.open_store(store) as reader:
        return {(v, i): reader.flow(v, i) for v in reader.videos for i in range(reader.num_flows(v))}


def check_two_workers_one_device(device: str) -> dict:
    """``--gpu 0,0`` (``--device cpu,cpu`` on the CPU): two workers on one device."""
    two = "0,0" if device.startswith("cuda") else None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = clip_folder(tmp / "clips")
        args2 = ["--gpu", two] if two else ["--device", f"{device},{device}"]
        args1 = ["--gpu", "0"] if two else ["--device", device, "--workers", "1"]
        s2 = _extract(clips, tmp / "two", *args2)
        s1 = _extract(clips, tmp / "one", *args1)
        assert s2["ok"] == 2 and not s2["failures"], s2
        f2, f1 = _flows(tmp / "two"), _flows(tmp / "one")
    assert f2.keys() == f1.keys(), (sorted(f2), sorted(f1))
    worst = max(float(np.abs(f2[k] - f1[k]).max()) for k in f1)
    assert worst <= 20.0 * 2 / 255 + 1e-6, f"two workers differ from one by up to {worst:.3f} px"
    return {"videos": s2["ok"], "pairs": s2["pairs"], "max_abs_diff_px": worst}


def check_pinned_loading(device: str) -> dict:
    """A loader batch with ``pin_memory=True`` reaches ``device`` unchanged."""
    import torch

    import flowstore
    from ..data import make_loader
    from ..data.dataset import StoreClipDataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clips = clip_folder(tmp / "clips")
        _extract(clips, tmp / "store", "--device", "cpu", "--workers", "1")
        with flowstore.open_store(tmp / "store") as reader:
            batches = {}
            for pin in (False, True) if device.startswith("cuda") else (False,):
                ds = StoreClipDataset(reader, modality="flow", sampling="stack", flow_values="uint8", seed=1,
                                      train=False)
                loader = make_loader(ds, batch_size=2, shuffle=False, num_workers=1, pin_memory=pin)
                batch = next(iter(loader))
                flow = batch["flow"]
                batches[pin] = (flow.is_pinned() if pin else False, flow.to(device, non_blocking=True))
        if True in batches:
            assert batches[True][0], "pin_memory=True gave an unpinned batch"
            assert torch.equal(batches[True][1].cpu(), batches[False][1].cpu()), "pinned batch differs"
        on_device = batches[max(batches)][1]
        assert on_device.device.type == torch.device(device).type
    return {"batch_shape": list(on_device.shape), "pinned": bool(batches.get(True, (False,))[0])}


#: name -> (function, keyword arguments): what ``gpu_check`` and ``tests/test_cuda.py`` run
CHECKS = {
    "torch_tvl1_vs_cpu": (check_torch_engine, {"method": "tvl1", "fused": True}),
    "torch_tvl1_unfused_vs_cpu": (check_torch_engine, {"method": "tvl1", "fused": False}),
    "torch_farneback_vs_cpu": (check_torch_engine, {"method": "farneback"}),
    "gmflow_fp16_vs_fp32": (check_fp16, {"model": "gmflow"}),
    "pinned_memory_loading": (check_pinned_loading, {}),
    "gpu_0_0_two_workers": (check_two_workers_one_device, {}),
}


def run_check(name: str, device: str, **overrides) -> dict:
    """Run one of :data:`CHECKS`: ``{"status": "passed"|"failed"|"skipped", ...}``."""
    import time

    function, kwargs = CHECKS[name]
    start = time.perf_counter()
    try:
        result = {"status": "passed", **function(device=device, **{**kwargs, **overrides})}
    except CheckSkipped as exc:
        result = {"status": "skipped", "reason": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, the others still run
        result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:2000]}
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result
