"""Dataset adapters: the `Dataset` protocol and sources of batches for the Trainer and Loop.

A dataset yields `(spec, inputs, labels)` batches (lists of arrays) until it
raises `EOFError`; `reset()` starts another pass. Adapters cover in-memory
arrays (`ArrayDataset`), Python iterables and generators (`IterableDataset`),
`tf.data` pipelines (`TFDataset`), TensorFlow Datasets (`from_tfds`),
`keras.utils.PyDataset` (`PyDatasetSource`) and grain (`GrainDataset`);
`as_dataset` picks the adapter for anything `model.fit` accepts.
TensorFlow and grain are imported only when their adapters are used.

Several processes: each reads its own shard, `shard=ktl.data.process_shard()`
(`ArrayDataset`, `TFDataset`, `from_tfds`); `batch_size` is per process, the
global batch is `batch_size * jax.process_count()` (see `process_shard`).

Example:
    train = ktl.ArrayDataset(x, y, batch_size=64, shuffle=True, seed=0, loop_forever=True)
    test = ktl.from_tfds("mnist", split="test", batch_size=256, data_dir="~/tfds")
    grain_train = ktl.as_dataset(grain.MapDataset.source(records).batch(64))
"""

from keras_trainloop.data._array import ArrayDataset
from keras_trainloop.data._dispatch import as_dataset, as_validation_data
from keras_trainloop.data._from_tfds import from_tfds
from keras_trainloop.data._generator import GeneratorDataset
from keras_trainloop.data._grain import GrainDataset
from keras_trainloop.data._iterable import IterableDataset
from keras_trainloop.data._prefetch import maybe_prefetch_to_device
from keras_trainloop.data._protocol import Dataset
from keras_trainloop.data._pydataset import PyDatasetSource
from keras_trainloop.data._shard import process_shard
from keras_trainloop.data._tf import TFDataset

__all__ = [
    "ArrayDataset",
    "Dataset",
    "GeneratorDataset",
    "GrainDataset",
    "IterableDataset",
    "PyDatasetSource",
    "TFDataset",
    "as_dataset",
    "as_validation_data",
    "from_tfds",
    "maybe_prefetch_to_device",
    "process_shard",
]
