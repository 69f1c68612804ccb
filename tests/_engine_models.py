"""Tiny ONNX graphs shaped like the models TensorRT must take: an MLP, a two-input token model with a dynamic
sequence axis, and a model without a batch dimension; and the specs the build derives for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.derive import derive_spec
from model_pipeline.entry import ModelEntry
from model_pipeline.specs import Bounds, ModelSpec

SEQUENCE = Bounds(2, 8, 16)
TOKEN_BATCH = (1, 2, 4)


def _save(path: Path, graph: onnx.GraphProto) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def mlp_onnx(path: Path, hidden: int = 16, seed: int = 0) -> Path:
    """A small MNIST-shaped MLP graph (input [batch,1,28,28] -> logits [batch,10]) with a Constant and a Cast."""
    rng = np.random.default_rng(seed)
    weights = [
        numpy_helper.from_array(rng.standard_normal((784, hidden)).astype(np.float32) * 0.05, "w1"),
        numpy_helper.from_array(np.zeros(hidden, np.float32) + 0.1, "b1"),
        numpy_helper.from_array(rng.standard_normal((hidden, 10)).astype(np.float32) * 0.3, "w2"),
    ]
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], name="/flatten", axis=1),
        helper.make_node("MatMul", ["flat", "w1"], ["mm1"], name="/fc1/MatMul"),
        helper.make_node("Add", ["mm1", "b1"], ["fc1"], name="/fc1/Add"),
        helper.make_node("Relu", ["fc1"], ["act"], name="/relu"),
        helper.make_node(
            "Constant", [], ["scale"], name="/scale", value=numpy_helper.from_array(np.array(0.5, np.float32))
        ),
        helper.make_node("Mul", ["act", "scale"], ["scaled"], name="/mul"),
        helper.make_node("Cast", ["scaled"], ["scaled_f"], name="/cast", to=TensorProto.FLOAT),
        helper.make_node("MatMul", ["scaled_f", "w2"], ["logits"], name="/fc2/MatMul"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=weights,
    )
    return _save(path, graph)


def token_onnx(path: Path, mask_type: int = TensorProto.INT64) -> Path:
    """A text-encoder-shaped graph: token ids and a mask [batch, sequence] -> pooled [batch, 4], scores [batch, 3].

    Gather(embedding, input_ids) * Unsqueeze(Cast(attention_mask)) -> ReduceMean over the sequence -> MatMul.
    """
    rng = np.random.default_rng(1)
    weights = [
        numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "embedding"),
        numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "head"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["embedding", "input_ids"], ["embedded"], name="/embed"),
        helper.make_node("Cast", ["attention_mask"], ["mask_f"], name="/mask/cast", to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "last_axis"], ["mask_3d"], name="/mask/unsqueeze"),
        helper.make_node("Mul", ["embedded", "mask_3d"], ["masked"], name="/mask/mul"),
        helper.make_node("ReduceMean", ["masked"], ["pooled"], name="/pool", axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head"], ["scores"], name="/head"),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("attention_mask", mask_type, ["batch", "sequence"]),
        ],
        [
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3]),
        ],
        initializer=weights,
    )
    return _save(path, graph)


def fixed_onnx(path: Path) -> Path:
    """A model without a batch dimension: image [3, 8] -> out [3, 2], every dim fixed."""
    weights = np.random.default_rng(2).standard_normal((8, 2)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["image", "weights"], ["out"], name="/matmul")],
        "fixed",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [3, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [3, 2])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    return _save(path, graph)


def tensorrt_spec(onnx_path: Path, name: str, **entry: Any) -> ModelSpec:
    """The spec the build derives for ``onnx_path`` served by TensorRT (fp16 unless ``precision`` says)."""
    return derive_spec(ModelEntry(name=name, source=onnx_path.name, backend="tensorrt", **entry), onnx_path)


def token_spec(onnx_path: Path, **entry: Any) -> ModelSpec:
    low, opt, high = TOKEN_BATCH
    return tensorrt_spec(
        onnx_path,
        "encoder",
        batch_min=low,
        batch_opt=opt,
        batch_max=high,
        axes=(("sequence", SEQUENCE),),
        input_ranges=(("attention_mask", (0.0, 1.0)),),
        **entry,
    )
