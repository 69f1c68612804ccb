"""A small real model repository in the pipeline's layout, for tests and for `make demo` before a build exists.

The model is a softmax-regression classifier trained on scikit-learn's real handwritten digits (upscaled to
MNIST's 28x28 and normalized like the pipeline does), written with onnx.helper, so accuracy means something.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

from local_serving.wrappers import write_config
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


def mnist_config(max_batch_size: int = 8, preferred: tuple[int, ...] = (4, 8),
                 max_queue_delay_us: int = 100) -> mc.ModelConfig:
    """The config.pbtxt the pipeline writes for MNIST on ONNX Runtime (CONTRACTS.md)."""
    config = mc.ModelConfig(name="mnist", platform="onnxruntime_onnx", max_batch_size=max_batch_size)
    config.input.add(name="input", data_type=mc.TYPE_FP32, dims=[1, 28, 28])
    config.output.add(name="logits", data_type=mc.TYPE_FP32, dims=[10])
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_AUTO, count=1)
    return config


def write_sample_repository(target: Path, seed: int = 0) -> Path:
    """Write ``<target>/mnist/{config.pbtxt,1/model.onnx,golden.npz}`` and a manifest.json."""
    weights, bias = train_digit_classifier(seed)
    model = mnist_onnx(weights, bias)
    directory = target / "mnist"
    (directory / "1").mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "1" / "model.onnx")
    write_config(mnist_config(), directory)
    _write_golden(directory, weights, bias)
    manifest = {"format": 1, "models": {"mnist": {"version": 1, "platform": "onnxruntime_onnx",
                                                  "backend_requested": "onnxruntime", "max_batch_size": 8}},
                "source": "local_serving.sample_repository"}
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return target


def _write_golden(directory: Path, weights: np.ndarray, bias: np.ndarray) -> None:
    images = sklearn_digits_as_mnist("golden inputs").test_images[:8]
    logits = images.reshape(len(images), -1) @ weights + bias
    np.savez(directory / "golden.npz", input=images, logits=logits.astype(np.float32))
