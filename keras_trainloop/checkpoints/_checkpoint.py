"""Checkpoint: orbax-backed save and restore of a Trainer's state and hyperparameters."""

from __future__ import annotations

import os
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from keras_trainloop._describe import short_repr
from keras_trainloop.checkpoints._params import decode_param, encode_param
from keras_trainloop.checkpoints._process_states import restored_state, saved_entries
from keras_trainloop.context import SCOPE_SEPARATOR

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import Self

    from keras_trainloop.loop import Loop
    from keras_trainloop.trainer import Trainer

FORMAT = "keras_trainloop.checkpoint/1"
"""Format tag written into each checkpoint's metadata."""

_STATE_ITEM = "state"
_METADATA_ITEM = "metadata"
_GROUPS = ("model", "optimizer")


def _context_names(trainer: Any) -> dict[int, str]:
    """Readable, run-independent names ("/hidden/kernel") for variables made through the context.

    Keras makes layer names unique per process ("dense_7"), so its variable
    paths differ between two trainers of one model; the context's scoped keys
    do not. Used in messages only: variables are matched by position.
    """
    return {id(variable): name for name, variable in trainer.context.named_variables().items()}


def _local_or_remote(directory: str | os.PathLike) -> str:
    """A local directory made absolute and created; a URL (`gs://...`) passed on as is.

    orbax's path layer (etils.epath) reads and writes remote file systems; only
    local paths mean something to `os.path`.
    """
    directory = os.fspath(directory)
    if "://" in directory:
        return directory
    directory = os.path.abspath(os.path.expanduser(directory))
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ValueError(
            f"The checkpoint directory is a file. Received: directory={directory!r}. "
            "Fix: pass a directory path (it is created if missing)."
        )
    os.makedirs(directory, exist_ok=True)
    return directory


class _Damaged(Exception):
    """A checkpoint step whose files cannot be read (the message says which and why)."""


def _targets(variables: dict[str, list]) -> dict[str, list]:
    """Restore targets with the variables' shapes, dtypes and shardings."""
    import jax

    return {
        group: [
            jax.ShapeDtypeStruct(v.value.shape, v.value.dtype, sharding=v.value.sharding)
            for v in variables[group]
        ]
        for group in _GROUPS
    }


