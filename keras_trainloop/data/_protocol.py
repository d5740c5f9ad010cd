"""The `Dataset` protocol: what the Trainer and the Loop read batches from."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Dataset(Protocol):
    """A source of batches for training and evaluation (GoMLX's `train.Dataset`).

    Any object with a `name`, a `yield_batch()` and a `reset()` is a Dataset;
    there is nothing to subclass. `isinstance(obj, ktl.Dataset)` checks that the
    three members exist (not their signatures).

    Optional: `yield_batches(n) -> (spec, inputs, labels) | None`, the next `n`
    batches stacked on a new leading axis (or None, consuming nothing, when
    they cannot be stacked). `ktl.Loop` uses it to run `n` steps in one
    compiled call; `ktl.ArrayDataset`, `ktl.TFDataset`, `ktl.data.GrainDataset`
    and `ktl.data.PyDatasetSource` have it.

    Optional: `get_state() -> dict` and `set_state(state: dict)`, the names
    grain iterators and Keras use, for an exact resume. `get_state` returns
    the dataset's position as plain JSON values (`json.dumps` keeps it
    exactly), e.g. the pass, the offset in it and the shuffling state; after
    `other.set_state(ds.get_state())` on a dataset built with the same
    arguments, `other` yields exactly the batches `ds` yields next, across
    pass ends, `reset()` and `yield_batches`. `set_state` checks the state
    before changing anything and raises `ValueError` for a state from a
    dataset with other arguments. `ktl.ArrayDataset`, `ktl.TFDataset` and
    `ktl.data.GrainDataset` have them; datasets without them are still Datasets (`isinstance` checks only
    the three members above), and a resumed run restarts their data order.

    Attributes:
        name: identifies the dataset in progress bars, reports and plots.

    Example:
        class Squares:
            name = "squares"

            def __init__(self):
                self.i = 0

            def yield_batch(self):
                if self.i == 10:
                    raise EOFError
                self.i += 1
                x = np.arange(8, dtype=np.float32)[:, None] + self.i
                return None, [x], [x**2]

            def reset(self):
                self.i = 0

        assert isinstance(Squares(), ktl.Dataset)
    """

    name: str

    def yield_batch(self) -> tuple[Any, list[Any], list[Any]]:
        """Returns the next batch as `(spec, inputs, labels)`.

        `inputs` and `labels` are lists of arrays (numpy or JAX) sharing the
        batch dimension; `labels` may be empty. `spec` is passed to the
        `model_fn` as is; it is usually the same for the whole dataset (often
        `None`), and the Trainer compiles one step per distinct spec, so the
        number of inputs and labels must stay the same for one spec.

        Returns:
            `(spec, inputs, labels)`.

        Raises:
            EOFError: at the end of the data (the end of an epoch). Any other
                exception aborts training or evaluation and reaches the user.
        """
        ...

    def reset(self) -> None:
        """Starts a fresh pass over the data, e.g. after `EOFError` or before an eval."""
        ...
