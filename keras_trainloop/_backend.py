"""Selects Keras' JAX backend before Keras is imported.

Importing this module is cheap: it touches no heavy library unless Keras is
already imported, in which case it checks that Keras runs on JAX.
"""

from __future__ import annotations

import os
import sys


def ensure_jax_backend() -> None:
    """Makes Keras run on JAX, or raises an ImportError that says how.

    Raises:
        ImportError: Keras was already imported with another backend, or
            `KERAS_BACKEND` names another backend.
    """
    if "keras" in sys.modules:
        backend = sys.modules["keras"].backend.backend()
        if backend != "jax":
            raise ImportError(
                "keras_trainloop runs Keras on the JAX backend, but Keras is already "
                f"running on another backend. Received: keras.backend.backend()={backend!r}. "
                "Fix: set os.environ['KERAS_BACKEND'] = 'jax' before the first "
                "`import keras` (in a notebook, restart the runtime first)."
            )
        return
    requested = os.environ.get("KERAS_BACKEND")
    if requested is None:
        os.environ["KERAS_BACKEND"] = "jax"
    elif requested != "jax":
        raise ImportError(
            "keras_trainloop runs Keras on the JAX backend. "
            f"Received: KERAS_BACKEND={requested!r}. "
            "Fix: unset KERAS_BACKEND or set it to 'jax' before importing keras_trainloop."
        )
