"""Where output goes: a notebook kernel, a terminal, or a plain stream (CI logs, pipes)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, TextIO

OUTPUTS = ("auto", "terminal", "notebook", "plain")
"""Values of the `output` argument of the UI plugins."""


def is_output_process() -> bool:
    """Whether this process prints and writes the job's output: process 0 (or the only one).

    With several JAX processes every one runs the same steps and evaluations,
    but one progress bar, report and plot is enough: the UI plugins print and
    write on process 0 only. JAX is asked only when something already imported it.
    """
    if "jax" not in sys.modules:
        return True
    import jax

    return jax.process_index() == 0


def in_notebook() -> bool:
    """Whether this process is a Jupyter/Colab kernel (an IPython kernel shell is active).

    IPython is imported only when something else already imported it, so a
    plain script pays nothing for the check.
    """
    if "IPython" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - a broken IPython install
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if "google.colab" in sys.modules:
        return True
    # ZMQInteractiveShell is the kernel's shell (Jupyter, VS Code, Colab's
    # own subclass); a terminal IPython uses TerminalInteractiveShell.
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def has_ipywidgets() -> bool:
    """Whether ipywidgets is installed (widget displays need it; the progress bar does not)."""
    return importlib.util.find_spec("ipywidgets") is not None


def is_tty(file: Any) -> bool:
    """Whether `file` is an interactive terminal (False for pipes, files and captured output)."""
    isatty = getattr(file, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # closed or detached streams
        return False


def resolve_output(output: str, file: TextIO | None) -> str:
    """Picks "notebook", "terminal" or "plain" for `output="auto"`; checks other values.

    Args:
        output: "auto", "terminal", "notebook" or "plain".
        file: the stream written to in a terminal or plain mode (a notebook
            kernel is detected before the stream is looked at).

    Returns:
        "notebook" inside a kernel, else "terminal" when `file` is a TTY,
        else "plain"; `output` itself when it is not "auto".

    Raises:
        ValueError: an unknown `output`.
    """
    if output not in OUTPUTS:
        raise ValueError(
            f"output must be one of {', '.join(map(repr, OUTPUTS))}. Received: output={output!r}. "
            'Fix: leave it "auto" to detect a notebook or a terminal.'
        )
    if output != "auto":
        return output
    if file is None and in_notebook():
        return "notebook"
    return "terminal" if is_tty(file if file is not None else sys.stdout) else "plain"
