"""The training loop: prioritized named hooks, run_steps/run_epochs, schedules.

Example:
    loop = ktl.Loop(trainer)
    ktl.every_n_steps(loop, 100, "log", 0, lambda loop, metrics: print(float(metrics[1])))
    ktl.n_times_during_loop(loop, 5, "eval", 10, lambda loop, metrics: trainer.eval(test_ds))
    loop.run_epochs(train_ds, 10)
"""

from keras_trainloop.loop._errors import HookError, NonFiniteLossError
from keras_trainloop.loop._hooks import HookCost
from keras_trainloop.loop._interop import ExternalRun
from keras_trainloop.loop._keras_bridge import LOG_NAMES_KEY, LoopCallback
from keras_trainloop.loop._loop import (
    FUSED_STEPS_LIMIT,
    MAX_FUSED_STEPS,
    SYNC_EVERY,
    VAL_LOGS_KEY,
    Loop,
)
from keras_trainloop.loop._plan import Plan, PlannedHook
from keras_trainloop.loop._scheduled import (
    every_n_steps,
    exponential_callback,
    n_times_during_loop,
    periodic_callback,
)
from keras_trainloop.loop._schedules import (
    EveryNSteps,
    Exponential,
    NTimesDuringLoop,
    Periodic,
    Schedule,
)

__all__ = [
    "FUSED_STEPS_LIMIT",
    "LOG_NAMES_KEY",
    "MAX_FUSED_STEPS",
    "SYNC_EVERY",
    "VAL_LOGS_KEY",
    "EveryNSteps",
    "Exponential",
    "ExternalRun",
    "HookCost",
    "HookError",
    "Loop",
    "LoopCallback",
    "NTimesDuringLoop",
    "NonFiniteLossError",
    "Periodic",
    "Plan",
    "PlannedHook",
    "Schedule",
    "every_n_steps",
    "exponential_callback",
    "n_times_during_loop",
    "periodic_callback",
]
