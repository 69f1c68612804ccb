"""Train the MNIST MLP: seeded, Adam, a progress bar or callback, and a report with the test accuracy."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from model_pipeline.errors import DataError, SpecError
from model_pipeline.mnist_data import MnistData
from model_pipeline.models import MnistMLP

# Called after each batch with (batches done, batches in total, that batch's loss).
ProgressCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class TrainReport:
    """How the model was trained and how well it does on the held-out test split."""

    data_source: str
    fallback_reason: str | None
    train_samples: int
    test_samples: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    final_loss: float
    test_accuracy: float
    seconds: float


def _check_settings(data: MnistData, epochs: int, batch_size: int, learning_rate: float) -> None:
    if epochs < 1:
        raise SpecError(f"epochs ({epochs}) must be >= 1")
    if batch_size < 1:
        raise SpecError(f"batch_size ({batch_size}) must be >= 1")
    if not learning_rate > 0:
        raise SpecError(f"learning_rate ({learning_rate}) must be > 0")
    if len(data.train_labels) == 0 or len(data.test_labels) == 0:
        raise DataError(
            f"training needs non-empty splits; got {len(data.train_labels)} train and "
            f"{len(data.test_labels)} test samples from {data.source}"
        )


def evaluate_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1024) -> float:
    """Share of ``images`` whose arg-max logit equals the label."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(labels), batch_size):
            logits = model(torch.from_numpy(images[start : start + batch_size]))
            correct += int((logits.argmax(dim=1).numpy() == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def _progress_bar(total: int, enabled: bool) -> ProgressCallback | None:
    if not enabled:
        return None
    from tqdm import tqdm

    bar = tqdm(total=total, desc="train mnist", unit="batch")

    def update(done: int, _total: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if done == total:
            bar.close()

    return update


def train_mnist(
    data: MnistData,
    *,
    epochs: int = 1,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: bool | ProgressCallback = False,
) -> tuple[MnistMLP, TrainReport]:
    """Train a fresh MnistMLP with Adam on ``data``; the same seed and data give the same weights."""
    _check_settings(data, epochs, batch_size, learning_rate)
    started = time.perf_counter()
    torch.manual_seed(seed)
    model = MnistMLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.CrossEntropyLoss()
    images, labels = torch.from_numpy(data.train_images), torch.from_numpy(data.train_labels)
    shuffle = torch.Generator().manual_seed(seed)
    batches_per_epoch = -(-len(labels) // batch_size)
    total = epochs * batches_per_epoch
    report_progress = progress if callable(progress) else _progress_bar(total, progress)
    done, loss_value = 0, float("nan")
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=shuffle)
        for start in range(0, len(labels), batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(images[index]), labels[index])
            loss.backward()
            optimizer.step()
            done, loss_value = done + 1, float(loss.item())
            if report_progress is not None:
                report_progress(done, total, loss_value)
    accuracy = evaluate_accuracy(model, data.test_images, data.test_labels)
    report = TrainReport(
        data_source=data.source,
        fallback_reason=data.fallback_reason,
        train_samples=len(labels),
        test_samples=len(data.test_labels),
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        final_loss=loss_value,
        test_accuracy=accuracy,
        seconds=time.perf_counter() - started,
    )
    return model.eval(), report
