"""MNIST in the standard IDX format (read and write, plain or .gz), from a directory or a URL.

Without the IDX files (no source configured, files missing, download failed) the loader falls back, with a
logged and returned reason, to scikit-learn's bundled 8x8 handwritten digits upscaled to MNIST's 28x28 layout.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import logging
import shutil
import struct
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_pipeline.errors import DataError, DataUnavailableError

logger = logging.getLogger(__name__)

# Standard file names of the MNIST distribution (yann.lecun.com and its mirrors).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# Mean and standard deviation of the MNIST training pixels in [0, 1]; clients must normalize the same way.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIZE = 28
DEFAULT_DOWNLOAD_DIR = Path.home() / ".cache" / "model_pipeline" / "mnist"

# IDX type byte -> big-endian numpy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# Keyed by kind and size ("u1", "f4", ...), which ignores the byte order of the array being written.
_IDX_CODES = {dtype.str[1:]: code for code, dtype in _IDX_DTYPES.items()}


@dataclass(frozen=True)
class MnistData:
    """Normalized images ``float32 [N, 1, 28, 28]`` and labels ``int64 [N]``, with where they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str
    fallback_reason: str | None = None

    @property
    def is_fallback(self) -> bool:
        """True when this is not MNIST but the scikit-learn digits stand-in."""
        return self.fallback_reason is not None


def _open(path: Path) -> io.BufferedIOBase:
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (``.gz`` decompressed on the fly) into a native-endian array."""
    path = Path(path)
    try:
        with _open(path) as stream:
            header = stream.read(4)
            if len(header) != 4 or header[:2] != b"\x00\x00" or header[2] not in _IDX_DTYPES:
                raise DataError(f"{path}: not an IDX file (magic bytes {header.hex() or 'missing'})")
            dtype, ndim = _IDX_DTYPES[header[2]], header[3]
            shape = struct.unpack(f">{ndim}I", stream.read(4 * ndim))
            payload = stream.read()
    except (OSError, EOFError, struct.error) as exc:
        raise DataError(f"{path}: cannot read IDX file: {exc}") from exc
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(payload) != expected:
        raise DataError(f"{path}: IDX header says shape {list(shape)} ({expected} bytes), the file has {len(payload)}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in ``.gz``)."""
    path = Path(path)
    code = _IDX_CODES.get(array.dtype.str[1:])
    if code is None:
        raise DataError(
            f"{path}: dtype {array.dtype} cannot be stored as IDX; allowed: uint8 int8 int16 int32 float32 float64"
        )
    if array.ndim == 0 or array.ndim > 255:
        raise DataError(f"{path}: IDX needs 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=_IDX_DTYPES[code]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as stream:
            stream.write(data)
    else:
        path.write_bytes(data)
    return path


def normalize_images(images: np.ndarray) -> np.ndarray:
    """``uint8 [N, 28, 28]`` pixels -> ``float32 [N, 1, 28, 28]`` standardized with MNIST's mean and std."""
    scaled = images.astype(np.float32) / 255.0
    return ((scaled - MNIST_MEAN) / MNIST_STD)[:, None, :, :].astype(np.float32)


def _find_file(directory: Path, stem: str) -> Path | None:
    # The distribution ships .gz; many mirrors and torchvision's raw/ folder keep them uncompressed.
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _check_split(images: np.ndarray, labels: np.ndarray, split: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError(f"MNIST {split} images must be uint8 [N, 28, 28], got {images.dtype} {list(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise DataError(f"MNIST {split} labels {list(labels.shape)} do not match {images.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"MNIST {split} labels must be digits 0-9, got range {labels.min()}..{labels.max()}")


def load_idx_directory(directory: str | Path) -> MnistData:
    """Load the four MNIST IDX files from ``directory``; DataError names any that are missing."""
    directory = Path(directory)
    found = {key: _find_file(directory, stem) for key, stem in MNIST_FILES.items()}
    missing = [MNIST_FILES[key] for key, path in found.items() if path is None]
    if missing:
        raise DataUnavailableError(f"MNIST IDX files missing in {directory}: {', '.join(missing)} (plain or .gz)")
    arrays = {key: read_idx(path) for key, path in found.items() if path is not None}
    for split in ("train", "test"):
        _check_split(arrays[f"{split}_images"], arrays[f"{split}_labels"], split)
    return MnistData(
        train_images=normalize_images(arrays["train_images"]),
        train_labels=arrays["train_labels"].astype(np.int64),
        test_images=normalize_images(arrays["test_images"]),
        test_labels=arrays["test_labels"].astype(np.int64),
        source=f"idx:{directory}",
    )


def download_mnist(base_url: str, directory: str | Path, timeout_s: float = 30.0) -> Path:
    """Download the four ``.gz`` IDX files under ``base_url`` into ``directory`` (existing files are kept)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stem in MNIST_FILES.values():
        if _find_file(directory, stem) is not None:
            continue
        url = urllib.parse.urljoin(base_url.rstrip("/") + "/", f"{stem}.gz")
        target, partial = directory / f"{stem}.gz", directory / f".{stem}.gz.partial"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, partial.open("wb") as stream:
                shutil.copyfileobj(response, stream)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            partial.unlink(missing_ok=True)
            raise DataUnavailableError(f"download of {url} failed: {exc}") from exc
        # Only complete downloads get the real name: an interrupted run never leaves a truncated file behind.
        partial.replace(target)
    return directory


def sklearn_digits_as_mnist(reason: str, test_fraction: float = 0.2, seed: int = 0) -> MnistData:
    """scikit-learn's 1,797 8x8 handwritten digits, upscaled to 20x20 and centered in 28x28 as in MNIST."""
    from scipy.ndimage import zoom  # scipy comes with scikit-learn
    from sklearn.datasets import load_digits

    digits = load_digits()
    # MNIST digits are size-normalized to a 20x20 box centered in the 28x28 frame; 8 * 2.5 = 20.
    upscaled = np.clip(zoom(digits.images, (1, 2.5, 2.5), order=1), 0, 16)
    pixels = np.zeros((len(upscaled), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    pixels[:, 4:24, 4:24] = np.round(upscaled * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return MnistData(
        train_images=normalize_images(pixels[train]),
        train_labels=labels[train],
        test_images=normalize_images(pixels[test]),
        test_labels=labels[test],
        source="sklearn-digits",
        fallback_reason=reason,
    )


def _is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in ("http", "https", "file", "ftp")


def load_mnist(
    source: str | Path | None,
    *,
    download_dir: str | Path | None = None,
    allow_fallback: bool = True,
    timeout_s: float = 30.0,
) -> MnistData:
    """MNIST from a directory of IDX files or a base URL, else scikit-learn's digits with a stated reason.

    A corrupt IDX file is an error, never a reason to fall back: training on other data would hide it.
    """
    try:
        if source is None or str(source) == "":
            raise DataUnavailableError("no MNIST source configured (a directory of IDX files or a base URL)")
        source_text = str(source)
        if _is_url(source_text):
            cache = Path(download_dir) if download_dir else DEFAULT_DOWNLOAD_DIR
            data = load_idx_directory(download_mnist(source_text, cache, timeout_s))
            return dataclasses.replace(data, source=f"url:{source_text}")
        return load_idx_directory(source_text)
    except DataUnavailableError as exc:
        if not allow_fallback:
            raise
        reason = str(exc)
    logger.warning("MNIST not available (%s); using scikit-learn's 8x8 digits upscaled to 28x28", reason)
    return sklearn_digits_as_mnist(reason)
