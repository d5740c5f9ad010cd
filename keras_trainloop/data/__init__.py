"""Dataset adapters: the `Dataset` protocol and sources of batches for the Trainer and Loop.

A dataset yields `(spec, inputs, labels)` batches (lists of arrays) until it
raises `EOFError`; `reset()` starts another pass. Adapters cover in-memory
arrays (`ArrayDataset`), Python iterables and generators (`IterableDataset`),
`tf.data` pipelines (`TFDataset`) and TensorFlow Datasets (`from_tfds`).
TensorFlow is imported only when `TFDataset` or `from_tfds` is used.

Example:
    train = ktl.ArrayDataset(x, y, batch_size=64, shuffle=True, seed=0, loop_forever=True)
    test = ktl.from_tfds("mnist", split="test", batch_size=256, data_dir="~/tfds")
"""

from keras_trainloop.data._array import ArrayDataset
from keras_trainloop.data._iterable import IterableDataset
from keras_trainloop.data._prefetch import maybe_prefetch_to_device
from keras_trainloop.data._protocol import Dataset
from keras_trainloop.data._tf import TFDataset, from_tfds

__all__ = [
    "ArrayDataset",
    "Dataset",
    "IterableDataset",
    "TFDataset",
    "from_tfds",
    "maybe_prefetch_to_device",
]
