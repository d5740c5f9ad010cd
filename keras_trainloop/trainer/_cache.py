"""The executor cache: one compiled step per (graph type, dataset spec)."""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

from keras_trainloop._describe import short_repr
from keras_trainloop._specs import spec_key


class GraphType(enum.Enum):
    """Which step an executor runs: GoMLX's TrainType / EvalType."""

    TRAIN = "train"
    EVAL = "eval"


class ExecutorLimitError(ValueError, RuntimeError):
    """More distinct specs than `trainer.max_executors` allows."""


class Executor:
    """A compiled step for one spec.

    Attributes:
        spec: the dataset spec it was created for.
        graph_type: `GraphType.TRAIN` or `GraphType.EVAL`.
        num_inputs, num_labels: fixed for the spec.
        fn: the jitted step function.
        trace_count: how many times `fn` was traced (compiled) so far.
        fused_fns: for a TRAIN executor, the jitted functions running
            several steps in one call (`trainer.train_steps`), by step count.
        fused_trace_counts: how many times each of those was traced.
        fused_unrolled: by step count, whether the fused body was unrolled (a
            step with convolutions: XLA:CPU compiles them badly inside a loop).
        background: fused functions compiling (or compiled) in the background, by
            step count and batch signature: their futures (`trainer/_background`).
    """

    def __init__(self, spec: Any, graph_type: GraphType, num_inputs: int, num_labels: int):
        self.spec = spec
        self.graph_type = graph_type
        self.num_inputs = num_inputs
        self.num_labels = num_labels
        self.fn: Callable | None = None
        self.trace_count = 0
        self.fused_fns: dict[int, Callable] = {}
        self.fused_trace_counts: dict[int, int] = {}
        self.fused_unrolled: dict[int, bool] = {}
        self.background: dict[tuple, Any] = {}

    def __repr__(self) -> str:
        return (
            f"Executor(graph_type={self.graph_type.name}, spec={self.spec!r}, "
            f"num_inputs={self.num_inputs}, num_labels={self.num_labels})"
        )


class ExecutorCache:
    """Maps (graph type, spec key) to executors, with GoMLX's limit on their number."""

    def __init__(self, max_executors: int):
        self.max_executors = max_executors
        self._executors: dict[tuple[GraphType, Any], Executor] = {}
        self._handlers: list[Callable[[Executor, GraphType], None]] = []

    def __len__(self) -> int:
        return len(self._executors)

    def executors(self) -> list[Executor]:
        return list(self._executors.values())

    def get(self, graph_type: GraphType, spec: Any) -> Executor | None:
        return self._executors.get((graph_type, spec_key(spec)))

    def on_creation(self, handler: Callable[[Executor, GraphType], None]) -> None:
        if not callable(handler):
            raise TypeError(
                "on_exec_creation() expects handler(executor, graph_type). Received: "
                f"{short_repr(handler)}. Fix: pass a function of two arguments."
            )
        self._handlers.append(handler)

    def check_room(self, graph_type: GraphType, spec: Any) -> None:
        """Raises if one more executor would exceed the limit."""
        if len(self._executors) >= self.max_executors:
            specs = sorted({repr(e.spec) for e in self._executors.values()})
            raise ExecutorLimitError(
                f"Creating a {graph_type.name} executor for spec={spec!r} would exceed "
                f"trainer.max_executors={self.max_executors} (train and eval executors "
                f"counted together; existing specs: {', '.join(specs)}). Each distinct spec "
                "yielded by a dataset compiles new steps. Fix: yield fewer distinct specs, "
                "or raise trainer.max_executors."
            )

    def add(self, executor: Executor) -> None:
        self._executors[(executor.graph_type, spec_key(executor.spec))] = executor
        for handler in self._handlers:
            handler(executor, executor.graph_type)


DEFAULT_MAX_EXECUTORS = 20
"""Default `trainer.max_executors`, read when a Trainer is constructed (as in GoMLX).

Set it as `ktl.DEFAULT_MAX_EXECUTORS` or `ktl.trainer.DEFAULT_MAX_EXECUTORS`:
both names write this one value.
"""


def check_max_executors(value: Any) -> int:
    """`value` if it is a positive int, else a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(
            f"max_executors must be a positive int. Received: max_executors={value!r}. "
            "Fix: pass a count such as max_executors=20."
        )
    return value
