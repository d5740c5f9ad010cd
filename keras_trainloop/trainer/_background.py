"""Background compiles: XLA compiles lowered step functions on one worker thread.

Tracing and lowering stay on the caller's thread: they read the model, the Context and
Keras' scopes, which belong to the thread that runs the steps, and hold the GIL anyway.
Only `Lowered.compile()` runs here (XLA releases the GIL), so the caller keeps
dispatching steps meanwhile. The executable lands in jit's own cache: the jitted
function's next call with the same argument types neither traces nor compiles again.

A process must not exit while XLA compiles on another thread (the interpreter's shutdown
aborts it: "FATAL: exception not rethrown"), so at exit the compile running is awaited
and the queued ones are dropped.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import sys
import threading
from concurrent.futures import Future
from typing import Any

EXIT_WAIT_SECONDS = 120.0
"""At exit, how long the compile still running is awaited."""

NICENESS = 19
"""The compile thread's niceness on Linux (19: it runs on the CPU the steps leave). It
lowers only the work XLA does on this thread: jaxlib 0.10's CPU client hands a compile to
two threads of its own, which keep their priority (measured on W1's fused step: this
thread used no CPU time, those two 0.4 s), so on 2 cores the steps beside a compile
still share the CPU with it."""


class CompileWorker:
    """One daemon thread compiling what `submit` queues, in order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, lowered: Any) -> Future:
        """Queues `lowered.compile()`; the future is done when it ran (or failed).

        After the worker closed (the process exits), the future fails at once.
        """
        future: Future = Future()
        with self._lock:
            if self._closed:
                future.set_exception(RuntimeError("the process is exiting"))
                return future
            self._queue.put((future, lowered))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="keras_trainloop-compile", daemon=True
                )
                self._thread.start()
                atexit.register(self.close)
        return future

    def _work(self) -> None:
        _lower_priority()
        while True:
            future, lowered = self._queue.get()
            if future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                lowered.compile()
            except BaseException as error:  # noqa: BLE001 (kept: the caller compiles again)
                future.set_exception(error)
            else:
                future.set_result(None)

    def close(self, timeout: float = EXIT_WAIT_SECONDS) -> None:
        """Drops the queued compiles and waits for the running one (registered at exit)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        while True:
            try:
                future, _ = self._queue.get_nowait()
            except queue.Empty:
                break
            if future is not None:
                future.cancel()
        if thread is not None:
            self._queue.put((None, None))
            thread.join(timeout)


def _lower_priority() -> None:
    """Gives this thread the lowest CPU priority (Linux: per thread), so the steps it runs
    beside keep their speed and the compile takes the CPU they leave."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICENESS)


WORKER = CompileWorker()
"""The process's compile worker (one thread: compiles do not compete with each other)."""
