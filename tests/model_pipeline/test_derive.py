"""A spec derived from the ONNX graph: tensors, the batch dimension and dynamic axes; refusals all at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_pipeline.derive import batch_axis, derive_problems, derive_spec, read_graph
from model_pipeline.entry import ModelEntry
from model_pipeline.errors import ModelValidationError, SpecError
from model_pipeline.release import TRITON_TENSORRT_VERSION
from model_pipeline.specs import DEFAULT_TOLERANCE, Bounds, DynamicBatching, TensorSpec, Tolerance
from model_pipeline.triton_config import check_config_against_onnx, parse_config, render_config, validate_config

Shape = list[int | str | None]  # a size, a dim name, or None for a dynamic dim without a name


def _interface(path: Path, inputs: list[tuple[str, int, Shape]], outputs: list[tuple[str, int, Shape]]) -> Path:
    """An ONNX file declaring these inputs and outputs and nothing else: all the derivation reads of a model."""
    graph = helper.make_graph(
        [],
        "interface",
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in inputs],
        [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in outputs],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _brought(**settings: Any) -> ModelEntry:
    return ModelEntry(**{"name": "brought", "source": "model.onnx", **settings})


@pytest.fixture
def tagger(tmp_path: Path) -> Path:
    """A token model: INT64 ids and mask [batch, seq] -> FP32 scores [batch, seq, 2]."""
    return _interface(
        tmp_path / "tagger.onnx",
        [("ids", TensorProto.INT64, ["batch", "seq"]), ("mask", TensorProto.INT64, ["batch", "seq"])],
        [("scores", TensorProto.FLOAT, ["batch", "seq", 2])],
    )


# --- what the graph tells ------------------------------------------------------------------------------


def test_names_data_types_and_dims_come_from_the_graph(tmp_path: Path) -> None:
    path = _interface(
        tmp_path / "m.onnx",
        [("pixels", TensorProto.UINT8, ["n", 3, 8, 8]), ("flag", TensorProto.BOOL, ["n", 1])],
        [("probs", TensorProto.FLOAT16, ["n", 10])],
    )
    spec = derive_spec(_brought(), path)
    assert spec.inputs == (TensorSpec("pixels", "UINT8", (3, 8, 8)), TensorSpec("flag", "BOOL", (1,)))
    assert spec.outputs == (TensorSpec("probs", "FP16", (10,)),)


def test_a_dynamic_dim_0_shared_by_every_tensor_is_the_batch(tagger: Path) -> None:
    spec = derive_spec(_brought(batch_max=32, max_queue_delay_us=250), tagger)
    assert spec.batch == Bounds(1, 4, 32)
    assert spec.max_batch_size == 32
    assert spec.dynamic_batching == DynamicBatching((4, 32), 250)


def test_a_fixed_dim_0_in_any_tensor_means_no_batch_dimension(tmp_path: Path) -> None:
    path = _interface(tmp_path / "m.onnx", [("x", TensorProto.FLOAT, ["n", 3])], [("y", TensorProto.FLOAT, [1, 3])])
    spec = derive_spec(_brought(), path)
    assert spec.batch is None
    assert (spec.max_batch_size, spec.dynamic_batching) == (0, None)
    assert spec.inputs == (TensorSpec("x", "FP32", (-1, 3), ("n", "")),)  # dim 0 is an ordinary dynamic axis
    config = parse_config(render_config(spec, "onnxruntime_onnx"))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")


def test_a_fixed_dim_0_next_to_an_unnamed_dynamic_one_is_no_batch(tmp_path: Path) -> None:
    path = _interface(tmp_path / "m.onnx", [("x", TensorProto.FLOAT, [None, 3])], [("y", TensorProto.FLOAT, [1, 3])])
    assert derive_spec(_brought(), path).batch is None


def test_dim_0_named_differently_across_tensors_is_no_batch(tmp_path: Path) -> None:
    path = _interface(tmp_path / "m.onnx", [("x", TensorProto.FLOAT, ["a", 3])], [("y", TensorProto.FLOAT, ["b", 3])])
    assert derive_spec(_brought(), path).batch is None


def test_batch_given_for_a_model_without_batch_dimension_is_refused(tmp_path: Path) -> None:
    path = _interface(tmp_path / "m.onnx", [("x", TensorProto.FLOAT, [1, 3])], [("y", TensorProto.FLOAT, [1, 3])])
    with pytest.raises(SpecError) as error:
        derive_spec(_brought(batch_max=8), path)
    assert str(error.value) == (
        "models[brought].batch is refused: the model has no batch dimension (dim 0 is not dynamic in every tensor)"
    )


def test_a_dynamic_dim_named_in_axes_is_not_taken_as_batch(tmp_path: Path) -> None:
    path = _interface(
        tmp_path / "m.onnx", [("x", TensorProto.FLOAT, ["seq", 4])], [("y", TensorProto.FLOAT, ["seq", 4])]
    )
    entry = _brought(axes=(("seq", Bounds(1, 16, 64)),))
    inputs, outputs = read_graph(path)
    assert batch_axis(entry, inputs + outputs) is None
    assert batch_axis(_brought(), inputs + outputs) == "seq"
    spec = derive_spec(entry, path)
    assert spec.batch is None
    assert spec.inputs == (TensorSpec("x", "FP32", (-1, 4), ("seq", "")),)
    assert spec.shape(spec.inputs[0], "opt") == (16, 4)


def test_dynamic_axes_are_minus_one_and_named_by_their_dim(tagger: Path) -> None:
    spec = derive_spec(_brought(), tagger)
    assert spec.inputs[0] == TensorSpec("ids", "INT64", (-1,), ("seq",))
    assert spec.outputs[0] == TensorSpec("scores", "FP32", (-1, 2), ("seq", ""))


def test_unnamed_dynamic_dims_are_known_as_tensor_index(tmp_path: Path) -> None:
    path = _interface(
        tmp_path / "m.onnx", [("x", TensorProto.FLOAT, ["batch", None, 4])], [("y", TensorProto.FLOAT, ["batch", 4])]
    )
    assert derive_spec(_brought(), path).inputs == (TensorSpec("x", "FP32", (-1, 4), ("x[1]", "")),)
    spec = derive_spec(_brought(backend="tensorrt", axes=(("x[1]", Bounds(1, 2, 3)),)), path)
    assert spec.shape(spec.inputs[0], "max") == (8, 3, 4)


def test_entry_settings_reach_the_spec(tagger: Path) -> None:
    entry = _brought(
        backend="tensorrt",
        axes=(("seq", Bounds(1, 128, 512)),),
        input_ranges=(("ids", (0.0, 30521.0)),),
        atol=0.2,
        instances=2,
    )
    spec = derive_spec(entry, tagger)
    assert (spec.backend, spec.precision, spec.instance_count) == ("tensorrt", "fp16", 2)
    assert spec.axes == (("seq", Bounds(1, 128, 512)),)
    assert spec.value_range("ids") == (0.0, 30521.0)
    assert spec.engine_tolerance == Tolerance(0.2, DEFAULT_TOLERANCE["fp16"].rtol)  # rtol: the precision's
    assert spec.tolerance is not None
    assert derive_spec(_brought(), tagger).tolerance is None


def test_a_built_in_gets_its_batch_wait_and_warmup(tmp_path: Path) -> None:
    path = _interface(
        tmp_path / "m.onnx",
        [("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [("logits", TensorProto.FLOAT, ["batch", 1000])],
    )
    spec = derive_spec(ModelEntry(name="resnet50", max_queue_delay_us=500), path)
    assert (spec.batch, spec.warmup, spec.max_queue_delay_us) == (Bounds(1, 8, 16), True, 500)
    assert not derive_spec(_brought(), path).warmup


# --- refusals ------------------------------------------------------------------------------------------


def test_an_unbounded_dynamic_axis_is_refused_on_tensorrt_and_served_by_onnxruntime(tagger: Path) -> None:
    assert derive_problems(_brought(backend="tensorrt"), tagger) == [
        "models[brought].axes needs {min, opt, max} for the dynamic axes ['seq']: TensorRT builds one "
        "optimization profile covering each"
    ]
    assert derive_problems(_brought(), tagger) == []


def test_every_refusal_is_reported_at_once_in_one_spec_error(tmp_path: Path) -> None:
    path = _interface(
        tmp_path / "m.onnx",
        [("text", TensorProto.STRING, ["batch", 1]), ("weights", TensorProto.DOUBLE, ["batch", "seq"])],
        [("scores", TensorProto.FLOAT, ["batch", 2])],
    )
    entry = _brought(backend="tensorrt", axes=(("width", Bounds(1, 2, 3)),), input_ranges=(("txt", (0.0, 1.0)),))
    with pytest.raises(SpecError) as error:
        derive_spec(entry, path)
    problems = str(error.value).split("; models[")
    assert len(problems) == 5, problems
    message = str(error.value)
    assert (
        "models[brought].backend tensorrt cannot take the STRING tensors ['text']: TensorRT has no strings; serve "
        "the model with backend onnxruntime, or put the tokenizer in front and pass token ids"
    ) in message
    assert f"models[brought].backend tensorrt {TRITON_TENSORRT_VERSION} cannot bind ['weights (FP64)']" in message
    assert "models[brought].axes.width names an axis the model does not have; its dynamic axes: seq" in message
    assert "models[brought].axes needs {min, opt, max} for the dynamic axes ['seq']" in message
    assert (
        "models[brought].inputs names ['txt'], which the model does not have; its inputs: ['text', 'weights']"
    ) in message


def test_the_same_model_is_served_by_onnxruntime(tmp_path: Path) -> None:
    path = _interface(
        tmp_path / "m.onnx",
        [("text", TensorProto.STRING, ["batch", 1]), ("weights", TensorProto.DOUBLE, ["batch", 4])],
        [("scores", TensorProto.FLOAT, ["batch", 2])],
    )
    spec = derive_spec(_brought(), path)
    assert [t.data_type for t in spec.inputs] == ["STRING", "FP64"]


def test_int64_is_bound_by_the_serving_tensorrt(tmp_path: Path) -> None:
    path = _interface(tmp_path / "m.onnx", [("ids", TensorProto.INT64, ["b", 8])], [("y", TensorProto.FLOAT, ["b", 2])])
    assert derive_problems(_brought(backend="tensorrt"), path) == []


def test_the_key_prefix_can_be_given(tagger: Path) -> None:
    problems = derive_problems(_brought(input_ranges=(("x", (0.0, 1.0)),)), tagger, key="--models[0]")
    assert problems[0].startswith("--models[0].inputs names ['x']")


def test_scalar_tensors_are_refused_without_a_batch(tmp_path: Path) -> None:
    path = _interface(tmp_path / "m.onnx", [("x", TensorProto.FLOAT, [3])], [("total", TensorProto.FLOAT, [])])
    assert derive_problems(_brought(), path) == [
        "models[brought].source has scalar tensors ['total']; Triton needs at least one dimension"
    ]


def test_a_file_that_is_not_onnx_is_a_validation_error(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07garbage-not-a-protobuf\xff\xff")
    with pytest.raises(ModelValidationError, match=r"model\.onnx is not a readable ONNX model"):
        derive_spec(_brought(), path)


def test_weights_listed_as_graph_inputs_are_not_inputs(tmp_path: Path) -> None:
    weights = numpy_helper.from_array(np.zeros((3, 2), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "old-ir",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, 2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
        initializer=[weights],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    inputs, _ = read_graph(tmp_path / "m.onnx")
    assert [t.name for t in inputs] == ["x"]


# --- a batch-only output, as scikit-learn exports its labels -------------------------------------------


def test_a_batch_only_output_renders_as_dims_1_with_a_reshape_triton_accepts(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["n"])],
    )
    path = tmp_path / "classifier" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))

    spec = derive_spec(ModelEntry(name="classifier", source="model.onnx"), path)
    assert spec.outputs == (TensorSpec("label", "INT64", ()),)
    config = parse_config(render_config(spec, "onnxruntime_onnx"))
    label = config.output[0]
    assert list(label.dims) == [1]
    assert label.HasField("reshape") and list(label.reshape.shape) == []
    validate_config(config, "classifier")
    check_config_against_onnx(config, path, profile_max=spec.max_batch_size)

    label.ClearField("reshape")  # without it Triton would expect [N, 1] from a model that gives [N]
    with pytest.raises(
        ModelValidationError, match=r"output 'label' is INT64 \[1\] but model.onnx has 'label' INT64 \[\]"
    ):
        check_config_against_onnx(config, path)
