"""Command-line and notebook tools for a Loop (GoMLX's ml/train/commandline).

- `attach_progress_bar(loop)`: a bar with steps, steps/s, ETA and the train
  metrics, in a terminal, a notebook, or as plain lines in logs; it always
  prints a final line at the end of a run.
- `report_eval(trainer, *datasets)`: evaluates and prints every eval metric.
- `parse_context_settings(ctx, "a=1;scope/b=true")`: hyperparameters from a
  string, with GoMLX's rules; `create_context_settings_flag` adds the
  matching `--set` option to an argparse parser, and `apply_context_settings`
  applies its value.

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

from keras_trainloop.commandline._detect import has_ipywidgets, in_notebook, is_tty, resolve_output
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

__all__ = [
    "DEFAULT_INTERVALS",
    "PROGRESS_BAR_KEY",
    "ProgressBar",
    "apply_context_settings",
    "attach_progress_bar",
    "create_context_settings_flag",
    "has_ipywidgets",
    "in_notebook",
    "is_tty",
    "parse_context_settings",
    "report_eval",
    "resolve_output",
]
