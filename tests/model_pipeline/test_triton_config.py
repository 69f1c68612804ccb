"""config.pbtxt: rendered through Triton's own schema, parsed back as Triton does, checked against the model."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2 as mc

from model_pipeline.derive import derive_spec
from model_pipeline.entry import read_models
from model_pipeline.errors import ModelValidationError
from model_pipeline.specs import Bounds, ModelSpec, TensorSpec
from model_pipeline.triton_config import (
    check_config_against_onnx,
    check_config_against_plan,
    parse_config,
    render_config,
    validate_config,
)
from tests._pipeline_helpers import tiny_onnx, tiny_spec

BUILTIN_INTERFACES = {"mnist": ((1, 28, 28), 10), "resnet50": ((3, 224, 224), 1000)}


@functools.cache
def _builtin(name: str) -> ModelSpec:
    """A built-in's spec as the build derives it: its stack entry, on a graph of its interface."""
    problems: list[str] = []
    (entry,) = read_models([{"name": name}], problems, Path("."))
    dims, classes = BUILTIN_INTERFACES[name]
    graph = helper.make_graph(
        [],
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *dims])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
    )
    with tempfile.TemporaryDirectory() as folder:
        onnx.save(helper.make_model(graph), str(Path(folder) / "model.onnx"))
        return derive_spec(entry, Path(folder) / "model.onnx")


def _parsed(name: str = "resnet50", platform: str = "onnxruntime_onnx") -> mc.ModelConfig:
    return parse_config(render_config(_builtin(name), platform))


def test_rendered_resnet_config_has_profile_max_and_io_without_batch_dim() -> None:
    config = _parsed("resnet50", "tensorrt_plan")
    assert config.name == "resnet50"
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 16
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input", mc.TYPE_FP32, [3, 224, 224])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [1000])]


def test_dynamic_batching_and_instance_group_come_from_the_spec() -> None:
    config = _parsed("mnist")
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, mc.ModelInstanceGroup.KIND_AUTO)]


def test_warmup_feeds_zero_data_to_every_input_at_min_and_max_batch() -> None:
    config = _parsed("resnet50")
    assert [(w.batch_size, w.count) for w in config.model_warmup] == [(1, 1), (16, 1)]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {"input"}
        assert warmup.inputs["input"].zero_data
        assert list(warmup.inputs["input"].dims) == [3, 224, 224]


def test_no_warmup_when_spec_disables_it() -> None:
    assert len(_parsed("mnist").model_warmup) == 0


def test_resnet50_batcher_waits_longer() -> None:
    config = _parsed("resnet50")
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500


def _tagger(**changes: Any) -> ModelSpec:
    """INT64 ids [seq] -> FP32 scores [seq, 2], batch 1/2/4, seq 8/64/128."""
    spec = ModelSpec(
        "tagger",
        (TensorSpec("ids", "INT64", (-1,), ("seq",)),),
        (TensorSpec("scores", "FP32", (-1, 2), ("seq", "")),),
        Bounds(1, 2, 4),
        axes=(("seq", Bounds(8, 64, 128)),),
        warmup=True,
    )
    return dataclasses.replace(spec, **changes)


def test_dynamic_axes_render_as_minus_one() -> None:
    config = parse_config(render_config(_tagger(), "onnxruntime_onnx"))
    assert [(t.name, list(t.dims)) for t in (*config.input, *config.output)] == [("ids", [-1]), ("scores", [-1, 2])]
    validate_config(config, "tagger")


def test_warmup_sizes_dynamic_axes_at_their_min_and_max() -> None:
    config = parse_config(render_config(_tagger(), "onnxruntime_onnx"))
    assert [(w.batch_size, list(w.inputs["ids"].dims)) for w in config.model_warmup] == [(1, [8]), (4, [128])]
    assert all(w.inputs["ids"].data_type == mc.TYPE_INT64 for w in config.model_warmup)


def test_a_model_without_batch_dimension_has_max_batch_size_0_and_no_batcher() -> None:
    spec = _tagger(batch=None, inputs=(TensorSpec("ids", "INT64", (1, -1), ("", "seq")),))
    config = parse_config(render_config(spec, "onnxruntime_onnx"))
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [list(t.dims) for t in config.input] == [[1, -1]]
    assert [(w.batch_size, list(w.inputs["ids"].dims)) for w in config.model_warmup] == [(1, [1, 8]), (1, [1, 128])]
    validate_config(config, "tagger")


def test_a_dynamic_dim_matches_the_named_dim_of_the_onnx_graph(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [],
        "tagger",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", "seq", 2])],
    )
    onnx.save(helper.make_model(graph), str(tmp_path / "model.onnx"))
    config = parse_config(render_config(_tagger(), "onnxruntime_onnx"))
    check_config_against_onnx(config, tmp_path / "model.onnx", profile_max=4)
    config.output[0].dims[1] = 3
    with pytest.raises(
        ModelValidationError, match=r"output 'scores' is FP32 \[-1,3\] but model.onnx has 'scores' FP32 \[-1,2\]"
    ):
        check_config_against_onnx(config, tmp_path / "model.onnx")


def test_rendering_is_byte_identical_for_equal_specs() -> None:
    spec = _builtin("resnet50")
    assert render_config(spec, "onnxruntime_onnx") == render_config(dataclasses.replace(spec), "onnxruntime_onnx")


def test_unknown_platform_is_rejected() -> None:
    with pytest.raises(ModelValidationError, match="platform 'pytorch_libtorch' is unknown"):
        render_config(_builtin("mnist"), "pytorch_libtorch")


