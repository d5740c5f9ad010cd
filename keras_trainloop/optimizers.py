"""Keras optimizers by name or from context hyperparameters, the global step, and schedules.

GoMLX's `optimizers` package names its optimizers ("sgd", "adam", "adamw",
"adamax") and reads them from the context's hyperparameters. Here the names
are those of Keras' optimizers, case-insensitive, and the optimizers are
Keras' own, with Keras' default settings (e.g. SGD's learning rate is 0.01
where GoMLX's was 0.1 with a `1/sqrt(step)` decay; AdamW's weight decay is
0.004 in both).

Example:
    ctx = ktl.Context().set_param("optimizer", "adam").set_param("learning_rate", 1e-3)
    ctx.set_param("cosine_schedule_steps", 10_000)
    trainer = ktl.Trainer(model_fn, loss_fn, ktl.optimizers.from_context(ctx), context=ctx)
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any

import keras
from keras import ops

__all__ = [
    "DEFAULT_OPTIMIZER",
    "PARAM_COSINE_MIN_LEARNING_RATE",
    "PARAM_COSINE_SCHEDULE_STEPS",
    "PARAM_LEARNING_RATE",
    "PARAM_OPTIMIZER",
    "CosineAnnealing",
    "cosine_annealing",
    "from_context",
    "get",
    "global_step",
    "known_optimizers",
]

PARAM_OPTIMIZER = "optimizer"
"""Context hyperparameter with the optimizer's name (as GoMLX's `optimizers.ParamOptimizer`)."""
PARAM_LEARNING_RATE = "learning_rate"
"""Context hyperparameter with the (peak) learning rate."""
PARAM_COSINE_SCHEDULE_STEPS = "cosine_schedule_steps"
"""Context hyperparameter: if > 0, the period in steps of a cosine learning-rate schedule."""
PARAM_COSINE_MIN_LEARNING_RATE = "cosine_annealing_min_learning_rate"
"""Context hyperparameter: the learning rate at the end of each cosine period (default 0)."""
DEFAULT_OPTIMIZER = "adamw"
"""Optimizer used by `from_context` when the context names none (GoMLX's default)."""


@functools.cache
def known_optimizers() -> dict[str, type]:
    """Keras optimizers that can be built from a name: lower-case name -> class.

    Returns:
        Every public `keras.optimizers` class that needs no constructor
        argument (wrappers such as `LossScaleOptimizer` are left out).

    Example:
        parser.add_argument("--optimizer", choices=sorted(known_optimizers()))
    """
    table = {}
    for attr in dir(keras.optimizers):
        cls = getattr(keras.optimizers, attr)
        if (
            not isinstance(cls, type)
            or not issubclass(cls, keras.optimizers.Optimizer)
            or cls is keras.optimizers.Optimizer
        ):
            continue
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        if all(
            p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
        ):
            table[cls.__name__.lower()] = cls
    return table


def _build(cls_or_name: Any, kwargs: dict[str, Any]) -> keras.optimizers.Optimizer:
    try:
        if isinstance(cls_or_name, type):
            return cls_or_name(**kwargs)
        return keras.optimizers.get({"class_name": cls_or_name, "config": dict(kwargs)})
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"Could not build optimizer {cls_or_name!r} with the given options. "
            f"Received: kwargs={kwargs!r}. Fix: use the optimizer's constructor arguments "
            f"(e.g. learning_rate). Keras said: {error}"
        ) from error


