"""The GPU check: everything flowstore does on a GPU, measured by one command in <= 8 minutes.

    PYTHONPATH=. python3 benchmarks/gpu_check.py [--out DIR] [--smoke] [--budget SECONDS]

Writes DIR/gpu_check.json and DIR/gpu_check.md (DIR: --out, else $OUT, else ./gpu_check_out):

1. the device checks (``pytest -m cuda tests/test_cuda*.py``; without pytest the same checks of
   flowstore/bench/cuda_checks.py are called directly): each torch engine on CUDA against the
   CPU, fp16 against fp32, pinned-memory loading, ``--gpu 0,0`` = two workers on one device;
2. pairs/s at 340x256 of torch TV-L1 (batch 1, 8, 32, 128, 256, fused and unfused, and the
   automatic batch size), torch Farneback and each learned model of the flow registry (every
   method with a ptlflow engine; fp32 and fp16, batch 1, 8, 32), with OpenCV (or, where OpenCV
   lacks the method, the torch engine) on the CPU in the same run;
3. ``flowstore extract --gpu 0`` on the shared clips (cut short) with its "flow engine busy"
   share, and the same extraction on the CPU;
4. the loader's clips/s to the device on that store: cv2 decoding in the workers against nvJPEG
   (``decode_device``), and stored flow against flow computed online (torch TV-L1);
and every figure as a ratio to its CPU counterpart. Parts that cannot run (no ptlflow, no
``cv2.optflow``, no lmdb: HDF5 is used instead, the time budget spent) are listed one line each.

Without CUDA (or with --smoke) the same code runs on the CPU with tiny sizes in under 2 minutes;
tests/test_gpu_check.py runs it that way. Nothing is installed or downloaded; the optional
packages are used when they import (see benchmarks/gpu_wheels.txt).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from flowstore.bench.cuda_checks import CHECKS, clip_folder, run_check, shared_data, texture_frames  # noqa: E402

SHARED_CLIPS = ("test.mp4", "skateboarding.mp4", "clean_and_jerk.mp4", "v_Basketball_g01_c01.avi",
                "demo.mp4", "part_0.mp4")


class Plan:
    """Sizes of one run: full on a GPU, tiny in the smoke run."""

    def __init__(self, smoke: bool, device: str):
        self.smoke, self.device = smoke, device
        self.size = (64, 48) if smoke else (340, 256)
        self.tvl1_batches = (1, 2) if smoke else (1, 8, 32, 128, 256)
        self.learned_batches = (1, 2) if smoke else (1, 8, 32)
        self.min_pairs = 2 if smoke else 8       # timed pairs at least (batch 1: several batches)
        self.cpu_pairs = 2 if smoke else 4       # pairs of each CPU counterpart
        models = learned_methods()
        self.models = models[:1] if smoke else models
        # the fused TV-L1 path compiles on a GPU; in the smoke run it runs uncompiled (inductor on
        # the CPU takes ~1 min to compile), so that the same code runs in its 2 minutes
        self.fused_compile = None if device.startswith("cuda") else False
        self.extract_frames = 5 if smoke else 40  # frames per clip of the device extract run
        self.extract_cpu_frames = 5 if smoke else 8


def learned_methods() -> list[str]:
    """The learned models to time: every method of the flow registry with a ptlflow engine (the
    short names, e.g. gmflow, neuflow2, raft), gmflow first."""
    from flowstore.flow.registry import list_engines, list_methods

    names = [m for m in list_methods() if "ptlflow" in list_engines(m)]
    return sorted(names, key=lambda m: (m != "gmflow", m))


def _import(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any failure to import means "not here"
        return None


def environment() -> dict:
    import cv2
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cv2": cv2.__version__,
           "cuda": torch.cuda.is_available(), "cpus": os.cpu_count(),
           "cv2_optflow": hasattr(cv2, "optflow"), "torch_threads": torch.get_num_threads()}
    for name in ("torchvision", "lmdb", "h5py", "ptlflow", "pytest", "timm"):
        mod = _import(name)
        env[name] = getattr(mod, "__version__", "yes") if mod else None
    if env["cuda"]:
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda_version"] = torch.version.cuda
    return env


class Run:
    def __init__(self, plan: Plan, budget: float):
        self.plan, self.start, self.budget = plan, time.perf_counter(), budget
        self.rows: list[dict] = []
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def short(self, seconds: float) -> bool:
        """Less than ``seconds`` of the budget left (what a part needs on a GPU; a sixth of it
        in the smoke run, whose parts take a second or two)."""
        return self.left() < seconds * (1 / 6 if self.plan.smoke else 1)

    def skip(self, what: str, why: str) -> None:
        line = f"skipped {what}: {why}"
        self.skipped.append(line)
        print(line, flush=True)

    def row(self, part: str, config: str, device: str, rate: float | None, cpu_name: str | None = None,
            cpu_rate: float | None = None, **extra) -> None:
        ratio = rate / cpu_rate if rate and cpu_rate else None
        self.rows.append({"part": part, "config": config, "device": device, "pairs_per_s": rate,
                          "cpu_counterpart": cpu_name, "cpu_pairs_per_s": cpu_rate, "ratio_to_cpu": ratio, **extra})
        print(f"{part:<18} {config:<24} {device:<6} {rate or 0:9.2f} pairs/s"
              + (f"  {ratio:7.2f}x {cpu_name}" if ratio else ""), flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def frames_for(count: int, size) -> list[np.ndarray]:
    """Consecutive frames of the shared test.mp4 at ``size`` (a moving texture without it)."""
    data = shared_data(REPO)
    if data is not None and (data / "videos" / "test.mp4").exists():
        from itertools import islice

        from flowstore.decode import FrameResize, iter_frames

        frames = list(islice(iter_frames(data / "videos" / "test.mp4", resize=FrameResize(size=size)), count))
        if len(frames) >= 2:
            return frames
    return texture_frames(count, *size)


def pairs_per_second(est, frames: list[np.ndarray], n: int) -> float:
    """Pairs/s of ``est`` on ``n`` pairs cycling through ``frames``, after one warm-up batch."""
    prepared = [est.prepare(f) for f in frames]
    index = [k % (len(prepared) - 1) for k in range(n + est.batch_size)]
    prev, nxt = [prepared[k] for k in index], [prepared[k + 1] for k in index]
    warm = est.batch_size
    est.compute(prev[:warm], nxt[:warm])
    _sync(est.device)
    start = time.perf_counter()
    flows = est.compute(prev[warm:], nxt[warm:])  # numpy: the device work is done
    seconds = time.perf_counter() - start
    assert flows.shape[0] == n
    return n / seconds


def time_engines(run: Run) -> tuple[list, str]:
    """Part 2: pairs/s of the flow engines and learned models, CPU counterparts alongside."""
    import cv2

    from flowstore.flow import build_flow

    plan, dev = run.plan, run.plan.device
    frames = frames_for(max(plan.tvl1_batches) + 2, plan.size)
    size = f"{plan.size[0]}x{plan.size[1]}"

    # CPU counterparts, in the same run
    cpu_farneback = pairs_per_second(build_flow("farneback", engine="opencv"), frames, max(plan.cpu_pairs, 8))
    run.row("farneback", f"opencv {size}", "cpu", cpu_farneback)
    if hasattr(cv2, "optflow"):
        cpu_tvl1_name = "opencv tvl1 (cpu)"
        cpu_tvl1 = pairs_per_second(build_flow("tvl1", engine="opencv"), frames, plan.cpu_pairs)
        run.row("tvl1", f"opencv {size}", "cpu", cpu_tvl1)
    else:
        run.skip("OpenCV TV-L1", "cv2.optflow is missing (opencv without contrib); torch TV-L1 on the CPU is the CPU figure")
        cpu_tvl1_name = "torch tvl1 (cpu)"
        cpu_tvl1 = pairs_per_second(build_flow("tvl1", engine="torch", device="cpu", batch_size=1), frames, plan.cpu_pairs)
        run.row("tvl1", f"torch b1 {size}", "cpu", cpu_tvl1)

    for batch in plan.tvl1_batches:
        for fused in (False, True):
            label = ("fused" if plan.fused_compile is None else "fused uncompiled") if fused else "unfused"
            if run.short(60):
                run.skip(f"torch TV-L1 {label} batch {batch}", "time budget spent")
                continue
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", RuntimeWarning)
                    est = build_flow("tvl1", engine="torch", device=dev, batch_size=batch, fused=fused,
                                     compile=plan.fused_compile if fused else None)
                    rate = pairs_per_second(est, frames, max(batch, plan.min_pairs))
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory at batch 256: the other rows still run
                run.skip(f"torch TV-L1 {label} batch {batch}", f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            for w in caught:  # the fused path fell back (no compiler, a CUDA graph that did not capture)
                if issubclass(w.category, RuntimeWarning) and "running" in str(w.message):
                    run.skip(f"part of torch TV-L1 {label} batch {batch}", str(w.message)[:300])
            run.row("tvl1", f"torch {label} b{batch} {size}", dev, rate, cpu_tvl1_name, cpu_tvl1)
    if dev.startswith("cuda") and not run.short(60):  # the automatic batch size (CUDA only)
        try:
            est = build_flow("tvl1", engine="torch", device=dev, fused=True)
            est.prepare(frames[0])
            batch = est.batch_size
            rate = pairs_per_second(est, frames_for(batch + 2, plan.size) if batch + 2 > len(frames) else frames,
                                    max(batch, plan.min_pairs))
            run.row("tvl1", f"torch fused auto b{batch} {size}", dev, rate, cpu_tvl1_name, cpu_tvl1,
                    auto_batch_size=batch)
        except Exception as exc:  # noqa: BLE001
            run.skip("torch TV-L1 automatic batch size", f"{type(exc).__name__}: {str(exc)[:200]}")
    elif dev.startswith("cuda"):
        run.skip("torch TV-L1 automatic batch size", "time budget spent")
    batch = plan.tvl1_batches[-1] if plan.smoke else 32
    est = build_flow("farneback", engine="torch", device=dev, batch_size=batch)
    run.row("farneback", f"torch b{batch} {size}", dev, pairs_per_second(est, frames, max(batch, plan.min_pairs)),
            "opencv farneback (cpu)", cpu_farneback)
    return frames, size


def time_learned(run: Run, frames, size: str) -> None:
    from flowstore.bench.cuda_checks import ptlflow_available
    from flowstore.flow import build_flow

    plan, dev = run.plan, run.plan.device
    if not ptlflow_available():
        run.skip("learned models", "ptlflow is not importable (see benchmarks/gpu_wheels.txt)")
        return
    import ptlflow

    from flowstore.flow.learned import save_random_checkpoint

    names = set(ptlflow.get_model_names())
    if not plan.models:
        run.skip("learned models", "the flow registry has no method with a ptlflow engine")
    for model in plan.models:
        # a short name is the ptlflow model name (gmflow = ptlflow:gmflow, neuflow2 = ptlflow:neuflow2, ...)
        if model not in names:
            run.skip(f"learned model {model}", f"ptlflow {ptlflow.__version__} has no model of that name")
            continue
        if run.short(45):
            run.skip(f"learned model {model}", "time budget spent")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                ckpt = save_random_checkpoint(model, Path(tmp) / f"{model}-random.ckpt", seed=0)
                cpu = pairs_per_second(build_flow(model, device="cpu", ckpt=ckpt), frames, plan.cpu_pairs)
            except Exception as exc:  # noqa: BLE001 - one model failing does not stop the check
                run.skip(f"learned model {model}", f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            run.row("learned", f"{model} fp32 b1 {size}", "cpu", cpu)
            for fp16 in (False, True):
                if fp16 and not dev.startswith("cuda"):
                    run.skip(f"{model} fp16", "fp16 is CUDA only (ignored on the CPU)")
                    continue
                for batch in plan.learned_batches:
                    if run.short(30):
                        run.skip(f"{model} {'fp16' if fp16 else 'fp32'} b{batch}", "time budget spent")
                        continue
                    try:
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore", UserWarning)
                            est = build_flow(model, device=dev, ckpt=ckpt, batch_size=batch, fp16=fp16)
                            rate = pairs_per_second(est, frames, max(batch, plan.min_pairs))
                    except Exception as exc:  # noqa: BLE001 - e.g. out of memory at batch 32
                        run.skip(f"{model} {'fp16' if fp16 else 'fp32'} b{batch}", f"{type(exc).__name__}: {str(exc)[:200]}")
                        continue
                    run.row("learned", f"{model} {'fp16' if fp16 else 'fp32'} b{batch} {size}", dev, rate,
                            f"{model} fp32 b1 (cpu)", cpu)


def cut_clips(folder: Path, frames: int, size) -> Path:
    """The shared clips cut to their first ``frames`` frames (MJPG .avi), or moving textures."""
    import cv2

    data = shared_data(REPO)
    if data is None:
        return clip_folder(folder, count=2, frames=frames, size=size)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SHARED_CLIPS:
        src = data / "videos" / name
        if not src.exists():
            continue
        cap, writer = cv2.VideoCapture(str(src)), None
        for _ in range(frames):
            ok, frame = cap.read()
            if not ok:
                break
            if writer is None:
                writer = cv2.VideoWriter(str(folder / f"{src.stem}_{src.suffix[1:]}.avi"),
                                         cv2.VideoWriter_fourcc(*"MJPG"), 25, frame.shape[1::-1])
            writer.write(frame)
        cap.release()
        if writer is not None:
            writer.release()
    return folder


def extract_run(clips: Path, out: Path, device_args: list[str], size, backend: str) -> dict:
    summary = out.parent / f"{out.name}.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "flowstore", "extract", str(clips), "--out", str(out), "--method", "tvl1",
           "--format", backend, "--size", f"{size[0]}x{size[1]}", "--no-progress", "--summary-json", str(summary),
           *device_args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-1500:]}")
    s = json.loads(summary.read_text())
    busy = s["flow_seconds"] / s["worker_seconds"] if s.get("worker_seconds") else None
    return {"pairs": s["pairs"], "pairs_per_s": s["pairs_per_second"], "flow_engine_busy": busy,
            "wall_s": time.perf_counter() - start, "command": " ".join(cmd[1:])}


def time_extract(run: Run) -> dict:
    """Part 3: ``extract --gpu 0`` (``--device cpu`` in the smoke run) and its CPU counterpart."""
    import cv2

    plan, dev = run.plan, run.plan.device
    backend = "lmdb" if _import("lmdb") else "hdf5"
    if backend == "hdf5":
        run.skip("LMDB for the extract run", "lmdb is not importable; the HDF5 backend is used")
    device_args = ["--gpu", "0"] if dev.startswith("cuda") else ["--device", dev, "--workers", "1"]
    cpu_args = ["--workers", str(os.cpu_count() or 1)] + ([] if hasattr(cv2, "optflow") else ["--engine", "torch", "--device", "cpu"])
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for key, frames, args in (("device", plan.extract_frames, device_args), ("cpu", plan.extract_cpu_frames, cpu_args)):
            if run.short(30):
                run.skip(f"extract on {key}", "time budget spent")
                continue
            clips = cut_clips(tmp / f"clips{frames}", frames, plan.size)
            try:
                out[key] = extract_run(clips, tmp / f"store-{key}", args, plan.size, backend)
            except Exception as exc:  # noqa: BLE001
                run.skip(f"extract on {key}", str(exc)[:300])
        if "device" in out:
            out["loader"] = time_loader(run, tmp / "store-device")
    cpu = out.get("cpu", {}).get("pairs_per_s")
    if "device" in out:
        d = out["device"]
        run.row("extract", f"tvl1 {' '.join(device_args)}", dev, d["pairs_per_s"], "extract tvl1 (cpu, all cores)", cpu,
                flow_engine_busy=d["flow_engine_busy"])
        print(f"extract: flow engine busy {100 * (d['flow_engine_busy'] or 0):.0f}% of worker time", flush=True)
    if cpu:
        run.row("extract", "tvl1 cpu (all cores)", "cpu", cpu, flow_engine_busy=out["cpu"]["flow_engine_busy"])
    return out


def time_loader(run: Run, store: Path) -> dict:
    """Part 4: the loader's clips/s to the device with cv2 decoding in the workers and with
    nvJPEG (``decode_device``), and stored against online flow (torch TV-L1 on the device), on
    the store the extract run wrote."""
    from flowstore.bench.device_loader import bench_device_decode, bench_online_flow

    dev, smoke = run.plan.device, run.plan.smoke
    workers = 1 if smoke else min(4, os.cpu_count() or 1)
    out: dict = {}
    for name, bench, kwargs in (
            ("decode", bench_device_decode, dict(modality="flow", sampling="stack", length=2 if smoke else 10,
                                                  batches=2 if smoke else 20, rounds=1 if smoke else 3)),
            ("online_flow", bench_online_flow, dict(method="tvl1", engine="torch", length=2 if smoke else 10,
                                                    batches=1 if smoke else 5, rounds=1))):
        if run.short(40):
            run.skip(f"loader {name}", "time budget spent")
            continue
        try:
            out[name] = bench(store, device=dev, workers=workers, batch_size=2 if smoke else 8, **kwargs)
        except Exception as exc:  # noqa: BLE001 - one part failing must not end the check
            run.skip(f"loader {name}", f"{type(exc).__name__}: {str(exc)[:300]}")
            continue
        print(f"loader {name}: {json.dumps(out[name]['clips_per_s'])} clips/s", flush=True)
    return out


def device_checks(run: Run) -> dict:
    """Part 1: ``pytest -m cuda`` (or the checks called directly without pytest); in the smoke
    run the checks also run on the CPU so that they stay runnable."""
    out: dict = {}
    if _import("pytest"):
        files = sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_cuda*.py"))
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *files]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=max(60, int(run.left() - 120)),
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
        lines = [line for line in proc.stdout.splitlines() if line.strip()]
        out["pytest"] = {"command": " ".join(cmd[1:]), "returncode": proc.returncode,
                         "result": lines[-1] if lines else proc.stderr[-500:], "tail": proc.stdout[-3000:]}
        print(f"pytest -m cuda: {out['pytest']['result']}", flush=True)
    else:
        run.skip("pytest -m cuda", "pytest is not importable; the same checks are called directly")
    if run.plan.device.startswith("cuda") and "pytest" in out:
        return out
    out["direct"] = {}
    for name in CHECKS:
        overrides = {"size": (64, 48)} if run.plan.smoke and name.startswith("torch_") else {}
        result = run_check(name, run.plan.device, **overrides)
        out["direct"][name] = result
        print(f"check {name} on {run.plan.device}: {result['status']} {result.get('reason', '')}", flush=True)
    return out


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# GPU check ({'smoke run on the CPU' if report['smoke'] else 'full run'})", "",
             f"{env.get('gpu', 'no GPU')}; Python {env['python']}, torch {env['torch']}, OpenCV {env['cv2']}, "
             f"{env['cpus']} CPUs; {report['seconds']:.0f} s", "",
             "| part | config | device | pairs/s | CPU counterpart | CPU pairs/s | ratio to CPU | flow engine busy |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) else ""  # noqa: E731
    for r in report["rows"]:
        busy = r.get("flow_engine_busy")
        lines.append(f"| {r['part']} | {r['config']} | {r['device']} | {fmt(r['pairs_per_s'], '.2f')} | "
                     f"{r['cpu_counterpart'] or ''} | {fmt(r['cpu_pairs_per_s'], '.2f')} | "
                     f"{fmt(r['ratio_to_cpu'], '.2f') + ('x' if r['ratio_to_cpu'] else '')} | "
                     f"{fmt(100 * busy, '.0f') + '%' if busy is not None else ''} |")
    checks = report["checks"]
    lines += ["", "## Device checks", ""]
    if "pytest" in checks:
        lines.append(f"`{checks['pytest']['command']}`: {checks['pytest']['result']}")
    for name, r in checks.get("direct", {}).items():
        lines.append(f"- {name}: {r['status']} {r.get('reason', '')}".rstrip())
    loader = report.get("extract", {}).get("loader", {})
    if loader:
        lines += ["", "## Loader to the device (clips/s, on the extract run's store)", ""]
        for name, r in loader.items():
            rates = ", ".join(f"{k} {v:.1f}" for k, v in r["clips_per_s"].items())
            ratio = next((f"{v:.2f}x" for k, v in r.items() if k.endswith("_vs_cpu") or k.endswith("_vs_stored")), "")
            lines.append(f"- {name}: {rates} ({ratio})")
    lines += ["", "## Skipped", ""] + [f"- {s}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="folder for gpu_check.json/.md")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (the default without CUDA)")
    ap.add_argument("--budget", type=float, default=None, help="seconds (default 420 full, 100 smoke)")
    args = ap.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    smoke = args.smoke or not cuda
    if smoke and not args.smoke:
        print("no CUDA device: smoke run on the CPU with tiny sizes", flush=True)
    plan = Plan(smoke, "cuda" if cuda and not smoke else "cpu")
    if smoke:
        torch.set_num_threads(1)  # small ops on a shared CPU: one thread is fastest
    run = Run(plan, args.budget or (100.0 if smoke else 420.0))
    report: dict = {"smoke": smoke, "environment": environment()}
    print(json.dumps(report["environment"]), flush=True)
    report["checks"] = device_checks(run)
    frames, size = time_engines(run)
    report["extract"] = time_extract(run)
    time_learned(run, frames, size)  # last: the budget cuts it short, not the extract run
    report.update(rows=run.rows, skipped=run.skipped, seconds=time.perf_counter() - run.start)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_check.md").write_text(markdown(report))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'} in {report['seconds']:.0f} s", flush=True)
    failed = [n for n, r in report["checks"].get("direct", {}).items() if r["status"] == "failed"]
    return 1 if failed or report["checks"].get("pytest", {}).get("returncode", 0) not in (0, 5) else 0


if __name__ == "__main__":
    sys.exit(main())