def test_misspelt_field_fails_to_parse_like_triton() -> None:
    text = render_config(_builtin("mnist"), "onnxruntime_onnx").replace("max_batch_size", "max_batch_sz")
    with pytest.raises(ModelValidationError, match='has no field named "max_batch_sz"'):
        parse_config(text)


def test_config_name_must_equal_directory() -> None:
    with pytest.raises(ModelValidationError, match="name 'mnist' must equal its directory name 'digits'"):
        validate_config(_parsed("mnist"), "digits")


def test_preferred_batch_size_above_max_batch_size_is_rejected_on_parse() -> None:
    config = _parsed("mnist")
    config.max_batch_size = 4
    with pytest.raises(ModelValidationError, match=r"preferred_batch_size 8 must be in \(0, max_batch_size=4\]"):
        validate_config(config, "mnist")


def test_tensorrt_plan_with_cpu_instances_is_rejected() -> None:
    config = _parsed("mnist", "tensorrt_plan")
    config.instance_group[0].kind = mc.ModelInstanceGroup.KIND_CPU
    with pytest.raises(ModelValidationError, match="tensorrt_plan supports only GPU instances"):
        validate_config(config, "mnist")


# --- config vs ONNX -------------------------------------------------------------------------------------


def _tiny_config() -> mc.ModelConfig:
    return parse_config(render_config(tiny_spec(), "onnxruntime_onnx"))


def test_matching_onnx_passes(tmp_path: Path) -> None:
    check_config_against_onnx(_tiny_config(), tiny_onnx(tmp_path / "m.onnx", tiny_spec()), profile_max=4)


def test_renamed_and_reshaped_input_is_reported_with_both_sides(tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "model.onnx", tiny_spec(), input_name="x", input_dims=(16,))
    with pytest.raises(ModelValidationError) as error:
        check_config_against_onnx(_tiny_config(), onnx_path)
    assert str(error.value) == "tiny: config.pbtxt input 'input' is FP32 [1,4,4] but model.onnx has 'x' FP32 [16]"


def test_dtype_mismatch_is_reported(tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "model.onnx", tiny_spec(), input_type="FP16")
    with pytest.raises(ModelValidationError, match=r"'input' is FP32 \[1,4,4\] but model.onnx has 'input' FP16"):
        check_config_against_onnx(_tiny_config(), onnx_path)


def test_shape_mismatch_with_same_name_is_reported(tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "model.onnx", tiny_spec(), input_dims=(1, 4, 5))
    with pytest.raises(ModelValidationError, match=r"but model.onnx has 'input' FP32 \[1,4,5\]"):
        check_config_against_onnx(_tiny_config(), onnx_path)


def test_fixed_batch_axis_is_rejected_when_batching(tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "model.onnx", tiny_spec(), batch_dim=1)
    with pytest.raises(ModelValidationError, match=r"has a fixed first dimension 1; .* needs a dynamic batch axis 0"):
        check_config_against_onnx(_tiny_config(), onnx_path)


def test_max_batch_size_above_profile_max_is_rejected(tmp_path: Path) -> None:
    onnx_path = tiny_onnx(tmp_path / "model.onnx", tiny_spec())
    with pytest.raises(ModelValidationError, match="max_batch_size 4 is above the batch profile max 2"):
        check_config_against_onnx(_tiny_config(), onnx_path, profile_max=2)


def test_missing_output_is_reported(tmp_path: Path) -> None:
    config = _tiny_config()
    config.output[0].name = "probabilities"
    onnx_path = tiny_onnx(tmp_path / "model.onnx", tiny_spec())
    expected = r"output 'probabilities' is FP32 \[3\] but model.onnx has 'logits'"
    with pytest.raises(ModelValidationError, match=expected):
        check_config_against_onnx(config, onnx_path)


def test_corrupt_onnx_is_a_validation_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x08\x07garbage-not-a-protobuf\xff\xff")
    with pytest.raises(ModelValidationError, match="not a readable ONNX model"):
        check_config_against_onnx(_tiny_config(), broken)


def test_missing_onnx_is_a_validation_error(tmp_path: Path) -> None:
    with pytest.raises(ModelValidationError, match="model file is missing"):
        check_config_against_onnx(_tiny_config(), tmp_path / "absent.onnx")


# --- config vs plan metadata ----------------------------------------------------------------------------


def _plan_entry(status: str = "built", version: str | None = "11.1.0.106", profile: list[int] | None = None) -> dict:
    return {"profile": profile or [1, 4, 8], "tensorrt": {"status": status, "version": version}}


def test_plan_built_by_the_serving_tensorrt_passes() -> None:
    check_config_against_plan(_parsed("mnist", "tensorrt_plan"), _plan_entry(), "11.1.0")


def test_plan_from_another_tensorrt_release_is_refused() -> None:
    expected = r"built by TensorRT 10\.14\.1 but the Triton image runs TensorRT 11\.1\.0"
    with pytest.raises(ModelValidationError, match=expected):
        check_config_against_plan(_parsed("mnist", "tensorrt_plan"), _plan_entry(version="10.14.1"), "11.1.0")


def test_plan_config_without_a_built_engine_is_refused() -> None:
    with pytest.raises(ModelValidationError, match="the manifest says the engine is 'skipped'"):
        check_config_against_plan(_parsed("mnist", "tensorrt_plan"), _plan_entry(status="skipped"), "11.1.0")


def test_plan_with_smaller_profile_than_max_batch_size_is_refused() -> None:
    expected = "max_batch_size 8 but the TensorRT engine only supports max-batch 4"
    with pytest.raises(ModelValidationError, match=expected):
        check_config_against_plan(_parsed("mnist", "tensorrt_plan"), _plan_entry(profile=[1, 2, 4]), "11.1.0")
