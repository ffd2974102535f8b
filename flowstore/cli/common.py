"""Helpers shared by the command modules: parsing, exit codes, error reporting."""
from __future__ import annotations

import functools
import json
import re
import sys

import click

# Exit codes (documented in README and `flowstore extract --help`)
EXIT_OK = 0
EXIT_ERROR = 1          # an error that is not one of the below
EXIT_USAGE = 2          # bad command line or bad inputs found before any work (click's own code)
EXIT_FAILURES = 3       # some videos failed (see failures.jsonl); --allow-failures makes this 0
EXIT_LOCKED = 4         # another process is writing the store
EXIT_STORE = 5          # the store cannot be written (disk full, read-only, permissions)
EXIT_VERIFY = 6         # verify found damaged or missing records


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
    """Turn expected errors into one clear line and an exit code instead of a traceback."""
    from ..extract import WorkerDiedError
    from ..store.format import FormatError
    from ..store.manifest import StoreNotFoundError
    from ..store.writer import SettingsMismatchError, StoreLockedError, StoreWriteError

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StoreLockedError as exc:
            fail(str(exc), EXIT_LOCKED)
        except WorkerDiedError as exc:
            fail(str(exc), EXIT_ERROR)
        except StoreWriteError as exc:
            fail(f"{exc} — the store is left consistent; free space or fix permissions and rerun the same command", EXIT_STORE)
        except (StoreNotFoundError, FormatError, SettingsMismatchError) as exc:
            fail(str(exc), EXIT_USAGE)
        except (FileNotFoundError, FileExistsError) as exc:
            fail(str(exc), EXIT_USAGE)
        except (ValueError, KeyError, IndexError) as exc:
            fail(exc.args[0] if exc.args else str(exc), EXIT_USAGE)

    return wrapper
