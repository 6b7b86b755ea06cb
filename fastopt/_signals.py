"""Deferring signals while a step writes, so an interrupted step is a completed step.

Python runs a signal handler between bytecodes of the main thread, so a Ctrl-C during a long
step could raise KeyboardInterrupt between two kernel launches, or between the kernels and the
step counts: parameters and moments advanced, step counts not, and a checkpoint saved from the
interrupt handler would resume with wrong bias corrections. Inside ``deferred_signals()`` the
Python-level handlers of the usual interrupting signals are replaced by one that only records
the signal; on leaving, the original handlers are restored and every recorded signal is
delivered to them, once the step is complete.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

# The signals whose Python handlers commonly raise (KeyboardInterrupt, a timeout, a shutdown).
_DEFERRED = tuple(getattr(signal, name) for name in
                  ("SIGINT", "SIGTERM", "SIGALRM", "SIGHUP", "SIGUSR1", "SIGUSR2")
                  if hasattr(signal, name))


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Record the signals in ``_DEFERRED`` that arrive inside the block; deliver them after.

    Only the main thread runs Python signal handlers, so elsewhere this does nothing (a step
    in another thread is never interrupted by them). Signals whose handler is not a Python
    function (ignored, or the default action) are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    saved = {}
    for sig in _DEFERRED:
        handler = signal.getsignal(sig)
        if callable(handler):
            saved[sig] = handler
            signal.signal(sig, record)
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sig in received:
            saved[sig](sig, None)
