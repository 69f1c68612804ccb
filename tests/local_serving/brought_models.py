"""Brought models unlike MNIST, written with onnx.helper and built into a repository by the pipeline itself.

- ``tokens``: INT64 ``input_ids`` [batch, sequence] and FP32 ``features`` [batch, 4] -> FP32 ``scores``
  [batch, 4] (features times the mean token id) and BOOL ``mask`` [batch, sequence] (token id > 4);
  sequence bounded {2, 4, 8}, token ids in [0, 9].
- ``fixed``: no batch dimension, FP32 ``x`` [4, 3] -> ``y`` [4, 2].
- ``labeller``: FP32 ``x`` [batch, 3] -> INT64 ``label`` [batch], only the batch (as scikit-learn's are).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.build import BuildSettings, build_repository
from model_pipeline.entry import ModelEntry
from model_pipeline.specs import Bounds

OPSET = 17
MODELS = ("tokens", "fixed", "labeller")


def _save(graph: onnx.GraphProto, path: Path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path.name


def tokens_onnx(path: Path) -> str:
    """Two inputs of different types, two outputs, a dynamic sequence axis."""
    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["ids"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["features", "mean"], ["scores"]),
        helper.make_node("Greater", ["input_ids", "four"], ["mask"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", "sequence"]),
        ],
        [numpy_helper.from_array(np.array(4, dtype=np.int64), "four")],
    )
    return _save(graph, path)


def fixed_onnx(path: Path) -> str:
    """No batch dimension: every dim is fixed."""
    weights = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2) / 7, "weights")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "weights"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])],
        [weights],
    )
    return _save(graph, path)


def labeller_onnx(path: Path) -> str:
    """An output that is only the batch dimension."""
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)],
        "labeller",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
    )
    return _save(graph, path)


def brought_entries(root: Path) -> tuple[ModelEntry, ...]:
    """The three models' files under ``root`` and their stack entries."""
    root.mkdir(parents=True, exist_ok=True)
    return (
        ModelEntry(
            name="tokens",
            source=tokens_onnx(root / "tokens.onnx"),
            axes=(("sequence", Bounds(2, 4, 8)),),
            input_ranges=(("input_ids", (0.0, 9.0)),),
        ),
        ModelEntry(name="fixed", source=fixed_onnx(root / "fixed.onnx")),
        ModelEntry(name="labeller", source=labeller_onnx(root / "labeller.onnx")),
    )


def build_brought_repository(work: Path) -> Path:
    """A verified repository of the three models, built by ``build_repository`` into ``work/repository``."""
    sources = work / "sources"
    settings = BuildSettings(
        models=brought_entries(sources), out=work / "repository", root=sources, cache_dir=work / "cache"
    )
    return build_repository(settings).repository.path
