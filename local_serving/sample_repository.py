"""A small real model repository built by the pipeline, for tests and for `make demo` before a build exists.

The model is a softmax-regression classifier trained on scikit-learn's real handwritten digits (upscaled to
MNIST's 28x28 and normalized like the pipeline does), written with onnx.helper, so accuracy means something.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.mnist_data import MnistData, sklearn_digits_as_mnist

OPSET = 17


def train_digit_classifier(data: MnistData, ridge: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Weights [784, 10] and bias [10] of a ridge-regression classifier (one-hot targets, closed form)."""
    features = data.train_images.reshape(len(data.train_images), -1).astype(np.float64)
    design = np.hstack([features, np.ones((len(features), 1))])
    targets = np.eye(10)[data.train_labels]
    gram = design.T @ design + ridge * np.eye(design.shape[1])
    solution = np.linalg.solve(gram, design.T @ targets)
    return solution[:-1].astype(np.float32), solution[-1].astype(np.float32)


def mnist_onnx(weights: np.ndarray, bias: np.ndarray) -> onnx.ModelProto:
    """``input`` FP32 [batch,1,28,28] -> ``logits`` FP32 [batch,10], dynamic batch axis named "batch"."""
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weights", "bias"], ["logits"]),
        ],
        "mnist_softmax_regression",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def write_sample_repository(target: Path, seed: int = 0) -> Path:
    """Build a verified repository with the pipeline itself: this ONNX model, brought as ``mnist``, verified on
    real digits (the golden file's samples)."""
    from model_pipeline.build import BuildSettings, build_repository
    from model_pipeline.entry import ModelEntry

    data = sklearn_digits_as_mnist("local serving sample model", seed=seed)
    weights, bias = train_digit_classifier(data)
    with tempfile.TemporaryDirectory(prefix="sample-mnist-") as work:
        root = Path(work)
        onnx.save(mnist_onnx(weights, bias), root / "model.onnx")
        np.savez(root / "samples.npz", input=data.test_images[:64])
        entry = ModelEntry(name="mnist", source="model.onnx", samples="samples.npz")
        settings = BuildSettings(models=(entry,), out=target, root=root, cache_dir=root / "cache")
        return build_repository(settings).repository.path
