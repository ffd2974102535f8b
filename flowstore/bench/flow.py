"""The flow benchmark behind ``flowstore bench-flow``: accuracy (end-point error, Fl-all) and
speed of flow methods on ground-truth pairs."""
from __future__ import annotations

from ..errors import MissingFileError


def load_gt_pairs(root):
    """Folders holding frame1.png, frame2.png and flow.flo (e.g. ../shared/data/flow_gt)."""
    from pathlib import Path

    import cv2

    from ..flo import read_flo

    pairs = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        if not all((folder / f).exists() for f in ("frame1.png", "frame2.png", "flow.flo")):
            continue
        frames = [cv2.cvtColor(cv2.imread(str(folder / f), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for f in ("frame1.png", "frame2.png")]
        pairs.append((folder.name, frames[0], frames[1], read_flo(folder / "flow.flo")))
    if not pairs:
        raise MissingFileError(f"no frame1.png/frame2.png/flow.flo folders under {root}")
    return pairs


def run_flow_benchmark(pairs, specs, *, device=None, batch_size=None, repeats=1):
    """``specs``: list of (label, method, engine, params, options). Returns rows of results; timings
    are per pair at batch 1 after one warm-up, and with ``batch_size`` also per pair in full batches."""
    import time

    import numpy as np

    from ..flo import mean_epe, outlier_rate
    from ..flow import build_flow

    rows = []
    for label, method, engine, params, options in specs:
        opts = dict(options)
        if batch_size is not None and engine != "opencv":
            opts["batch_size"] = batch_size
        est = build_flow(method, engine=engine, device=device if engine != "opencv" else None, params=params, **opts)
        epes, outliers, seconds = {}, [], 0.0
        for name, f1, f2, gt in pairs:
            a, b = est.prepare(f1), est.prepare(f2)
            est.compute([a], [b])  # warm-up (allocations, torch.compile, cudnn autotune)
            start = time.perf_counter()
            for _ in range(repeats):
                flow = est.compute([a], [b])[0]
            seconds += (time.perf_counter() - start) / repeats
            epes[name] = mean_epe(flow, gt)
            outliers.append(outlier_rate(flow, gt))
        batch_ms = None
        if batch_size and batch_size > 1 and engine != "opencv":
            # throughput with full batches: each pair repeated batch_size times, all pairs
            batch_seconds = 0.0
            for _, f1, f2, _ in pairs:
                a, b = est.prepare(f1), est.prepare(f2)
                start = time.perf_counter()
                est.compute([a] * batch_size, [b] * batch_size)
                batch_seconds += (time.perf_counter() - start) / batch_size
            batch_ms = 1000 * batch_seconds / len(pairs)
        rows.append({
            "label": label, "engine": est.engine, "device": est.device, "epe": epes,
            "mean_epe": float(np.mean(list(epes.values()))), "fl_all": float(np.mean(outliers)),
            "ms_per_pair": 1000 * seconds / len(pairs), "pairs_per_s": len(pairs) / seconds,
            "batch_size": batch_size if batch_ms is not None else 1, "batch_ms_per_pair": batch_ms,
        })
    return rows


def markdown_table(rows, pairs) -> str:
    """The rows of :func:`run_flow_benchmark` as a markdown table, one EPE column per pair."""
    names = [p[0] for p in pairs]
    batched = any(r["batch_ms_per_pair"] for r in rows)
    head = ("| method | engine | device | " + " | ".join(names) + " | mean EPE | Fl-all | ms/pair | pairs/s |"
            + (" ms/pair in batches |" if batched else ""))
    lines = [head, "|" + "---|" * (len(names) + 7 + batched)]
    for r in rows:
        line = (f"| {r['label']} | {r['engine']} | {r['device']} | " + " | ".join(f"{r['epe'][n]:.3f}" for n in names)
                + f" | {r['mean_epe']:.3f} | {100 * r['fl_all']:.1f}% | {r['ms_per_pair']:.0f} | {r['pairs_per_s']:.2f} |")
        if batched:
            line += f" {r['batch_ms_per_pair']:.0f} (B={r['batch_size']}) |" if r["batch_ms_per_pair"] else " – |"
        lines.append(line)
    return "\n".join(lines)


#: aten ops that make the host wait for the device on CUDA (their result is a host value or has a
#: data-dependent shape): ``.item()``, ``bool(t)``, ``int(t)``, ``nonzero``, boolean-mask indexing, ...
SYNC_OPS = frozenset({
    "aten._local_scalar_dense", "aten.is_nonzero", "aten.item", "aten.equal", "aten.allclose", "aten.nonzero",
    "aten.nonzero_static", "aten.masked_select", "aten.unique", "aten._unique", "aten._unique2",
    "aten.unique_consecutive", "aten.unique_dim", "aten.repeat_interleave",
})
#: Tensor methods that read device memory on the host without an aten op (not seen by a dispatch mode)
_HOST_READS = ("tolist", "numpy", "__array__")


class OpCounter:
    """Counts the aten ops run inside ``with OpCounter() as c:`` (a TorchDispatchMode, so it sees
    exactly what eager mode launches, one op per kernel launch on a GPU) and the host-device
    syncs among them (:data:`SYNC_OPS`, plus ``Tensor.tolist/numpy/__array__`` calls, which read
    device memory without an aten op). Works on the CPU: it counts what *would* sync on CUDA.

    ``c.ops``: total aten ops; ``c.syncs``: syncs; ``c.by_op``: Counter of op names;
    ``with c.as_one(): ...`` counts what runs inside as one op (a fused call: one CUDA graph replay).
    """

    def __init__(self):
        import collections

        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                counter._count(str(func.overloadpacket))
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self.by_op: collections.Counter = collections.Counter()
        self.syncs = 0
        self._patched: dict = {}

    @property
    def ops(self) -> int:
        return sum(self.by_op.values())

    def _count(self, name: str) -> None:
        self.by_op[name] += 1
        if name in SYNC_OPS:
            self.syncs += 1

    def __enter__(self):
        import torch

        self._mode.__enter__()
        for name in _HOST_READS:
            original = getattr(torch.Tensor, name)
            self._patched[name] = original

            def read(tensor, *args, _original=original, _name=name, **kwargs):
                self._count(f"Tensor.{_name}")
                self.syncs += 1
                return _original(tensor, *args, **kwargs)

            setattr(torch.Tensor, name, read)
        return self

    def __exit__(self, *exc):
        import torch

        for name, original in self._patched.items():
            setattr(torch.Tensor, name, original)
        self._patched.clear()
        return self._mode.__exit__(*exc)

    def as_one(self, name: str = "fused call"):
        """A context in which nothing is counted but one op ``name``."""
        import contextlib

        from torch.utils._python_dispatch import _disable_current_modes

        @contextlib.contextmanager
        def one():
            self._count(name)
            with _disable_current_modes():
                yield

        return one()


__all__ = ["OpCounter", "SYNC_OPS", "load_gt_pairs", "markdown_table", "run_flow_benchmark"]
