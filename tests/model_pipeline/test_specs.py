"""ModelSpec: impossible specs fail at construction with a clear message; shapes follow the batch and axis bounds."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from model_pipeline.errors import SpecError
from model_pipeline.specs import (
    DEFAULT_TOLERANCE,
    Bounds,
    DynamicBatching,
    ModelSpec,
    TensorSpec,
    Tolerance,
)


def _spec(**changes: Any) -> ModelSpec:
    """MNIST's interface: FP32 [1,28,28] -> logits [10], batch 1/4/8, batcher at 4 and 8."""
    base = ModelSpec(
        name="mnist",
        inputs=(TensorSpec("input", "FP32", (1, 28, 28)),),
        outputs=(TensorSpec("logits", "FP32", (10,)),),
        batch=Bounds(1, 4, 8),
        dynamic_batching=DynamicBatching((4, 8), 100),
    )
    return dataclasses.replace(base, **changes)


def _sequence_spec(**changes: Any) -> ModelSpec:
    """A token model: INT64 ids [seq] -> FP32 scores [seq, 2], seq dynamic."""
    base = ModelSpec(
        name="tagger",
        inputs=(TensorSpec("ids", "INT64", (-1,), ("seq",)),),
        outputs=(TensorSpec("scores", "FP32", (-1, 2), ("seq", "")),),
        batch=Bounds(1, 2, 4),
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(("low", "opt", "high"), [(4, 2, 8), (1, 9, 8), (0, 1, 8), (2, 2, 1)])
def test_bounds_outside_min_opt_max_order_are_rejected(low: int, opt: int, high: int) -> None:
    with pytest.raises(SpecError, match=f"bounds {low}/{opt}/{high} must satisfy 1 <= min <= opt <= max"):
        Bounds(low, opt, high)


def test_bounds_give_each_point_and_their_list_form() -> None:
    bounds = Bounds(1, 8, 16)
    assert [bounds.at(point) for point in ("min", "opt", "max")] == [1, 8, 16]
    assert bounds.as_list() == [1, 8, 16]


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Bounds(2, 1, 1)


def test_preferred_batch_size_above_batch_max_names_the_sizes() -> None:
    with pytest.raises(SpecError, match=r"preferred_batch_sizes \[16\] exceed the batch max \(8\)"):
        _spec(dynamic_batching=DynamicBatching((4, 16), 100))


def test_preferred_batch_size_equal_to_batch_max_is_allowed() -> None:
    assert _spec(dynamic_batching=DynamicBatching((8,), 0)).dynamic_batching is not None


@pytest.mark.parametrize(
    ("sizes", "delay", "message"),
    [((0, 4), 0, r"must all be >= 1"), ((4, 4), 0, "must not repeat"), ((4,), -1, r"max_queue_delay_us \(-1\)")],
)
def test_impossible_batcher_is_rejected(sizes: tuple[int, ...], delay: int, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        DynamicBatching(sizes, delay)


def test_a_model_without_batch_dimension_cannot_use_the_dynamic_batcher() -> None:
    with pytest.raises(SpecError, match="model 'mnist': a model without a batch dimension cannot use dynamic batching"):
        _spec(batch=None)


def test_a_model_without_batch_dimension_has_max_batch_size_0() -> None:
    spec = _spec(batch=None, dynamic_batching=None)
    assert spec.max_batch_size == 0
    assert spec.max_queue_delay_us == 0


@pytest.mark.parametrize("dims", [(0, 28), (-2, 28), (28, 0)])
def test_tensor_dims_below_one_other_than_dynamic_are_rejected(dims: tuple[int, ...]) -> None:
    with pytest.raises(SpecError, match=r"tensor 'x': dims .* must all be integers >= 1, or -1"):
        TensorSpec("x", "FP32", dims)


def test_dynamic_and_batch_only_tensors_are_allowed() -> None:
    assert TensorSpec("ids", "INT64", (-1,), ("seq",)).axis_name(0) == "seq"
    assert TensorSpec("label", "INT64", ()).dims == ()  # [N]: only the batch dimension


def test_axes_must_name_every_dim() -> None:
    with pytest.raises(SpecError, match=r"tensor 'ids': axes \['seq'\] must name each of its 2 dims"):
        TensorSpec("ids", "INT64", (-1, 4), ("seq",))


def test_unknown_data_type_lists_allowed_types() -> None:
    with pytest.raises(SpecError, match=r"data_type 'FLOAT' is unknown; allowed: .*'FP32'"):
        TensorSpec("x", "FLOAT", (1,))


def test_tensors_without_any_dimension_are_refused_without_a_batch() -> None:
    with pytest.raises(SpecError, match=r"tensors \['label'\] have no dimension; Triton needs at least one"):
        _spec(batch=None, dynamic_batching=None, outputs=(TensorSpec("label", "INT64", ()),))
    assert _spec(outputs=(TensorSpec("label", "INT64", ()),)).outputs[0].dims == ()  # with a batch: [N]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "tflite", "backend 'tflite' is unknown"),
        ("precision", "int8", "precision 'int8' is not one backend 'onnxruntime' has"),
        ("precision", "fp16", r"precision 'fp16' is not one backend 'onnxruntime' has; allowed: \['fp32'\]"),
        ("instance_kind", "KIND_TPU", "instance_kind 'KIND_TPU' is unknown"),
        ("version", 0, r"version \(0\) must be >= 1"),
        ("instance_count", 0, r"instance_count \(0\) must be >= 1"),
        ("name", "MNIST/v1", "model name 'MNIST/v1' must be"),
    ],
)
def test_unknown_or_impossible_fields_are_rejected(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _spec(**{field: value})


def test_fp16_is_a_tensorrt_precision() -> None:
    assert _spec(backend="tensorrt", precision="fp16").engine_tolerance == DEFAULT_TOLERANCE["fp16"]


def test_tensorrt_on_cpu_instances_is_rejected() -> None:
    with pytest.raises(SpecError, match="backend 'tensorrt' cannot run on instance_kind 'KIND_CPU'"):
        _spec(backend="tensorrt", instance_kind="KIND_CPU")


def test_onnxruntime_on_cpu_instances_is_allowed() -> None:
    assert _spec(backend="onnxruntime", instance_kind="KIND_CPU").instance_kind == "KIND_CPU"


def test_duplicate_tensor_names_are_rejected() -> None:
    with pytest.raises(SpecError, match=r"tensor names \['input'\] are used more than once"):
        _spec(outputs=(TensorSpec("input", "FP32", (10,)),))


def test_models_need_an_input_and_an_output() -> None:
    with pytest.raises(SpecError, match="needs at least one input"):
        _spec(inputs=())
    with pytest.raises(SpecError, match="needs at least one output"):
        _spec(outputs=())


def test_tensorrt_needs_bounds_for_every_dynamic_input_axis() -> None:
    with pytest.raises(
        SpecError, match=r"model 'tagger': TensorRT needs min/opt/max bounds for the dynamic axes \['seq'\]"
    ):
        _sequence_spec(backend="tensorrt", precision="fp16")
    bounded = _sequence_spec(backend="tensorrt", precision="fp16", axes=(("seq", Bounds(1, 64, 128)),))
    assert bounded.input_axes(bounded.inputs[0]) == ["seq"]


def test_onnxruntime_serves_unbounded_dynamic_axes() -> None:
    assert _sequence_spec().axes == ()


def test_shape_at_each_point_puts_the_batch_first_and_sizes_each_axis() -> None:
    spec = _sequence_spec(axes=(("seq", Bounds(3, 5, 7)),))
    ids, scores = spec.inputs[0], spec.outputs[0]
    assert [spec.shape(ids, point) for point in ("min", "opt", "max")] == [(1, 3), (2, 5), (4, 7)]
    assert spec.shape(scores, "max") == (4, 7, 2)


def test_shape_of_an_unbounded_axis_needs_the_fallback_bounds() -> None:
    spec = _sequence_spec()
    with pytest.raises(SpecError, match="model 'tagger': axis 'seq' of 'ids' has no bounds"):
        spec.shape(spec.inputs[0], "min")
    assert spec.shape(spec.inputs[0], "opt", unbounded=Bounds(1, 9, 9)) == (2, 9)


def test_shape_without_a_batch_is_the_dims_alone() -> None:
    spec = _spec(batch=None, dynamic_batching=None)
    assert spec.shape(spec.inputs[0], "max") == (1, 28, 28)


def test_engine_tolerance_is_the_precisions_unless_given() -> None:
    assert _spec().engine_tolerance == DEFAULT_TOLERANCE["fp32"]
    assert _spec(tolerance=Tolerance(0.5, 0.1)).engine_tolerance == Tolerance(0.5, 0.1)


def test_value_range_by_input_name() -> None:
    spec = _sequence_spec(value_ranges=(("ids", (0.0, 30521.0)),))
    assert spec.value_range("ids") == (0.0, 30521.0)
    assert spec.value_range("other") is None


def test_to_dict_is_plain_data_for_cache_keys() -> None:
    data = json.loads(json.dumps(_sequence_spec(axes=(("seq", Bounds(1, 2, 3)),)).to_dict()))
    assert data["batch"] == {"min": 1, "opt": 2, "max": 4}
    assert data["axes"] == [["seq", {"min": 1, "opt": 2, "max": 3}]]
    assert data["inputs"][0] == {"name": "ids", "data_type": "INT64", "dims": [-1], "axes": ["seq"]}
