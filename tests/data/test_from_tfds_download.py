"""from_tfds downloads and prepares a missing dataset, as tfds.load does; download=False is offline.

The dataset here is a registered TFDS builder whose download step is real but local: its
`_split_generators` asks TFDS' download manager for a file path (an `.npz` of the digits
written by the test), which TFDS copies into `data_dir/downloads` as it would fetch a URL.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras_trainloop as ktl

tfds = pytest.importorskip("tensorflow_datasets")

from _tfds_digits import DigitsLocal, digits_arrays

tfds.disable_progress_bar()
NAME = "ktl_test_digits_downloaded"
NUM_TRAIN, NUM_TEST = 120, 40
FAST = {
    "download_config": tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP
    )
}


class KtlTestDigitsDownloaded(DigitsLocal):
    """Registered (so `tfds.builder(NAME)` finds it in any data_dir); downloads `SOURCE`."""

    name = NAME
    SOURCE: str | None = None  # A local file, set by each test (monkeypatch).

    def _split_generators(self, dl_manager):
        path = dl_manager.download(self.SOURCE)
        with np.load(path) as data:
            images, labels = data["images"], data["labels"]
        return {
            "train": self._generate_examples(images[:NUM_TRAIN], labels[:NUM_TRAIN]),
            "test": self._generate_examples(images[NUM_TRAIN:], labels[NUM_TRAIN:]),
        }


@pytest.fixture
def source(tmp_path, monkeypatch):
    """The file the builder downloads: the first NUM_TRAIN + NUM_TEST digits."""
    images, labels = digits_arrays()
    path = tmp_path / "digits.npz"
    np.savez(path, images=images[: NUM_TRAIN + NUM_TEST], labels=labels[: NUM_TRAIN + NUM_TEST])
    monkeypatch.setattr(KtlTestDigitsDownloaded, "SOURCE", str(path))
    return path


def _labels(ds):
    labels = []
    while True:
        try:
            labels.append(ds.yield_batch()[2][0])
        except EOFError:
            return np.concatenate(labels)


def test_missing_dataset_is_downloaded_and_prepared_by_default(tmp_path, source, capsys):
    data_dir = tmp_path / "tfds"
    ds = ktl.from_tfds(
        NAME, split="test", batch_size=16, data_dir=data_dir, download_and_prepare_kwargs=FAST
    )
    expected = digits_arrays()[1][NUM_TRAIN : NUM_TRAIN + NUM_TEST]
    np.testing.assert_array_equal(np.sort(_labels(ds)), np.sort(expected))  # TFDS reorders.
    assert list((data_dir / "downloads").rglob("*.npz"))  # TFDS' copy of the download.
    assert tfds.builder(NAME, data_dir=str(data_dir)).is_prepared()
    # Prepared now: offline reads work, and nothing is downloaded again.
    source.unlink()
    again = ktl.from_tfds(NAME, split="train", batch_size=64, data_dir=data_dir, download=False)
    assert len(_labels(again)) == NUM_TRAIN
    assert len(_labels(ktl.from_tfds(NAME, split="train", batch_size=64, data_dir=data_dir))) == (
        NUM_TRAIN
    )
    capsys.readouterr()


def test_download_false_on_an_empty_data_dir_says_where_it_looked_and_how_to_prepare(
    tmp_path, source
):
    data_dir = str(tmp_path / "empty")
    with pytest.raises(ValueError, match="not prepared there.*download=False") as info:
        ktl.from_tfds(NAME, split="train", batch_size=8, data_dir=data_dir, download=False)
    message = str(info.value)
    assert f"data_dir={data_dir!r}" in message and data_dir + "/" + NAME in message
    assert "download_and_prepare()" in message and "download=False" in message
    assert not list(tmp_path.glob("empty/downloads/*"))  # Nothing was fetched.


def _no_network(self, url_or_urls):
    raise ConnectionError(f"Failed to establish a new connection to {url_or_urls}")


@pytest.mark.parametrize("where", ["missing-file", "no-network"])
def test_failed_download_says_where_it_looked_and_how_to_prepare_offline(
    tmp_path, monkeypatch, capsys, where
):
    monkeypatch.setattr(KtlTestDigitsDownloaded, "SOURCE", str(tmp_path / "absent.npz"))
    if where == "no-network":  # What requests raises offline (TFDS retries it for minutes).
        monkeypatch.setattr(KtlTestDigitsDownloaded, "SOURCE", "https://example.com/d.npz")
        monkeypatch.setattr(tfds.download.DownloadManager, "download", _no_network)
    data_dir = str(tmp_path / "tfds")
    with pytest.raises(RuntimeError, match="could not download and prepare") as info:
        ktl.from_tfds(
            NAME, split="train", batch_size=8, data_dir=data_dir, download_and_prepare_kwargs=FAST
        )
    message = str(info.value)
    assert f"data_dir={data_dir!r}" in message and repr(f"{data_dir}/{NAME}/1.0.0") in message
    assert "download_and_prepare()" in message and "download=False" in message
    assert ("ConnectionError" if where == "no-network" else "NotFoundError") in message
    assert info.value.__cause__ is not None
    assert not tfds.builder(NAME, data_dir=data_dir).is_prepared()
    capsys.readouterr()