def get(name_or_optimizer: Any, **kwargs: Any) -> keras.optimizers.Optimizer:
    """Returns a Keras optimizer from its name (or the optimizer itself).

    Args:
        name_or_optimizer: a Keras optimizer name, case-insensitive ("adam",
            "sgd", "adamw", "RMSprop", ...; see `known_optimizers()`), a name
            registered with `keras.saving.register_keras_serializable`, a
            Keras config dict, or a `keras.optimizers.Optimizer` (returned as is).
        **kwargs: constructor arguments for a name or config dict, e.g.
            `learning_rate=1e-3` (a number or a `LearningRateSchedule`).

    Returns:
        A new optimizer (or the one given).

    Raises:
        ValueError: an unknown name (the message lists the known ones), options
            the optimizer does not take, or options given with an optimizer instance.
        TypeError: `name_or_optimizer` is of another type.

    Example:
        optimizer = ktl.optimizers.get("adamw", learning_rate=3e-4, weight_decay=0.01)
    """
    if isinstance(name_or_optimizer, keras.optimizers.Optimizer):
        if kwargs:
            raise ValueError(
                "Options apply only when the optimizer is built from a name. "
                f"Received: an optimizer instance and kwargs={kwargs!r}. "
                "Fix: pass the optimizer's name, or configure the instance yourself."
            )
        return name_or_optimizer
    if isinstance(name_or_optimizer, dict):
        config = dict(name_or_optimizer)
        config["config"] = {**config.get("config", {}), **kwargs}
        try:
            optimizer = keras.optimizers.get(config)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"Could not build an optimizer from a config dict. "
                f"Received: config={config!r}. Fix: use a config from optimizer "
                f"serialization (keras.optimizers.serialize). Keras said: {error}"
            ) from error
        return optimizer
    if not isinstance(name_or_optimizer, str):
        raise TypeError(
            "An optimizer must be a Keras optimizer name, a config dict or a "
            f"keras.optimizers.Optimizer. Received: optimizer={name_or_optimizer!r} of type "
            f"{type(name_or_optimizer).__name__}. Fix: pass e.g. 'adam'."
        )
    cls = known_optimizers().get(name_or_optimizer.strip().lower())
    if cls is not None:
        return _build(cls, kwargs)
    try:  # Custom optimizers registered with Keras.
        keras.optimizers.get(name_or_optimizer)
    except (TypeError, ValueError):
        raise ValueError(
            f"Unknown optimizer name. Received: optimizer={name_or_optimizer!r}. "
            f"Fix: use one of {sorted(known_optimizers())}."
        ) from None
    return _build(name_or_optimizer, kwargs)


def from_context(ctx: Any) -> keras.optimizers.Optimizer:
    """Builds the optimizer from the context's hyperparameters, like GoMLX's `FromContext`.

    Hyperparameters read (looked up from the context's scope up to the root):

    - "optimizer": the optimizer's name; default "adamw" (as GoMLX).
    - "learning_rate": the learning rate; default: the Keras optimizer's own.
    - "cosine_schedule_steps": if not 0, the learning rate follows
      `cosine_annealing(learning_rate, cosine_schedule_steps,
      min_learning_rate=cosine_annealing_min_learning_rate)`.
    - "cosine_annealing_min_learning_rate": default 0.

    Args:
        ctx: a `ktl.Context` (anything with `get_param(key, default)`).

    Returns:
        A new Keras optimizer.

    Raises:
        ValueError: an unknown optimizer name or invalid schedule parameters.

    Example:
        ctx.set_param("optimizer", "sgd").set_param("learning_rate", 0.1)
        optimizer = ktl.optimizers.from_context(ctx)
    """
    name = ctx.get_param(PARAM_OPTIMIZER, DEFAULT_OPTIMIZER)
    learning_rate = ctx.get_param(PARAM_LEARNING_RATE, None)
    steps = ctx.get_param(PARAM_COSINE_SCHEDULE_STEPS, 0)
    kwargs = {} if learning_rate is None else {"learning_rate": learning_rate}
    if steps is not None and steps != 0:  # 0 disables the schedule, as in GoMLX.
        if learning_rate is None:
            learning_rate = _default_learning_rate(name)
        kwargs["learning_rate"] = cosine_annealing(
            learning_rate,
            steps,
            min_learning_rate=ctx.get_param(PARAM_COSINE_MIN_LEARNING_RATE, 0.0),
        )
    return get(name, **kwargs)


def _default_learning_rate(name: Any) -> float:
    """The named optimizer's default learning rate, as its constructor states it."""
    cls = known_optimizers().get(name.strip().lower()) if isinstance(name, str) else None
    if cls is not None:
        default = inspect.signature(cls.__init__).parameters.get("learning_rate")
        if default is not None and isinstance(default.default, (int, float)):
            return float(default.default)
    return float(get(name).learning_rate)


def global_step(trainer_or_optimizer: Any) -> int:
    """The global step: how many updates the optimizer has applied.

    Args:
        trainer_or_optimizer: a Keras optimizer, or an object with an
            `.optimizer` attribute (a `ktl.Trainer`, a compiled `keras.Model`).

    Returns:
        `int(optimizer.iterations)` (reads the device).

    Raises:
        TypeError: no optimizer can be found.

    Example:
        if ktl.optimizers.global_step(trainer) % 1000 == 0: ...
    """
    step = getattr(trainer_or_optimizer, "global_step", None)
    if isinstance(step, int):  # A ktl.Trainer: its state is newer than the optimizer's variables.
        return step
    optimizer = trainer_or_optimizer
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        optimizer = getattr(trainer_or_optimizer, "optimizer", None)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            "global_step() needs a keras.optimizers.Optimizer or an object with an "
            f".optimizer attribute holding one. Received: {trainer_or_optimizer!r}. "
            "Fix: pass the trainer, a compiled keras.Model or the optimizer."
        )
    return int(optimizer.iterations)


