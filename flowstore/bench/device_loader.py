"""Loader clips/s with work on a device, side by side in one run: JPEG decoding by cv2 in the
workers against ``decode_device`` (nvJPEG on CUDA), and stored flow against online flow.

Both time the real loader (:func:`~flowstore.data.loader.make_loader`, its workers, its
:class:`~flowstore.data.device_clips.DeviceStep`) over the same samples; a stored batch is
moved to the device too (``.to(device)``), so both variants end with the batch there. Rounds
alternate between the variants and each figure is the median over rounds; the workers'
start-up is not timed (one batch is drawn before the clock starts).
"""
from __future__ import annotations

import statistics
import time

import torch

from ..data.dataset import StoreClipDataset
from ..data.device_flow import default_device
from ..data.loader import make_loader


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def time_loader(ds, *, device: str, batch_size: int, workers: int, batches: int) -> float:
    """Clips/s of ``batches`` batches of ``ds`` through the loader, each ending on ``device``."""
    dev = torch.device(device)
    loader = make_loader(ds, batch_size=batch_size, num_workers=workers, shuffle=True, seed=0,
                         persistent_workers=False, drop_last=True)
    it = iter(loader)
    next(it)  # workers started, first batch out: not timed
    clips = 0
    start = time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        batch = _to(batch, dev)
        clips += len(batch["index"])
    _sync(dev)
    return clips / (time.perf_counter() - start)


def _compare(make, variants, *, rounds: int, **timing) -> dict:
    runs = {name: [] for name in variants}
    for _ in range(rounds):
        for name, kwargs in variants.items():
            runs[name].append(time_loader(make(**kwargs), **timing))
    return {name: statistics.median(v) for name, v in runs.items()}


def bench_device_decode(store, *, device: str | None = None, workers: int = 2, batch_size: int = 8,
                        modality: str = "flow", sampling: str = "stack", length: int | None = None,
                        batches: int = 20, rounds: int = 3, **ds_kwargs) -> dict:
    """Loader clips/s to ``device`` with cv2 decoding in the workers (``cpu_decode``) and with
    ``decode_device=device`` (``device_decode``), and their ratio. uint8 values and no
    transform unless ``ds_kwargs`` say otherwise (the decoding is what differs)."""
    device = device or default_device()
    ds_kwargs = {"flow_values": "uint8", "rgb_values": "uint8", **ds_kwargs}

    def make(decode_device=None):
        return StoreClipDataset(store, modality=modality, sampling=sampling, length=length,
                                decode_device=decode_device, **ds_kwargs)

    result = _compare(make, {"cpu_decode": {}, "device_decode": {"decode_device": device}}, rounds=rounds,
                      device=device, batch_size=batch_size, workers=workers, batches=batches)
    return {"device": device, "workers": workers, "batch_size": batch_size, "modality": modality,
            "clips_per_s": result, "device_vs_cpu": result["device_decode"] / result["cpu_decode"]}


def bench_online_flow(store, *, device: str | None = None, method: str | None = None, engine: str = "torch",
                      workers: int = 2, batch_size: int = 8, sampling: str = "stack", length: int | None = None,
                      batches: int = 10, rounds: int = 3, **ds_kwargs) -> dict:
    """Loader clips/s of stored flow (read, decoded, moved to ``device``) against online flow
    (RGB frames read and decoded, flow computed on ``device`` by ``method``/``engine``)."""
    device = device or default_device()

    def make(flow="stored"):
        extra = dict(method=method, engine=engine, flow_device=device) if flow == "online" else {}
        return StoreClipDataset(store, modality="flow", sampling=sampling, length=length, flow=flow,
                                **extra, **ds_kwargs)

    result = _compare(make, {"stored": {}, "online": {"flow": "online"}}, rounds=rounds, device=device,
                      batch_size=batch_size, workers=workers, batches=batches)
    return {"device": device, "workers": workers, "batch_size": batch_size, "engine": engine,
            "clips_per_s": result, "online_vs_stored": result["online"] / result["stored"]}


__all__ = ["bench_device_decode", "bench_online_flow", "time_loader"]
