"""Errors raised by the training loop."""

from __future__ import annotations


class HookError(RuntimeError):
    """A hook raised an exception; the run was aborted.

    The message names the hook kind (`OnStart`, `OnStep` or `OnEnd`), the
    hook's name and the loop step; `__cause__` is the original exception.
    The loop raises it as an instance of the original exception's type too
    where Python allows (`hook_error`), so `except TypeError` around a run
    catches a hook's (a Keras callback's) `TypeError` as it would around
    `model.fit`.
    The hooks of the same event registered after the failing one, and the
    `OnEnd` hooks, did not run.

    Attributes:
        kind: "OnStart", "OnStep" or "OnEnd".
        hook_name: the name given when the hook was registered (schedules
            prefix it, e.g. "EveryNSteps(100): eval").
        step: `loop.loop_step` when the hook ran.

    Example:
        try:
            loop.run_steps(ds, 1000)
        except ktl.HookError as e:
            print(e.hook_name, e.step, repr(e.__cause__))
    """

    def __init__(self, kind: str, hook_name: str, step: int, cause: BaseException):
        self.kind = kind
        self.hook_name = hook_name
        self.step = step
        self.__cause__ = cause
        skipped = f"the {kind} hooks after it" + ("" if kind == "OnEnd" else " and the OnEnd hooks")
        super().__init__(
            f"{kind} hook {hook_name!r} raised {type(cause).__name__} at loop step {step}: "
            f"{cause}. The run was aborted: {skipped} did not run. "
            "Fix: correct the hook; its original exception is chained as __cause__."
        )

    __str__ = RuntimeError.__str__  # The message, also where the cause's type has its own.

    def __reduce__(self):
        return hook_error, (self.kind, self.hook_name, self.step, self.__cause__)


_NOT_MIXED = (EOFError,)
"""Never mixed in: `EOFError` means "end of data" to the Dataset protocol."""
_MIXED: dict[type, type] = {}


def hook_error(kind: str, hook_name: str, step: int, cause: BaseException) -> HookError:
    """The `HookError` for `cause`, of a subclass of `HookError` and of `type(cause)`.

    `except ktl.HookError` and `except <the cause's type>` both catch it. Types
    Python cannot mix with `RuntimeError` (a different instance layout, as
    `OSError`; a conflicting metaclass) and `EOFError` give a plain `HookError`.
    """
    return _mixed_class(type(cause))(kind, hook_name, step, cause)


def _mixed_class(cause_type: type) -> type:
    if issubclass(HookError, cause_type):
        return HookError  # Exception, RuntimeError: it is one already.
    mixed = _MIXED.get(cause_type)
    if mixed is None:
        mixed = HookError
        if not issubclass(cause_type, _NOT_MIXED):
            try:
                mixed = type(
                    "HookError",
                    (HookError, cause_type),
                    {"__module__": HookError.__module__, "__doc__": HookError.__doc__},
                )
            except TypeError:  # Layout or metaclass conflict: a plain HookError.
                mixed = HookError
        _MIXED[cause_type] = mixed
    return mixed


class NonFiniteLossError(FloatingPointError):
    """The batch loss became NaN or infinite; the run was aborted.

    The loop does not wait on the device after every step: it checks the
    batch losses when it waits on a result anyway: single steps' at least
    every 16 steps, a fused call's (of at most 8 steps) once the next call is
    dispatched, and all at the end of the run. So up to 15 steps may run after the bad one before this is raised;
    they were trained (their updates were applied), and `loop.loop_step`
    counts them. `OnEnd` hooks do not run. Keep a checkpoint to go back to.
    A hook that reads the loss in `loop.logs` and stops the run at that step
    (Keras' `TerminateOnNaN`) ends it gracefully instead, as under `fit`.

    Attributes:
        step: the global step of the first batch with a non-finite loss.
        detected_at: the loop step after which it was noticed: the last step
            trained, so after the error `loop.loop_step == detected_at + 1`.
    """

    def __init__(self, step: int, detected_at: int):
        self.step = step
        self.detected_at = detected_at
        super().__init__(
            f"The batch loss became non-finite (NaN or Inf) at step {step} (noticed after step "
            f"{detected_at}). The run was aborted after training through step {detected_at}, so "
            "the weights may hold NaN/Inf: restore a checkpoint from before step "
            f"{step}. Fix: lower the learning rate, clip the gradients, or look for NaN/Inf in "
            "the inputs and labels of that batch."
        )

    def __reduce__(self):
        return type(self), (self.step, self.detected_at)