class Checkpoint:
    """Saves and restores a Trainer's variables, optimizer state and hyperparameters.

    Each checkpoint is a subdirectory of `directory` named by the global step
    (`optimizer.iterations`), written by orbax-checkpoint: the model's
    variables and the optimizer's variables (which include the global step)
    as arrays, and the context's hyperparameters as JSON. A save writes into
    a temporary directory renamed only when complete, so a crash in the
    middle of a save leaves the previous checkpoint intact (and the
    unfinished one is ignored). Saves are asynchronous by default: `save()`
    returns once the values are copied, and the files are written in the
    background (`wait()` waits for them).

    On construction, when `directory` holds a checkpoint, the latest one is
    restored, as GoMLX's `checkpoints.Build(ctx).Dir(dir).Done()` does: the
    hyperparameters and the global step at once (so a `ktl.Loop` created
    afterwards starts at the saved step), and the variables at once if the
    trainer already created them, else right after the first step creates
    them and before it runs (through `trainer.on_exec_creation`). Restored
    hyperparameters replace the values in the context: to change one on a
    resumed run, set it after creating the Checkpoint.

    Variables are matched by position (the order in which `model_fn` creates
    them), and their shapes and dtypes are checked: restoring a checkpoint of
    another model raises a `ValueError` naming the first variable that differs.

    Args:
        trainer: the `ktl.Trainer` whose state is saved and restored.
        directory: where checkpoints live; created if missing.
        keep: how many of the most recent checkpoints to keep (GoMLX's default
            is 1); None or -1 keeps them all.
        async_save: write in the background (True) or block in `save()`.
        include_params: save and restore the context's hyperparameters.
        restore: restore the latest checkpoint on construction, if any.

    Attributes:
        trainer: the Trainer.
        directory: the absolute checkpoint directory.
        keep: the number of checkpoints kept (None: all).
        restored_data_state: the data position saved with the restored
            checkpoint (`save(data_state=...)`), None when it has none;
            with several processes, this process's own (each reads its
            shard). `attach_checkpoint` hands it to the next run's dataset.
        restored_step: the step restored on construction or by `restore()`,
            None when nothing was restored.

    Raises:
        ValueError: `keep` is not a positive int, None or -1; `directory` is a file.
        ImportError: orbax-checkpoint is not installed.

    Example:
        ckpt = ktl.checkpoints.Checkpoint(trainer, "~/runs/digits", keep=3)
        loop = ktl.Loop(trainer)  # starts at the restored step, if any
        ktl.checkpoints.attach_checkpoint(loop, ckpt, every_n_steps=500)
        loop.run_steps(train_ds, 10_000)  # also saves at the end
    """

    def __init__(
        self,
        trainer: Trainer,
        directory: str | os.PathLike,
        *,
        keep: int | None = 1,
        async_save: bool = True,
        include_params: bool = True,
        restore: bool = True,
    ):
        if not callable(getattr(trainer, "on_exec_creation", None)):
            raise TypeError(
                f"Checkpoint expects a ktl.Trainer. Received: trainer={short_repr(trainer)}. "
                "Fix: pass the Trainer whose state to save, e.g. Checkpoint(trainer, directory)."
            )
        if keep == -1:
            keep = None
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
            raise ValueError(
                "keep must be a positive number of checkpoints, or None (or -1) to keep all. "
                f"Received: keep={keep!r}. Fix: pass e.g. keep=3, or keep=None."
            )
        directory = _local_or_remote(directory)
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.trainer = trainer
        self.directory = directory
        self.keep = keep
        self.include_params = bool(include_params)
        self.restored_step: int | None = None
        self.restored_data_state: dict | None = None
        self._async = bool(async_save)
        self._manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep,
                enable_async_checkpointing=self._async,
                create=True,
            ),
            item_names=(_STATE_ITEM, _METADATA_ITEM),
        )
        self._last_saved: int | None = None
        self._pending_restore: tuple[int, dict, dict[str, list]] | None = None
        trainer.on_exec_creation(self._on_exec_creation)
        if restore and self.latest_step() is not None:
            self.restore()

    # Listing ------------------------------------------------------------------
    def steps(self) -> list[int]:
        """The saved steps, oldest first.

        They are the complete checkpoints found in the directory when this
        Checkpoint was created, plus its own saves since (a save still being
        written in the background included: `wait()` first to be sure it is
        complete). Unfinished checkpoints of a crashed save are never listed.
        """
        return sorted(int(s) for s in self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The last of `steps()`, or None when there is none."""
        steps = self.steps()
        return steps[-1] if steps else None

    # Saving -------------------------------------------------------------------
    def _variables(self) -> dict[str, list]:
        model = self.trainer.model  # Reading it syncs the training state into the variables.
        return {
            "model": list(model.trainable_variables) + list(model.non_trainable_variables),
            "optimizer": list(self.trainer.optimizer.variables),
        }

    def _describe(self, variables: dict[str, list]) -> dict[str, list[dict]]:
        names = _context_names(self.trainer)
        return {
            group: [
                {
                    "name": names.get(id(v), str(v.path)),
                    "path": str(v.path),
                    "shape": [int(d) for d in v.shape],
                    "dtype": str(np.dtype(v.dtype)),
                }
                for v in variables[group]
            ]
            for group in _GROUPS
        }

    def _params(self) -> list[dict]:
        records = []
        for scope, values in self.trainer.context.root().params().items():
            for key, value in values.items():
                record = encode_param(scope, key, value)
                if record is None:
                    warnings.warn(
                        f"Hyperparameter {key!r} in scope {scope!r} is not saved in the "
                        f"checkpoint: JSON cannot hold it. Received: value={value!r}. Fix: use "
                        "numbers, strings, bools or lists of those as hyperparameters.",
                        stacklevel=3,
                    )
                    continue
                records.append(record)
        return records

    def save(self, *, data_state: dict | None = None) -> int:
        """Saves a checkpoint at the current global step; returns that step.

        `data_state` is the position of the training data after that step
        (`loop.data_state()`, JSON-serializable), saved with it so a resumed
        run reads exactly the batches an uninterrupted one would;
        `attach_checkpoint` and `on_step` pass it. With several processes
        each passes its own (they read different shards): all are gathered
        and kept, so every process calls `save` at the same steps (orbax
        needs that anyway).

        Asynchronous unless `async_save=False`: it returns once the values are
        copied. Nothing is written when this Checkpoint already saved (or
        restored) this step and nothing trained since. A checkpoint left at
        the same step by an earlier run (resumed from an older checkpoint) is
        replaced. Older checkpoints beyond `keep` are removed once the new one
        is complete.

        Returns:
            The global step saved.
        """
        step = int(self.trainer.global_step)
        if step == self._last_saved or self._pending_restore is not None:
            # Unchanged since this step was saved (or restored and not yet materialized).
            return step
        ocp = self._ocp
        variables = self._variables()
        if step in self._manager.all_steps():
            # A run resumed from an older checkpoint reached a step saved before: the
            # new state replaces the old one.
            self._manager.delete(step)
        state = {group: [v.value for v in variables[group]] for group in _GROUPS}
        metadata = {
            "format": FORMAT,
            "global_step": step,
            "optimizer": type(self.trainer.optimizer).__name__,
            "variables": self._describe(variables),
            "params": self._params() if self.include_params else [],
            **saved_entries(data_state),
        }
        self._manager.save(
            step,
            args=ocp.args.Composite(
                **{
                    _STATE_ITEM: ocp.args.StandardSave(state),
                    _METADATA_ITEM: ocp.args.JsonSave(metadata),
                }
            ),
            force=True,
        )
        self._last_saved = step
        if not self._async:
            self._manager.wait_until_finished()
        return step

    def wait(self) -> None:
        """Waits until the pending asynchronous save, if any, is written (and pruning done).

        Raises:
            Exception: an error of the background write.
        """
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Restoring ----------------------------------------------------------------
    def _read_metadata(self, step: int) -> dict:
        ocp = self._ocp
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_METADATA_ITEM: ocp.args.JsonRestore()})
            )
        except (KeyError, ValueError, OSError) as e:  # Missing item, torn JSON, unreadable.
            raise _Damaged(f"its metadata cannot be read ({type(e).__name__}: {e})") from e
        metadata = restored[_METADATA_ITEM]
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            raise ValueError(
                f"Checkpoint step {step} in {self.directory!r} was not written by "
                f"keras_trainloop.checkpoints (format {FORMAT!r}). Received: "
                f"metadata={str(metadata)[:200]!r}. Fix: point Checkpoint to a directory of its own."
            )
        return metadata

    def _read_arrays(self, step: int, target: dict) -> dict[str, list]:
        """The saved arrays, read into `target`'s shapes (and shardings, when it has them)."""
        ocp = self._ocp
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{_STATE_ITEM: ocp.args.StandardRestore(target)})
            )[_STATE_ITEM]
        except (KeyError, ValueError, OSError) as e:  # Missing item, truncated array files.
            raise _Damaged(f"its arrays cannot be read ({type(e).__name__}: {str(e)[:300]})") from e
        return {group: list(restored[group]) for group in _GROUPS}

    def _read(self, step: int) -> tuple[dict, dict[str, list]]:
        """Metadata and arrays of `step`, every file read (raises `_Damaged` if one cannot be)."""
        metadata = self._read_metadata(step)
        if self.trainer.optimizer.built:
            variables = self._variables()
            self._check_match(step, metadata, variables)
            target = _targets(variables)
        else:  # Shapes from the metadata; checked against the variables once they exist.
            target = {
                group: [np.empty(v["shape"], v["dtype"]) for v in metadata["variables"][group]]
                for group in _GROUPS
            }
        return metadata, self._read_arrays(step, target)

    def _read_newest_complete(self, step: int | None) -> tuple[int, dict, dict[str, list]]:
        """Reads `step`, or the newest complete checkpoint, skipping damaged ones with a warning."""
        available = self.steps()
        if step is not None and step not in available:
            raise ValueError(
                f"There is no checkpoint at step {step} in {self.directory!r}. Received: "
                f"step={step!r}; available steps: {available}. Fix: pass one of those, or "
                "None for the newest."
            )
        if not available:
            raise ValueError(
                f"There is no checkpoint to restore in {self.directory!r}. Received: "
                "step=None. Fix: save one first, or check the directory."
            )
        problems = []
        for candidate in [step] if step is not None else available[::-1]:
            try:
                return (candidate, *self._read(candidate))
            except _Damaged as damage:
                problems.append(f"step {candidate}: {damage}")
                if step is None:
                    warnings.warn(
                        f"Checkpoint step {candidate} in {self.directory!r} is damaged: "
                        f"{damage}. It is skipped; an older complete checkpoint is restored "
                        "if there is one.",
                        stacklevel=4,
                    )
        raise ValueError(
            f"No complete checkpoint to restore in {self.directory!r}: "
            + "; ".join(problems)
            + ". Fix: restore another step, delete the damaged step folders, or pass "
            "restore=False to start afresh."
        )

    def restore(self, step: int | None = None) -> int:
        """Restores the checkpoint at `step` (the latest complete one when None).

        Every file of the checkpoint is read now. With `step=None` a damaged
        checkpoint (unreadable metadata, missing or truncated array files) is
        skipped with a warning that names it, and the newest complete one is
        restored. Hyperparameters and the global step are restored at once;
        the variables at once when the trainer already created them, else
        when its first step creates them (before that step runs).

        Args:
            step: a step listed by `steps()`, or None for the latest.

        Returns:
            The restored step.

        Raises:
            ValueError: no such checkpoint, none complete (naming the directory
                and each step's problem), or (now or at the first step) its
                variables do not match the model's, naming the first that differs.
        """
        step, metadata, arrays = self._read_newest_complete(step)
        if self.include_params:
            root = self.trainer.context.root()
            for record in metadata.get("params", []):
                target = root
                for part in str(record["scope"]).split(SCOPE_SEPARATOR):
                    if part:
                        target = target.in_scope(part)
                target.set_param(record["key"], decode_param(record))
        self.restored_step = int(metadata["global_step"])
        self.restored_data_state = restored_state(metadata, step, self.directory)
        self._last_saved = self.restored_step
        if self.trainer.optimizer.built:
            self._pending_restore = None
            self._assign(self._variables(), arrays)
        else:
            # Variables do not exist before the first step: set the step now and
            # the rest in _on_exec_creation.
            self.trainer.optimizer.iterations.assign(self.restored_step)
            self._pending_restore = (step, metadata, arrays)
        return self.restored_step

    def _on_exec_creation(self, executor: Any, graph_type: Any) -> None:
        if self._pending_restore is None:
            return
        step, metadata, arrays = self._pending_restore
        self._pending_restore = None
        variables = self._variables()
        self._check_match(step, metadata, variables)
        self._assign(variables, arrays)

    @staticmethod
    def _assign(variables: dict[str, list], arrays: dict[str, list]) -> None:
        for group in _GROUPS:
            for variable, value in zip(variables[group], arrays[group]):
                variable.assign(value)

    def _check_match(self, step: int, metadata: dict, variables: dict[str, list]) -> None:
        saved_all = metadata["variables"]
        current_all = self._describe(variables)
        where = f"Checkpoint step {step} in {self.directory!r}"
        fix = (
            "Fix: restore with the same model_fn, hyperparameters and optimizer that wrote the "
            "checkpoint, or use another directory (or restore=False) to start afresh."
        )
        for group in _GROUPS:
            saved, current = saved_all[group], current_all[group]
            for i, (s, c) in enumerate(zip(saved, current)):
                if s["shape"] != c["shape"] or s["dtype"] != c["dtype"]:
                    raise ValueError(
                        f"{where} does not match the {group}: its {group} variable #{i} "
                        f"{s['name']!r} is {s['dtype']}{tuple(s['shape'])}, but the {group}'s "
                        f"variable #{i} {c['name']!r} is {c['dtype']}{tuple(c['shape'])}. {fix}"
                    )
            if len(saved) != len(current):
                if len(saved) > len(current):
                    extra = f"first variable without a match: {saved[len(current)]['name']!r}"
                else:
                    extra = f"first variable not in the checkpoint: {current[len(saved)]['name']!r}"
                raise ValueError(
                    f"{where} does not match the {group}: it holds {len(saved)} {group} "
                    f"variables, the {group} has {len(current)} ({extra}). {fix}"
                )

    # Loop hooks -------------------------------------------------------------
    def on_step(self, loop: Loop, metrics: list) -> None:
        """A hook `fn(loop, metrics)` that saves: pass it to any schedule.

        Example:
            ktl.every_n_steps(loop, 1000, "checkpoint", 100, ckpt.on_step)
        """
        self.save(data_state=loop.data_state() if hasattr(loop, "data_state") else None)

    def __repr__(self) -> str:
        return f"Checkpoint({self.directory!r}, keep={self.keep})"
