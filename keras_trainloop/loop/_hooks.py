"""Named hooks kept in priority order at registration."""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

from keras_trainloop.loop._errors import HookError


class Hook(NamedTuple):
    """A registered hook: its name (for error messages) and its function."""

    name: str
    fn: Callable[..., Any]


def check_priority(priority: Any, where: str) -> None:
    """Raises TypeError unless `priority` is an int or a float (not a bool)."""
    if isinstance(priority, bool) or not isinstance(priority, (int, float)):
        raise TypeError(
            f"{where}: priority must be a number (lower runs first). "
            f"Received: priority={priority!r}."
        )


def check_callable(fn: Any, num_args: int, where: str, signature: str) -> None:
    """Checks that `fn` is callable with `num_args` positional arguments.

    Functions whose signature Python cannot inspect (some builtins) are
    accepted as they are.

    Args:
        fn: the candidate function.
        num_args: how many positional arguments the caller passes.
        where: names the hook in the message, e.g. "OnStep hook 'log'".
        signature: the expected call, e.g. "fn(loop, metrics)".

    Raises:
        TypeError: `fn` is not callable or cannot take `num_args` positional
            arguments.
    """
    if not callable(fn):
        raise TypeError(f"{where} must be a function {signature}. Received: fn={fn!r}.")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*([None] * num_args))
    except TypeError:
        raise TypeError(
            f"{where} must accept {num_args} positional arguments: {signature}. "
            f"Received: fn={fn!r} with signature {sig}. "
            f"Fix: define it as `def {getattr(fn, '__name__', 'fn')}{signature[2:]}: ...`."
        ) from None


class HookList:
    """The hooks of one event, lowest priority first, ties in registration order.

    The order is settled when a hook is added (binary search), never while
    the loop runs. `hooks` is a tuple replaced on each registration, so a
    hook that registers another one while the event fires does not disturb
    the iteration in progress (the new hook runs from the next event on).

    Args:
        kind: the event's name in messages: "OnStart", "OnStep" or "OnEnd".
        signature: the expected call of a hook, e.g. "fn(loop, metrics)".
    """

    __slots__ = ("_priorities", "hooks", "kind", "signature")

    def __init__(self, kind: str, signature: str):
        self.kind = kind
        self.signature = signature
        self.hooks: tuple[Hook, ...] = ()
        self._priorities: list[float] = []

    def add(self, name: str, priority: float, fn: Callable[..., Any]) -> None:
        """Adds `fn` under `name`, after every hook of lower or equal priority.

        Raises:
            TypeError: `name` is not a string, `priority` not a number, or
                `fn` not callable with the event's two arguments.
        """
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} hook names must be strings. Received: name={name!r}.")
        where = f"{self.kind} hook {name!r}"
        check_priority(priority, where)
        check_callable(fn, 2, where, self.signature)
        index = bisect.bisect_right(self._priorities, priority)
        self._priorities.insert(index, priority)
        hooks = list(self.hooks)
        hooks.insert(index, Hook(name, fn))
        self.hooks = tuple(hooks)

    def fire(self, loop: Any, arg: Any) -> None:
        """Calls every hook as `fn(loop, arg)` in order.

        Raises:
            HookError: a hook raised; the hooks after it were not called.
        """
        for hook in self.hooks:
            try:
                hook.fn(loop, arg)
            except Exception as e:
                raise HookError(self.kind, hook.name, loop.loop_step, e) from e

    def names(self) -> list[str]:
        """The hook names in calling order."""
        return [hook.name for hook in self.hooks]

    def __len__(self) -> int:
        return len(self.hooks)

    def __repr__(self) -> str:
        return f"HookList({self.kind}, {self.names()})"
