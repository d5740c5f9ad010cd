import numpy as np
import pytest

import keras_trainloop as ktl

tfds = pytest.importorskip("tensorflow_datasets")

from _tfds_digits import DIGITS_NAME, NUM_TEST, NUM_TRAIN, digits_arrays


def _read_pass(ds):
    images, labels = [], []
    while True:
        try:
            _, inputs, batch_labels = ds.yield_batch()
        except EOFError:
            return images, labels
        images.append(inputs[0])
        labels.append(batch_labels[0])


def _example_keys(images, labels):
    """Sorted (pixels, label) byte strings: compares passes as multisets of examples."""
    return sorted(image.tobytes() + bytes([label]) for image, label in zip(images, labels))


def test_reads_back_the_train_split_as_uint8_batches(tfds_digits_dir):
    ds = ktl.from_tfds(
        DIGITS_NAME, split="train", batch_size=64, data_dir=tfds_digits_dir, download=False
    )
    assert isinstance(ds, ktl.TFDataset) and isinstance(ds, ktl.Dataset)
    assert ds.name == "digits_local/train"
    images, labels = _read_pass(ds)
    assert images[0].shape == (64, 8, 8, 1) and images[0].dtype == np.uint8
    assert labels[0].shape == (64,) and labels[0].dtype == np.int64
    assert sum(len(b) for b in labels) == NUM_TRAIN
    assert images[-1].shape[0] == NUM_TRAIN % 64  # Short last batch kept.
    x, y = digits_arrays()
    got = _example_keys(np.concatenate(images), np.concatenate(labels))
    assert got == _example_keys(x[:NUM_TRAIN], y[:NUM_TRAIN])


def test_reset_reads_the_test_split_again(tfds_digits_dir):
    ds = ktl.from_tfds(
        DIGITS_NAME, split="test", batch_size=100, data_dir=tfds_digits_dir, download=False
    )
    first = np.concatenate(_read_pass(ds)[1])
    ds.reset()
    second = np.concatenate(_read_pass(ds)[1])
    assert len(first) == NUM_TEST
    np.testing.assert_array_equal(first, second)


def test_split_slices_and_drop_remainder(tfds_digits_dir):
    ds = ktl.from_tfds(
        DIGITS_NAME,
        split="test[:100]",
        batch_size=32,
        data_dir=tfds_digits_dir,
        drop_remainder=True,
        download=False,
    )
    assert [len(b) for b in _read_pass(ds)[1]] == [32, 32, 32]


def test_shuffle_is_seeded_and_reshuffles_each_pass(tfds_digits_dir):
    def epochs(seed):
        ds = ktl.from_tfds(
            DIGITS_NAME,
            split="test",
            batch_size=64,
            data_dir=tfds_digits_dir,
            shuffle=True,
            seed=seed,
            download=False,
        )
        result = []
        for _ in range(2):
            result.append(np.concatenate(_read_pass(ds)[1]))
            ds.reset()
        return result

    a, b = epochs(5), epochs(5)
    unshuffled = np.concatenate(
        _read_pass(
            ktl.from_tfds(
                DIGITS_NAME, split="test", batch_size=64, data_dir=tfds_digits_dir, download=False
            )
        )[1]
    )
    for epoch_a, epoch_b in zip(a, b):
        np.testing.assert_array_equal(epoch_a, epoch_b)
        assert sorted(epoch_a) == sorted(unshuffled)
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], unshuffled)


def test_loop_forever_gives_full_batches_without_end(tfds_digits_dir):
    ds = ktl.from_tfds(
        DIGITS_NAME,
        split="test",
        batch_size=64,
        data_dir=tfds_digits_dir,
        shuffle=True,
        seed=0,
        loop_forever=True,
        download=False,
    )
    sizes = [len(ds.yield_batch()[2][0]) for _ in range(12)]  # 768 > 2 passes of 297.
    assert sizes == [64] * 12


