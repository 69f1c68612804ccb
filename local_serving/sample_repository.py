"""A small real model repository in the pipeline's layout, for tests and for `make demo` before a build exists.

The model is a softmax-regression classifier trained on scikit-learn's real handwritten digits (upscaled to
MNIST's 28x28 and normalized like the pipeline does), written with onnx.helper, so accuracy means something.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.mnist_data import sklearn_digits_as_mnist

OPSET = 17


def train_digit_classifier(seed: int = 0, ridge: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Weights [784, 10] and bias [10] of a ridge-regression classifier (one-hot targets, closed form)."""
    data = sklearn_digits_as_mnist("local serving sample model", seed=seed)
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
    """Write a verified repository with the pipeline's own writer: MNIST spec, this ONNX model, golden file."""
    from model_pipeline.onnx_export import write_golden
    from model_pipeline.repository import ModelArtifacts, TensorRTStatus, collect_tool_versions, write_repository
    from model_pipeline.specs import DEFAULT_SPECS

    spec = dataclasses.replace(DEFAULT_SPECS["mnist"], backend="onnxruntime")
    weights, bias = train_digit_classifier(seed)
    with tempfile.TemporaryDirectory(prefix="sample-mnist-") as work:
        onnx_path = Path(work) / "model.onnx"
        onnx.save(mnist_onnx(weights, bias), onnx_path)
        golden = write_golden(spec, onnx_path, Path(work) / "golden.npz")
        artifacts = ModelArtifacts(
            spec,
            onnx_path,
            golden,
            TensorRTStatus("skipped", reason="no TensorRT here"),
            weights="ridge regression on scikit-learn digits (local_serving sample)",
        )
        return write_repository(target, [artifacts], collect_tool_versions()).path
