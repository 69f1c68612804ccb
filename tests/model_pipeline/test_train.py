"""MNIST training: seeded, learns from a few hundred generated IDX digits, reports test accuracy and progress."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_pipeline.errors import SpecError
from model_pipeline.mnist_data import MNIST_FILES, MnistData, load_idx_directory, write_idx
from model_pipeline.train import evaluate_accuracy, train_mnist


def _pattern_digits(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class k is a bright 4-pixel-wide vertical bar at column 2 + 2.4k, on noise."""
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    images = rng.integers(0, 60, size=(count, 28, 28)).astype(np.uint8)
    for index, label in enumerate(labels):
        column = 2 + int(label * 2.4)
        images[index, 4:24, column : column + 3] = 255
    return images, labels


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> MnistData:
    directory = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, count in (("train", 600), ("test", 200)):
        images, labels = _pattern_digits(count, rng)
        write_idx(directory / f"{MNIST_FILES[f'{split}_images']}.gz", images)
        write_idx(directory / f"{MNIST_FILES[f'{split}_labels']}.gz", labels)
    return load_idx_directory(directory)


@pytest.mark.slow
def test_one_epoch_learns_the_generated_digits(generated: MnistData) -> None:
    model, report = train_mnist(generated)
    assert report.test_accuracy > 0.9
    assert report.test_accuracy == evaluate_accuracy(model, generated.test_images, generated.test_labels)
    assert (report.train_samples, report.test_samples, report.epochs, report.batch_size) == (600, 200, 1, 64)
    assert report.learning_rate == 1e-3 and report.fallback_reason is None
    assert not model.training  # handed back ready for export


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_other_weights(generated: MnistData) -> None:
    first, _ = train_mnist(generated, seed=3)
    second, _ = train_mnist(generated, seed=3)
    third, _ = train_mnist(generated, seed=4)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    assert not torch.equal(first.state_dict()["fc1.weight"], third.state_dict()["fc1.weight"])


@pytest.mark.slow
def test_progress_callback_sees_every_batch(generated: MnistData) -> None:
    calls: list[tuple[int, int, float]] = []
    _, report = train_mnist(generated, batch_size=100, epochs=2, progress=lambda *a: calls.append(a))
    assert [c[:2] for c in calls] == [(i, 12) for i in range(1, 13)]  # 2 epochs x 6 batches of 100
    assert calls[-1][2] == report.final_loss


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"batch_size": 0}, "batch_size \\(0\\) must be >= 1"),
        ({"epochs": 0}, "epochs \\(0\\) must be >= 1"),
        ({"learning_rate": 0.0}, "learning_rate \\(0.0\\) must be > 0"),
    ],
)
def test_bad_settings_are_refused(generated: MnistData, settings: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        train_mnist(generated, **settings)
