"""ModelSpec: the defaults match the contract, and impossible specs fail at construction with a clear message."""

from __future__ import annotations

import dataclasses

import pytest

from model_pipeline.errors import SpecError, UnknownModelError
from model_pipeline.specs import (
    DEFAULT_SPECS,
    BatchProfile,
    DynamicBatching,
    ModelSpec,
    TensorSpec,
    get_spec,
    parse_model_list,
)


def _spec(**changes: object) -> ModelSpec:
    return dataclasses.replace(DEFAULT_SPECS["mnist"], **changes)  # type: ignore[arg-type]


def test_default_mnist_spec_matches_the_contract() -> None:
    mnist = DEFAULT_SPECS["mnist"]
    assert mnist.inputs == (TensorSpec("input", "FP32", (1, 28, 28)),)
    assert mnist.outputs == (TensorSpec("logits", "FP32", (10,)),)
    assert (mnist.profile.min, mnist.profile.opt, mnist.profile.max) == (1, 4, 8)
    assert mnist.max_batch_size == 8


def test_default_resnet50_spec_matches_the_contract() -> None:
    resnet = DEFAULT_SPECS["resnet50"]
    assert resnet.inputs == (TensorSpec("input", "FP32", (3, 224, 224)),)
    assert resnet.outputs == (TensorSpec("logits", "FP32", (1000,)),)
    assert resnet.profile.as_list() == [1, 8, 16]


@pytest.mark.parametrize(("lo", "opt", "hi"), [(4, 2, 8), (1, 9, 8), (0, 1, 8), (2, 2, 1)])
def test_profile_outside_min_opt_max_order_is_rejected(lo: int, opt: int, hi: int) -> None:
    with pytest.raises(SpecError, match=f"batch profile {lo}/{opt}/{hi} must satisfy 1 <= min <= opt <= max"):
        BatchProfile(lo, opt, hi)


def test_preferred_batch_size_above_profile_max_names_the_sizes() -> None:
    with pytest.raises(SpecError, match=r"preferred_batch_sizes \[16\] exceed the batch profile max \(8\)"):
        _spec(dynamic_batching=DynamicBatching((4, 16), 100))


def test_preferred_batch_size_equal_to_profile_max_is_allowed() -> None:
    assert _spec(dynamic_batching=DynamicBatching((8,), 0)).dynamic_batching is not None


@pytest.mark.parametrize("dims", [(0, 28), (-1, 28), ()])
def test_tensor_dims_below_one_or_empty_are_rejected(dims: tuple[int, ...]) -> None:
    with pytest.raises(SpecError, match="tensor 'x'"):
        TensorSpec("x", "FP32", dims)


def test_unknown_data_type_lists_allowed_types() -> None:
    with pytest.raises(SpecError, match=r"data_type 'FLOAT' is unknown; allowed: .*'FP32'"):
        TensorSpec("x", "FLOAT", (1,))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("backend", "tflite", "backend 'tflite' is unknown"),
        ("precision", "int8", "precision 'int8' is unknown"),
        ("instance_kind", "KIND_TPU", "instance_kind 'KIND_TPU' is unknown"),
        ("architecture", "vgg", "architecture 'vgg' is unknown"),
        ("version", 0, r"version \(0\) must be >= 1"),
        ("instance_count", 0, r"instance_count \(0\) must be >= 1"),
        ("name", "MNIST/v1", "model name 'MNIST/v1' must be"),
    ],
)
def test_unknown_or_impossible_fields_are_rejected(field: str, value: object, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _spec(**{field: value})


def test_tensorrt_on_cpu_instances_is_rejected() -> None:
    with pytest.raises(SpecError, match="backend 'tensorrt' cannot run on instance_kind 'KIND_CPU'"):
        _spec(backend="tensorrt", instance_kind="KIND_CPU")


def test_onnxruntime_on_cpu_instances_is_allowed() -> None:
    assert _spec(backend="onnxruntime", instance_kind="KIND_CPU").instance_kind == "KIND_CPU"


def test_duplicate_tensor_names_are_rejected() -> None:
    with pytest.raises(SpecError, match=r"tensor names \['input'\] are used more than once"):
        _spec(outputs=(TensorSpec("input", "FP32", (10,)),))


def test_spec_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        BatchProfile(2, 1, 1)


def test_model_list_keeps_order_and_drops_repeats() -> None:
    names = [s.name for s in parse_model_list(" resnet50, mnist ,resnet50")]
    assert names == ["resnet50", "mnist"]


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'bert'; known models: mnist, resnet50"):
        get_spec("bert")
    with pytest.raises(UnknownModelError, match="no model given"):
        parse_model_list(" , ")


def test_to_dict_is_plain_data_for_cache_keys() -> None:
    data = DEFAULT_SPECS["resnet50"].to_dict()
    assert data["profile"] == {"min": 1, "opt": 8, "max": 16}
    assert data["inputs"][0]["name"] == "input"
