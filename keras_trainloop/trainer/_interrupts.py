"""Interrupts that never tear the training state: SIGINT (Ctrl-C) deferred inside a step.

A compiled step donates the state it is given: once it runs, the old arrays
are gone and only its results hold the state. A `KeyboardInterrupt` raised
between the step's return and the assignment of its results would lose both.
So while a step's results are being taken (`guard`), SIGINT is deferred:
the handler notes it and the interrupt is raised as soon as the state is
consistent again. A second Ctrl-C while one is pending interrupts at once
(the user insists; the trainer may then hold a torn state).

The handler is installed in the main thread the first time a trainer runs a
step, and only where SIGINT still has Python's default handler; outside a
guard it raises `KeyboardInterrupt` exactly as that default does. The Loop
uses the same guard for SIGTERM while it runs (see `handling_sigterm`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

_STATE: dict[str, Any] = {"depth": 0, "pending": None, "installed": False}


class TerminationRequested(SystemExit):
    """SIGTERM received during a run: raised at a step boundary (exit status 143)."""

    def __init__(self):
        super().__init__(128 + signal.SIGTERM)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise TerminationRequested()
    raise KeyboardInterrupt


def _handler(signum: int, frame: Any) -> None:
    del frame
    if _STATE["depth"] and _STATE["pending"] is None:
        _STATE["pending"] = signum
        print(
            "keras-trainloop: interrupt received; stopping when the current step's state is "
            "saved (press Ctrl-C again to interrupt now).",
            file=sys.stderr,
        )
        return
    _raise_for(signum)


def install() -> None:
    """Installs the deferring SIGINT handler once (main thread, default handler only)."""
    if _STATE["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _STATE["installed"] = True
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _handler)


def enter() -> None:
    """The start of a guarded section (the step's fast path, without a context manager)."""
    _STATE["depth"] += 1


def leave() -> None:
    """The end of a guarded section: raises a deferred interrupt now that the state is whole."""
    _STATE["depth"] -= 1
    pending = _STATE["pending"]
    if pending is not None and not _STATE["depth"]:
        _STATE["pending"] = None
        _raise_for(pending)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Defers SIGINT (and SIGTERM while a Loop handles it) until the block ends."""
    enter()
    try:
        yield
    finally:
        leave()


@contextlib.contextmanager
def handling_sigterm() -> Iterator[None]:
    """While the block runs, SIGTERM raises `TerminationRequested` at a safe point.

    Only in the main thread and where SIGTERM has its default disposition;
    the previous disposition is restored afterwards.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
