"""Torch device strings: parsed without torch (:func:`parse_device`), checked against this
machine (:func:`check_devices`) before a run creates anything. The CLI's ``--gpu``/``--device``
options and the library (extract, features, bench-flow) share these."""
from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import EnvironmentProblem, InputError

#: the device strings flowstore accepts: cpu, cuda, cuda:N, mps
_DEVICE_RE = re.compile(r"(cpu|cuda|mps)(?::([0-9]+))?", re.ASCII)
DEVICE_FORMS = "cpu, cuda, cuda:N or mps"


def parse_device(text: str) -> str:
    """``" cuda:1 "`` -> ``"cuda:1"``; anything else than :data:`DEVICE_FORMS` is an InputError."""
    device = str(text).strip().lower()
    m = _DEVICE_RE.fullmatch(device)
    if not m or (m.group(2) is not None and m.group(1) != "cuda"):
        raise InputError(f"bad device {text!r}; write {DEVICE_FORMS} (or --gpu N)")
    return device


def parse_gpus(text: str) -> list[str]:
    """``"0,1"`` -> ``["cuda:0", "cuda:1"]``."""
    items = [g.strip() for g in str(text).split(",") if g.strip()]
    if not items or not all(g.isascii() and g.isdigit() for g in items):
        raise InputError(f"--gpu {text!r} is not a GPU index list like 0 or 0,1,2,3")
    return [f"cuda:{int(g)}" for g in items]


def parse_devices(gpu: str | int | None, device: str | None) -> list[str]:
    """The devices of ``--gpu`` or ``--device`` (a comma list), each parsed; [] for neither."""
    if gpu is not None and device is not None:
        raise InputError("give --gpu or --device, not both")
    if gpu is not None:
        return parse_gpus(str(gpu))
    if device is None:
        return []
    return [parse_device(d) for d in str(device).split(",") if d.strip()]


def check_devices(devices: Sequence[str]) -> None:
    """Raise :class:`EnvironmentProblem` (exit 2) saying what to do when a device is not on
    this machine; imports torch only when a non-CPU device is named."""
    devices = [parse_device(d) for d in devices if d is not None]
    wanted = [d for d in devices if d != "cpu"]
    if not wanted:
        return
    try:
        import torch
    except ImportError:
        raise EnvironmentProblem(f"device {wanted[0]} needs torch, which is not installed; "
                                 "install flowstore with torch or run on the CPU (no --gpu/--device)") from None
    for device in wanted:
        kind, _, index = device.partition(":")
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise EnvironmentProblem(
                    f"device {device}: this machine has no usable CUDA GPU (torch.cuda.is_available() is False); "
                    "run on the CPU without --gpu/--device (or --device cpu), or on a machine with a GPU")
            count = torch.cuda.device_count()
            if index and int(index) >= count:
                raise EnvironmentProblem(f"device {device}: this machine has {count} CUDA GPU(s), "
                                         f"cuda:0 to cuda:{count - 1}; pick one of those")
        elif kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise EnvironmentProblem(f"device {device}: MPS (Apple GPU) is not available here; "
                                     "run on the CPU without --device (or --device cpu)")