def test_small_datasets_are_cached_after_decoding(tfds_digits_dir):
    from keras_trainloop.data import _tfds

    builder = tfds.builder(DIGITS_NAME, data_dir=tfds_digits_dir)
    assert _tfds.decoded_bytes(builder, NUM_TRAIN) == NUM_TRAIN * (64 + 8)
    cached = ktl.from_tfds(
        DIGITS_NAME, split="test", batch_size=64, data_dir=tfds_digits_dir, download=False
    )
    plain = ktl.from_tfds(
        DIGITS_NAME,
        split="test",
        batch_size=64,
        data_dir=tfds_digits_dir,
        cache=False,
        download=False,
    )
    # TFDS may cache the encoded records itself; ours sits after decoding, under the batching.
    assert _op_names(cached.tf_dataset)[:3] == ["Prefetch", "Batch", "Cache"]
    assert _op_names(plain.tf_dataset)[:3] == ["Prefetch", "Batch", "Prefetch"]


def _op_names(dataset):
    """Class names of the tf.data pipeline's stages, from the output back to the source."""
    names = []
    while dataset is not None:
        names.append(type(dataset).__name__.strip("_").replace("Dataset", ""))
        inputs = dataset._inputs()
        dataset = inputs[0] if inputs else None
    return names


@pytest.mark.parametrize(
    ("name", "split", "use_fixture_dir", "match"),
    [
        ("no_such_dataset", "train", True, "No dataset of this name"),
        ("mnist", "train", True, "not prepared there"),
        (DIGITS_NAME, "validation", True, r"split is not there.*\['test', 'train'\]"),
        (DIGITS_NAME, "train", False, "No dataset of this name"),
    ],
    ids=["unknown-name", "catalog-not-prepared", "unknown-split", "empty-data-dir"],
)
def test_missing_dataset_or_split_raises_without_network(
    tfds_digits_dir, tmp_path, name, split, use_fixture_dir, match
):
    data_dir = tfds_digits_dir if use_fixture_dir else str(tmp_path)
    with pytest.raises(ValueError, match=match) as info:
        ktl.from_tfds(name, split=split, batch_size=8, data_dir=data_dir, download=False)
    message = str(info.value)
    assert f"name={name!r}" in message and f"split={split!r}" in message
    assert f"data_dir={data_dir!r}" in message and "Fix:" in message


def test_missing_dataset_message_says_how_to_prepare_it(tmp_path):
    with pytest.raises(ValueError, match="download_and_prepare"):
        ktl.from_tfds(
            DIGITS_NAME, split="train", batch_size=8, data_dir=str(tmp_path), download=False
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, "batch_size=0"),
        ({"batch_size": 8, "as_supervised": False}, TypeError, "'as_supervised' itself"),
        ({"batch_size": 8, "try_gcs": True}, TypeError, "'try_gcs' itself"),
    ],
    ids=["batch-size", "as-supervised", "try-gcs"],
)
def test_bad_arguments(tfds_digits_dir, kwargs, error, match):
    with pytest.raises(error, match=match):
        ktl.from_tfds(
            DIGITS_NAME, split="train", data_dir=tfds_digits_dir, download=False, **kwargs
        )


def test_dataset_without_supervised_keys_is_rejected(tmp_path):
    from _tfds_digits import DigitsLocal

    class DigitsUnsupervised(DigitsLocal, skip_registration=True):
        name = "digits_unsupervised"

        def _info(self):
            info = super()._info()
            return tfds.core.DatasetInfo(builder=self, features=info.features)

        def _split_generators(self, dl_manager):
            x, y = digits_arrays()
            return {"train": self._generate_examples(x[:8], y[:8])}

    config = tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP)
    DigitsUnsupervised(data_dir=str(tmp_path)).download_and_prepare(download_config=config)
    with pytest.raises(ValueError, match="no supervised keys.*Fix:.*ktl.TFDataset"):
        ktl.from_tfds(
            "digits_unsupervised",
            split="train",
            batch_size=4,
            data_dir=str(tmp_path),
            download=False,
        )
