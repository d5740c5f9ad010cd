"""A real TFDS dataset built offline from scikit-learn's digits, for tests and examples.

`DigitsLocal` is a `tfds.core.GeneratorBasedBuilder` named "digits_local" whose
data comes from `sklearn.datasets.load_digits` (bundled with scikit-learn), so
preparing it never touches the network. Splits: "train" (the first 1500
examples) and "test" (the remaining 297); features: "image" (8x8x1 uint8,
0..255) and "label" (`ClassLabel(num_classes=10)`); supervised keys
("image", "label").

Example:
    data_dir = prepare_digits("/tmp/tfds")   # about 3 s, once
    ds = ktl.from_tfds(DIGITS_NAME, split="train", batch_size=64, data_dir=data_dir,
                        download=False)

Run as a script to prepare it into a directory:
`python tests/_tfds_digits.py /tmp/tfds`.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import ClassVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# TFDS may import Keras; make sure it picks the JAX backend that keras_trainloop needs.
os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import tensorflow_datasets as tfds

DIGITS_NAME = "digits_local"
NUM_TRAIN = 1500
NUM_TEST = 297


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Returns all 1797 digits as (images (N, 8, 8, 1) uint8 in 0..255, labels (N,) int64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


class DigitsLocal(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """scikit-learn's digits as a TFDS dataset; prepared from local data only.

    `skip_registration=True` lets this module be imported twice (e.g. under
    two names) without "already registered" errors; once prepared,
    `tfds.load("digits_local", data_dir=...)` reads it from its files.
    """

    name = DIGITS_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built directly: dataset_info_from_configs() looks for
        # metadata files in the builder's package directory, which a single
        # module does not have.
        return tfds.core.DatasetInfo(
            builder=self,
            description="scikit-learn's 8x8 handwritten digits.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(8, 8, 1)),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Nothing is downloaded.
        images, labels = digits_arrays()
        return {
            "train": self._generate_examples(images[:NUM_TRAIN], labels[:NUM_TRAIN]),
            "test": self._generate_examples(images[NUM_TRAIN:], labels[NUM_TRAIN:]),
        }

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image, "label": int(label)}


def prepare_digits(data_dir: str) -> str:
    """Prepares "digits_local" into `data_dir` (a no-op when already there).

    Args:
        data_dir: the TFDS data directory to write into.

    Returns:
        `data_dir`, for `tfds.load(..., data_dir=...)` or `ktl.from_tfds`.
    """
    tfds.disable_progress_bar()
    builder = DigitsLocal(data_dir=data_dir)
    config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    # TFDS prints "Downloading and preparing dataset ..." to stdout; keep it quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=config)
    return data_dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DATA_DIR")
    print(prepare_digits(sys.argv[1]))
