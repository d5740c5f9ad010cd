"""Command-line and notebook tools for a Loop (GoMLX's ml/train/commandline).

- `attach_progress_bar(loop)`: a bar with steps, steps/s, ETA and the
  metrics (Keras' names, `val_*` too), in a terminal, a notebook, or as
  plain lines in logs; it always prints a final line at the end of a run.
- `report_eval(trainer, *datasets)`: evaluates and prints every eval metric.
- `parse_context_settings(ctx, "a=1;scope/b=true")`: hyperparameters from a
  string, with GoMLX's rules; `create_context_settings_flag` adds the
  matching `--set` option to an argparse parser, and `apply_context_settings`
  applies its value.

The names load on first use: a script can build its argument parser
(`create_context_settings_flag` with a dict of defaults) and answer `--help`
before Keras and JAX are imported.

Example:
    ctx = ktl.Context()
    ctx.set_param("learning_rate", 1e-3)
    parser = argparse.ArgumentParser()
    flag = ktl.commandline.create_context_settings_flag(ctx, parser)
    ktl.commandline.apply_context_settings(ctx, parser.parse_args(), flag)
    ...
    ktl.commandline.attach_progress_bar(loop)
    loop.run_steps(train_ds, 1000)
    ktl.commandline.report_eval(trainer, test_ds)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # What `__getattr__` loads on first use, spelled out for type checkers.
    from keras_trainloop.commandline._detect import (
        has_ipywidgets,
        in_notebook,
        is_output_process,
        is_tty,
        resolve_output,
    )
    from keras_trainloop.commandline._progress import (
        DEFAULT_INTERVALS,
        PROGRESS_BAR_KEY,
        ProgressBar,
        attach_progress_bar,
    )
    from keras_trainloop.commandline._report import report_eval
    from keras_trainloop.commandline._settings import (
        apply_context_settings,
        create_context_settings_flag,
        parse_context_settings,
    )

# Public name -> private module that defines it (the progress bar's imports Keras and JAX).
_EXPORTS = {
    "has_ipywidgets": "keras_trainloop.commandline._detect",
    "in_notebook": "keras_trainloop.commandline._detect",
    "is_output_process": "keras_trainloop.commandline._detect",
    "is_tty": "keras_trainloop.commandline._detect",
    "resolve_output": "keras_trainloop.commandline._detect",
    "DEFAULT_INTERVALS": "keras_trainloop.commandline._progress",
    "PROGRESS_BAR_KEY": "keras_trainloop.commandline._progress",
    "ProgressBar": "keras_trainloop.commandline._progress",
    "attach_progress_bar": "keras_trainloop.commandline._progress",
    "report_eval": "keras_trainloop.commandline._report",
    "apply_context_settings": "keras_trainloop.commandline._settings",
    "create_context_settings_flag": "keras_trainloop.commandline._settings",
    "parse_context_settings": "keras_trainloop.commandline._settings",
}

__all__ = [
    "DEFAULT_INTERVALS",
    "PROGRESS_BAR_KEY",
    "ProgressBar",
    "apply_context_settings",
    "attach_progress_bar",
    "create_context_settings_flag",
    "has_ipywidgets",
    "in_notebook",
    "is_output_process",
    "is_tty",
    "parse_context_settings",
    "report_eval",
    "resolve_output",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_trainloop.commandline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
