"""Tiny, valid model repositories for the whole-stack runs: the stacks' model names and specs, tiny graphs.

Written with the pipeline's own writer, so they carry real manifests; no torch training is involved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.derive import derive_spec
from model_pipeline.entry import ModelEntry
from model_pipeline.repository import ModelArtifacts, TensorRTStatus, collect_tool_versions, write_repository
from model_pipeline.sources import BUILTIN_BY_ARCHITECTURE
from model_pipeline.specs import Bounds, ModelSpec, TensorSpec
from model_pipeline.stack import stack_build
from offline.harness import PROJECT, stack_config
from tests._pipeline_helpers import golden_for, tiny_onnx
from tests.paths import ROOT

REPOSITORY_KEY = f"{PROJECT}:modelRepository"


def stack_entries(stack: str) -> tuple[ModelEntry, ...]:
    """The entries `python -m model_pipeline build --stack <stack>` builds: the stack file's models and settings."""
    return stack_build(stack, ROOT).models


def _builtin_shape(entry: ModelEntry) -> ModelSpec:
    """The built-in's tensors, for drawing a tiny graph of the same interface."""
    builtin = BUILTIN_BY_ARCHITECTURE[entry.builtin or "mnist_mlp"]
    classes = 10 if builtin.architecture == "mnist_mlp" else 1000
    return ModelSpec(
        entry.name,
        (TensorSpec(builtin.input_name, "FP32", builtin.input_dims),),
        (TensorSpec(builtin.output_name, "FP32", (classes,)),),
        Bounds(1, 1, 1),
    )


def pooled_onnx(path: Path, spec: ModelSpec) -> Path:
    """ResNet-50's tensors ([3,224,224] -> [1000]) through a global average pool and one small MatMul."""
    channels, classes = spec.inputs[0].dims[0], spec.outputs[0].dims[0]
    weights = np.random.default_rng(0).standard_normal((channels, classes)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0),
            helper.make_node("MatMul", ["pooled", "weights"], ["logits"]),
        ],
        "pooled",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *spec.inputs[0].dims])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def stack_repository(work: Path, models: tuple[ModelEntry | str, ...]) -> Path:
    """A verified repository of these entries (a name: the built-in's), TensorRT left to the cluster: each a
    tiny graph of its built-in's interface, derived, verified and recorded as the build does."""
    artifacts = []
    for model in models:
        entry = ModelEntry(name=model) if isinstance(model, str) else model
        shape = _builtin_shape(entry)
        make = tiny_onnx if shape.inputs[0].dims == (1, 28, 28) else pooled_onnx
        onnx_path = make(work / "artifacts" / entry.name / "model.onnx", shape)
        spec = derive_spec(entry, onnx_path)
        golden = golden_for(spec, onnx_path, work / "artifacts" / entry.name / "golden.npz")
        status = TensorRTStatus("pending", reason="built by the engine-build Job in the cluster")
        artifacts.append(
            ModelArtifacts(spec, onnx_path, golden, status, weights="tiny test graph", entry=entry.record())
        )
    out = work / "repository"
    write_repository(out, artifacts, collect_tool_versions())
    return out


def config_with_build_dir(stack: str, build_dir: Path) -> dict[str, Any]:
    """The stack file's config with modelRepository.buildDir pointing at ``build_dir``."""
    config = stack_config(stack)
    config[REPOSITORY_KEY] = {**config.get(REPOSITORY_KEY, {}), "buildDir": str(build_dir)}
    return config