def _check_number(name: str, value: Any, minimum: float, integer: bool = False) -> None:
    kind = "an integer" if integer else "a number"
    valid = isinstance(value, int) if integer else isinstance(value, (int, float))
    valid = valid and not isinstance(value, bool) and math.isfinite(value) and value >= minimum
    if not valid:
        raise ValueError(
            f"{name} must be {kind} >= {minimum}. Received: {name}={value!r}. "
            f"Fix: pass {kind} >= {minimum}."
        )


@keras.saving.register_keras_serializable(package="keras_trainloop")
class CosineAnnealing(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine learning-rate schedule with restarts, as GoMLX's `CosineAnnealingSchedule`.

    With `s = step - warmup_steps`, the learning rate is
    `min_lr + (learning_rate - min_lr) * (1 + cos(pi * frac(s / steps))) / 2`:
    it starts at `learning_rate`, falls to `min_learning_rate` over `steps`
    steps and restarts at `learning_rate` every `steps` steps (GoMLX's
    behaviour; set `steps` to the run's length for a single decay). During the
    first `warmup_steps` steps it rises linearly: `learning_rate * (step + 1) /
    warmup_steps`. `step` is the optimizer's iteration count, from 0.

    Args:
        learning_rate: the peak learning rate, > 0.
        steps: the period of the cosine, in steps, >= 1.
        min_learning_rate: the learning rate at the end of a period, in
            [0, learning_rate].
        warmup_steps: steps of linear warmup before the cosine, >= 0.

    Raises:
        ValueError: an argument is out of range.

    Example:
        schedule = CosineAnnealing(1e-3, steps=10_000, warmup_steps=500)
        optimizer = keras.optimizers.AdamW(learning_rate=schedule)
    """

    def __init__(
        self,
        learning_rate: float,
        steps: int,
        min_learning_rate: float = 0.0,
        warmup_steps: int = 0,
    ):
        _check_number("learning_rate", learning_rate, 0.0)
        _check_number("steps", steps, 1, integer=True)
        _check_number("min_learning_rate", min_learning_rate, 0.0)
        _check_number("warmup_steps", warmup_steps, 0, integer=True)
        if learning_rate <= 0 or min_learning_rate > learning_rate:
            raise ValueError(
                "CosineAnnealing needs 0 <= min_learning_rate <= learning_rate and "
                f"learning_rate > 0. Received: learning_rate={learning_rate!r}, "
                f"min_learning_rate={min_learning_rate!r}. Fix: swap or correct them."
            )
        self.learning_rate = float(learning_rate)
        self.steps = int(steps)
        self.min_learning_rate = float(min_learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        cycle = (step - self.warmup_steps) / self.steps
        fraction = cycle - ops.floor(cycle)
        span = self.learning_rate - self.min_learning_rate
        cosine = self.min_learning_rate + span * 0.5 * (1.0 + ops.cos(math.pi * fraction))
        if self.warmup_steps == 0:
            return cosine
        warmup = self.learning_rate * (step + 1.0) / self.warmup_steps
        return ops.where(step < self.warmup_steps, warmup, cosine)

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "steps": self.steps,
            "min_learning_rate": self.min_learning_rate,
            "warmup_steps": self.warmup_steps,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"CosineAnnealing({args})"


def cosine_annealing(
    learning_rate: float,
    steps: int,
    min_learning_rate: float = 0.0,
    warmup_steps: int = 0,
) -> CosineAnnealing:
    """A cosine learning-rate schedule with restarts every `steps` steps.

    See `CosineAnnealing` for the formula.

    Args:
        learning_rate: the peak learning rate, > 0.
        steps: the period of the cosine, in steps, >= 1.
        min_learning_rate: the learning rate at the end of a period.
        warmup_steps: steps of linear warmup (from near 0) before the cosine.

    Returns:
        A `keras.optimizers.schedules.LearningRateSchedule`, serializable with
        the optimizer's config.

    Raises:
        ValueError: an argument is out of range.

    Example:
        optimizer = ktl.optimizers.get("adam", learning_rate=cosine_annealing(1e-3, 10_000))
    """
    return CosineAnnealing(learning_rate, steps, min_learning_rate, warmup_steps)
