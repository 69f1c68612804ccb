"""MNIST IDX reading/writing, loading from a directory or a 127.0.0.1 URL, and the stated scikit-learn fallback."""

from __future__ import annotations

import gzip
import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from model_pipeline.errors import DataError, DataUnavailableError
from model_pipeline.mnist_data import (
    MNIST_FILES,
    MNIST_MEAN,
    MNIST_STD,
    load_idx_directory,
    load_mnist,
    read_idx,
    write_idx,
)
from tests._pipeline_helpers import serve_directory


def _write_split(directory: Path, n_train: int = 60, n_test: int = 20, gz: bool = True, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for split, count in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        write_idx(directory / f"{MNIST_FILES[f'{split}_images']}{suffix}", images)
        write_idx(directory / f"{MNIST_FILES[f'{split}_labels']}{suffix}", labels)


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    _write_split(tmp_path / "mnist")
    return tmp_path / "mnist"


@pytest.fixture
def http_server(mnist_dir: Path) -> Iterator[str]:
    with serve_directory(mnist_dir) as url:
        yield f"{url}/"


def test_reads_the_standard_idx_layout(tmp_path: Path) -> None:
    # Built by hand from the format description: 0x0000, type 0x08 (ubyte), 3 dims, big-endian sizes, data.
    raw = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 2, 3) + bytes(range(12))
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    expected = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    np.testing.assert_array_equal(read_idx(tmp_path / "a-idx3-ubyte"), expected)


def test_reads_big_endian_ints_and_gzip(tmp_path: Path) -> None:
    raw = bytes([0, 0, 0x0C, 1]) + struct.pack(">1I", 3) + struct.pack(">3i", 1, -2, 70000)
    with gzip.open(tmp_path / "b.gz", "wb") as stream:
        stream.write(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), [1, -2, 70000])


def test_writes_the_standard_idx_layout(tmp_path: Path) -> None:
    labels = np.array([7, 2, 1], dtype=np.uint8)
    write_idx(tmp_path / "labels-idx1-ubyte", labels)
    assert (tmp_path / "labels-idx1-ubyte").read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("name", ["x-idx", "x-idx.gz"])
def test_write_then_read_round_trips(tmp_path: Path, dtype: type, name: str) -> None:
    array: np.ndarray = (np.arange(24) - 5).reshape(2, 3, 4).astype(dtype)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, array)), array)


def test_unsupported_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dtype int64 cannot be stored as IDX"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))


def test_bad_magic_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "x")


def test_truncated_file_is_an_error(tmp_path: Path) -> None:
    raw = bytes([0, 0, 0x08, 2]) + struct.pack(">2I", 4, 4) + bytes(10)
    (tmp_path / "x").write_bytes(raw)
    with pytest.raises(DataError, match=r"shape \[4, 4\] \(16 bytes\), the file has 10"):
        read_idx(tmp_path / "x")


@pytest.mark.parametrize("gz", [True, False])
def test_directory_loads_normalized_nchw_images_and_int64_labels(tmp_path: Path, gz: bool) -> None:
    _write_split(tmp_path, n_train=30, n_test=10, gz=gz)
    data = load_idx_directory(tmp_path)
    assert data.train_images.shape == (30, 1, 28, 28) and data.test_images.shape == (10, 1, 28, 28)
    assert data.train_images.dtype == np.float32 and data.train_labels.dtype == np.int64
    raw = read_idx(tmp_path / (MNIST_FILES["train_images"] + (".gz" if gz else "")))
    expected = (raw[3].astype(np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(data.train_images[3, 0], expected, rtol=1e-6)
    assert data.source == f"idx:{tmp_path}" and data.fallback_reason is None and not data.is_fallback


def test_label_count_must_match_images(mnist_dir: Path) -> None:
    write_idx(mnist_dir / (MNIST_FILES["test_labels"] + ".gz"), np.zeros(3, dtype=np.uint8))
    with pytest.raises(DataError, match=r"test labels \[3\] do not match 20 images"):
        load_idx_directory(mnist_dir)


def test_load_mnist_from_a_directory_does_not_fall_back(mnist_dir: Path) -> None:
    data = load_mnist(mnist_dir)
    assert data.fallback_reason is None and len(data.train_labels) == 60 and len(data.test_labels) == 20


def test_load_mnist_downloads_from_a_url(http_server: str, tmp_path: Path) -> None:
    download = tmp_path / "download"
    data = load_mnist(http_server, download_dir=download, timeout_s=10)
    assert data.source == f"url:{http_server}" and data.fallback_reason is None
    assert sorted(p.name for p in download.iterdir()) == sorted(f"{stem}.gz" for stem in MNIST_FILES.values())
    np.testing.assert_array_equal(data.test_labels, load_idx_directory(tmp_path / "mnist").test_labels)


def test_unreachable_url_falls_back_with_the_reason_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="model_pipeline.mnist_data"):
        data = load_mnist("http://127.0.0.1:9/mnist/", download_dir=tmp_path / "d", timeout_s=2)
    assert data.is_fallback and data.source == "sklearn-digits"
    assert data.fallback_reason is not None and "download of http://127.0.0.1:9/mnist/" in data.fallback_reason
    assert any("MNIST not available" in r.message and "download of" in r.message for r in caplog.records)
    assert not list((tmp_path / "d").iterdir())  # nothing half-downloaded is left to be mistaken for data


def test_missing_files_fall_back_naming_them(tmp_path: Path) -> None:
    data = load_mnist(tmp_path)
    assert data.fallback_reason is not None
    assert "train-images-idx3-ubyte" in data.fallback_reason and str(tmp_path) in data.fallback_reason


def test_no_source_falls_back_and_says_so() -> None:
    data = load_mnist(None)
    assert data.fallback_reason is not None and "no MNIST source configured" in data.fallback_reason


def test_fallback_can_be_forbidden(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="MNIST IDX files missing"):
        load_mnist(tmp_path, allow_fallback=False)


def test_corrupt_mnist_is_an_error_not_a_fallback(mnist_dir: Path) -> None:
    (mnist_dir / (MNIST_FILES["train_images"] + ".gz")).write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: cannot read IDX file"):
        load_mnist(mnist_dir)


def test_fallback_is_real_digits_laid_out_like_mnist() -> None:
    data = load_mnist(None)
    images = np.concatenate([data.train_images, data.test_images])
    assert images.shape == (1797, 1, 28, 28) and images.dtype == np.float32
    background = (0.0 - MNIST_MEAN) / MNIST_STD
    # MNIST keeps digits in the centre 20x20 box: the 4-pixel frame is background.
    np.testing.assert_allclose(images[:, 0, :4, :], background, rtol=1e-6)
    np.testing.assert_allclose(images[:, 0, 24:, :], background, rtol=1e-6)
    assert images[:, 0, 4:24, 4:24].max() == pytest.approx((1.0 - MNIST_MEAN) / MNIST_STD)
    labels = np.concatenate([data.train_labels, data.test_labels])
    assert sorted(np.unique(labels)) == list(range(10))
    again = load_mnist(None)
    np.testing.assert_array_equal(again.test_labels, data.test_labels)  # the split is seeded
