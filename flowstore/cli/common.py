"""Helpers shared by the command modules: parsing, exit codes, error reporting."""
from __future__ import annotations

import functools
import json
import re
import sys

import click

# Exit codes live with the error classes (flowstore/errors.py); re-exported for the commands
from ..errors import (  # noqa: F401 (re-exported for the commands)
    EXIT_BUG, EXIT_DAMAGED, EXIT_FAILURES, EXIT_LOCKED, EXIT_OK, EXIT_STORE, EXIT_USAGE, FlowstoreError,
    InputError, StoppedBySignal, StoreWriteError,
)

EXIT_ERROR = EXIT_BUG
EXIT_VERIFY = EXIT_DAMAGED


def parse_bytes(text: str) -> int:
    """``"512MB"``, ``"1GiB"``, ``"4096"`` -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*", text.lower())
    if not m:
        raise click.BadParameter(f"{text!r} is not a size; write e.g. 512MB, 2GB or 1048576")
    number, unit = float(m.group(1)), (m.group(2) or "").rstrip("b").rstrip("i")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit]
    return int(number * scale)


def parse_size(text: str | None, hint: str, *, single: bool = False) -> tuple[int, int] | int | None:
    """``--size``-like options: ``"340x256"`` -> ``(340, 256)``; with ``single``, also ``"256"``
    -> ``256``; ``None`` stays ``None``. Both numbers must be positive."""
    if text is None or str(text).strip() == "":
        return None
    t = str(text).lower().strip()
    m = re.fullmatch(r"(\d+)\s*x\s*(\d+)", t) or (re.fullmatch(r"(\d+)", t) if single else None)
    forms = "WIDTHxHEIGHT, e.g. 340x256" + (", or one number N" if single else "")
    if not m:
        raise InputError(f"{hint} {text!r} is not a size; write {forms}")
    numbers = tuple(int(g) for g in m.groups())
    if min(numbers) < 1:
        raise InputError(f"{hint} {text!r}: sizes must be positive (>= 1 pixel)")
    return numbers if len(numbers) == 2 else numbers[0]


def parse_devices(gpu: str | int | None, device: str | None) -> list[str]:
    """``--gpu``/``--device`` -> device strings, each checked to exist on this machine (exit 2
    with what to do otherwise): the one parser of extract, features and bench-flow."""
    from ..devices import check_devices, parse_devices as parse

    devices = parse(gpu, device)
    check_devices(devices)
    return devices


def write_summary_json(path: str, summary, **derived) -> None:
    """``--summary-json``: a run's summary dataclass as it is, plus ``derived`` rates."""
    import dataclasses

    from ..io import atomic_write_text

    atomic_write_text(path, json.dumps({**dataclasses.asdict(summary), **derived}, indent=1))


def one_torch_device(gpu, device, threads, command: str) -> str:
    """The one device a backbone command runs on (default ``cpu``), checked, with torch's CPU
    threads set as ``--threads`` asks."""
    devices = parse_devices(gpu, device)
    if len(devices) > 1:
        raise click.BadParameter(f"{command} runs on one device", param_hint="--device")
    if threads:
        import torch

        torch.set_num_threads(threads)
    return devices[0] if devices else "cpu"


def torch_device_options(what: str):
    """``--device``, ``--gpu``, ``--threads`` and ``--dtype`` of the commands that run a frozen
    backbone (``what``: the word for what ``--dtype`` stores)."""
    options = [
        click.option("--device", default=None, help="Torch device: cpu, cuda, cuda:N, mps (default cpu)."),
        click.option("--gpu", default=None, type=int, help="GPU index; same as --device cuda:N."),
        click.option("--threads", type=int, default=None, help="Torch CPU threads (default: torch's choice)."),
        click.option("--dtype", type=click.Choice(["float32", "float16"]), default="float32", show_default=True,
                     help=f"Storage type of the {what}."),
    ]

    def apply(func):
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def parse_value(text: str):
    """A KEY=VALUE value: JSON where it parses (numbers, booleans), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items: tuple[str, ...]) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. --param winsize=21)")
        key, value = item.split("=", 1)
        params[key.strip()] = parse_value(value.strip())
    return params


def fail(message: str, code: int = EXIT_ERROR):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(func):
    """A :class:`~flowstore.errors.FlowstoreError` becomes one line and its exit code; any other
    exception is a bug and keeps its traceback (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StoppedBySignal as exc:  # not an error: one line, the signal's exit code
            click.echo(exc.message, err=True)
            sys.exit(exc.exit_code)
        except StoreWriteError as exc:
            fail(f"{exc.message} — the store is left consistent; free space or fix permissions and rerun the same command",
                 exc.exit_code)
        except FlowstoreError as exc:
            fail(exc.message, exc.exit_code)

    return wrapper
