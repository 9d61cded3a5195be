"""Stop a training run cleanly on Ctrl-C (SIGINT) or a job system's SIGTERM.

Job schedulers send SIGTERM some time before they kill; a user presses Ctrl-C. Either way the
training loop finishes the optimiser step it is in, writes a mid-epoch ``last.pt`` (resumed bit for
bit by ``--resume``) and raises :class:`TrainingInterrupted`, which the command line turns into one
line and the shell's exit status (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["StopRequest", "TrainingInterrupted", "stop_requests"]


class TrainingInterrupted(Exception):
    """The run stopped on a signal after saving its state; ``exit_code`` is 128 + the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """The signal that asked the run to stop (0: none yet)."""

    signum: int = 0

    def __bool__(self) -> bool:
        return self.signum != 0

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Catch SIGINT and SIGTERM while the block runs (main thread only; elsewhere signals keep
    their handlers); the previous handlers come back afterwards."""
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.signum = stop.signum or signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
