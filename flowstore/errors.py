"""One error hierarchy: every error a user can cause derives from :class:`FlowstoreError`, which
carries the process exit code the CLI uses (README, "Exit codes"). Anything else that reaches
the CLI is a bug: it prints a traceback and exits 1.

The classes also derive from the builtin they used to be (``ValueError``, ``OSError``, ...), so
``except ValueError`` in callers keeps working.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_BUG = 1        # an unexpected exception: a traceback is shown
EXIT_USAGE = 2      # bad command line or bad inputs, found before any work (click's own code)
EXIT_FAILURES = 3   # some videos failed (see failures.jsonl); --allow-failures makes this 0
EXIT_LOCKED = 4     # another process is writing the store
EXIT_STORE = 5      # the store cannot be written (disk full, read-only, permissions)
EXIT_DAMAGED = 6    # verify found damaged or missing records
EXIT_SIGINT = 130   # stopped by SIGINT (Ctrl-C): 128 + 2, as shells report it; committed work is kept
EXIT_SIGTERM = 143  # stopped by SIGTERM: 128 + 15; committed work is kept


class FlowstoreError(Exception):
    """Base of every error a user can cause; ``exit_code`` is what the CLI exits with."""

    exit_code: int = EXIT_USAGE

    def __init__(self, *args, message: str | None = None):
        # ``message=``: how PyTorch's DataLoader re-raises a worker's exception in the main
        # process (for classes with a ``message`` attribute), the worker's traceback as text
        super().__init__(*((message,) if message is not None else args))

    @property
    def message(self) -> str:
        # KeyError's str() adds quotes; the first argument is the message as written
        return str(self.args[0]) if self.args else self.__class__.__name__


class InputError(FlowstoreError, ValueError):
    """A bad value, file, name or combination given by the user (exit 2)."""


class UnknownNameError(InputError, KeyError):
    """A name that is not in a registry or a store (a method, a video id, a column ...)."""

    def __str__(self) -> str:  # the message without KeyError's quotes
        return self.message


class OutOfRangeError(InputError, IndexError):
    """An index outside what the store or the data holds."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or directory the user named (or a store refers to) is not there."""


class AlreadyExistsError(InputError, FileExistsError):
    """A file the command would create is there already (and overwriting was not asked for)."""


class EnvironmentProblem(FlowstoreError, RuntimeError):
    """Something this machine lacks: an optional package, a device, a checkpoint (exit 2)."""


class StoreLockedError(FlowstoreError, RuntimeError):
    """Another process is writing to the store."""

    exit_code = EXIT_LOCKED


class StoreWriteError(FlowstoreError, OSError):
    """The store cannot be written (disk full, read-only, permissions): the run must stop."""

    exit_code = EXIT_STORE


class WorkerDiedError(FlowstoreError, RuntimeError):
    """A worker process was killed (out of memory, a crash in a decoder): the run stops."""

    exit_code = EXIT_BUG


class StoppedBySignal(FlowstoreError):
    """SIGTERM or SIGINT stopped a run cleanly; the exit code is 128 + the signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + int(signum)


class DamagedStoreError(FlowstoreError, ValueError):
    """A record or file of a store is damaged (checksum mismatch, unreadable shard)."""

    exit_code = EXIT_DAMAGED


class MissingRecordError(DamagedStoreError, KeyError):
    """A record that a committed entry promises is not in its shard."""

    def __str__(self) -> str:
        return self.message


__all__ = [
    "AlreadyExistsError", "DamagedStoreError", "EXIT_BUG", "EXIT_DAMAGED", "EXIT_FAILURES", "EXIT_LOCKED", "EXIT_OK",
    "EXIT_SIGINT", "EXIT_SIGTERM", "EXIT_STORE", "EXIT_USAGE", "EnvironmentProblem", "FlowstoreError", "InputError",
    "MissingFileError", "MissingRecordError", "OutOfRangeError", "StoppedBySignal", "StoreLockedError", "StoreWriteError", "UnknownNameError", "WorkerDiedError",
]
