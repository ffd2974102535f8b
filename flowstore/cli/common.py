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
    StoreWriteError,
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
        except StoreWriteError as exc:
            fail(f"{exc.message} — the store is left consistent; free space or fix permissions and rerun the same command",
                 exc.exit_code)
        except FlowstoreError as exc:
            fail(exc.message, exc.exit_code)

    return wrapper
