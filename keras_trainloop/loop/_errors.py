"""Errors raised by the training loop."""

from __future__ import annotations


class HookError(RuntimeError):
    """A hook raised an exception; the run was aborted.

    The message names the hook kind (`OnStart`, `OnStep` or `OnEnd`), the
    hook's name and the loop step; `__cause__` is the original exception.
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

    def __reduce__(self):
        return type(self), (self.kind, self.hook_name, self.step, self.__cause__)


class NonFiniteLossError(FloatingPointError):
    """The batch loss became NaN or infinite; the run was aborted.

    The loop does not wait on the device after every step: it checks the
    batch losses when it waits on a result anyway: single steps' at least
    every 16 steps, a fused call's (of at most 8 steps) once the next call is
    dispatched, and all at the end of the run. So up to 15 steps may run after the bad one before this is raised;
    they were trained (their updates were applied), and `loop.loop_step`
    counts them. `OnEnd` hooks do not run. Keep a checkpoint to go back to.

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
