"""SIGTERM and SIGINT as a clean stop of a long run (``extract``, ``features``).

Inside :class:`stop_on_signals` the first SIGTERM or SIGINT raises :class:`StopRequested` (a
``BaseException``, so that no ``except Exception`` meant for one bad video swallows it) in the
main thread, at once or, inside :meth:`stop_on_signals.deferred` (a commit, an append), as soon
as that block ends. Later signals are ignored while the run cleans up (stops its workers,
checkpoints). The run turns it into :class:`~flowstore.errors.StoppedBySignal`, whose exit code
is 128 + the signal number, as shells report it (SIGINT 130, SIGTERM 143).
"""
from __future__ import annotations

import contextlib
import signal
import threading

from .errors import StoppedBySignal

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(BaseException):
    """SIGTERM or SIGINT arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def stopped(self, committed: int, what: str = "videos") -> StoppedBySignal:
        """The user-facing error: ``stopped by SIGTERM: N videos committed, rerun ...``."""
        return StoppedBySignal(f"stopped by {self.name}: {committed} {what} committed, "
                               "rerun the same command to continue", self.signum)


class stop_on_signals:
    """Install the handlers for the ``with`` block (main thread only; elsewhere a no-op)."""

    def __init__(self):
        self._previous: dict = {}
        self._defer = 0
        self._pending: int | None = None
        self.received: int | None = None

    def __enter__(self) -> "stop_on_signals":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            return  # already stopping: let the cleanup finish
        self.received = signum
        if self._defer:
            self._pending = signum
            return
        raise StopRequested(signum)

    @contextlib.contextmanager
    def deferred(self):
        """A block a signal must not cut in two (a commit): the stop waits for its end."""
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1
        if not self._defer and self._pending is not None:
            signum, self._pending = self._pending, None
            raise StopRequested(signum)
