"""TensorRT engine build: FP16 ONNX conversion and version checks for real, builder logic against a test double.

Tests marked ``tensorrt_double`` run model_pipeline.tensorrt_build against tests/fake_tensorrt.py, which is NOT
TensorRT: they prove what the code hands the builder and how it reacts, not that TensorRT accepts it. The one real
build at the end runs only where ``tensorrt`` imports and a CUDA GPU exists.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from model_pipeline import tensorrt_build, verification
from model_pipeline.errors import EngineBuildError, EngineCompatibilityError, ModelValidationError
from model_pipeline.specs import Bounds, ModelSpec, TensorSpec, Tolerance
from model_pipeline.tensorrt_build import (
    EngineBuildOptions,
    EngineBuildResult,
    GpuInfo,
    build_tensorrt_engine,
    check_plan_compatible,
    convert_to_fp16,
    tensorrt_unavailable_reason,
    verify_engine,
    write_fp16_onnx,
)
from tests._engine_models import fixed_onnx, mlp_onnx, tensorrt_spec, token_onnx, token_spec
from tests._pipeline_helpers import golden_for
from tests.fake_tensorrt import make_fake_tensorrt
from tests.paths import ROOT

H100 = GpuInfo(name="NVIDIA H100 80GB HBM3", compute_capability="9.0")


class Model(NamedTuple):
    spec: ModelSpec
    onnx: Path
    golden: Path


@pytest.fixture
def mlp(tmp_path: Path) -> Model:
    onnx_path = mlp_onnx(tmp_path / "model.onnx")
    spec = tensorrt_spec(onnx_path, "mnist")
    return Model(spec, onnx_path, golden_for(spec, onnx_path, tmp_path / "golden.npz"))


@pytest.fixture
def tokens(tmp_path: Path) -> Model:
    onnx_path = token_onnx(tmp_path / "tokens" / "model.onnx")
    spec = token_spec(onnx_path)
    return Model(spec, onnx_path, golden_for(spec, onnx_path, tmp_path / "tokens" / "golden.npz"))


def _install(monkeypatch: pytest.MonkeyPatch, version: str) -> Any:
    fake = make_fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(tensorrt_build, "detect_gpu", lambda: H100)
    return fake


def _options(tmp_path: Path, **overrides: Any) -> EngineBuildOptions:
    settings: dict[str, Any] = {"timing_cache_dir": tmp_path / "cache", "required_tensorrt_version": None}
    settings.update(overrides)
    return EngineBuildOptions(**settings)


def _build(fake: Any, tmp_path: Path, model: Model, spec: ModelSpec | None = None, **options: Any) -> EngineBuildResult:
    plan = tmp_path / "repo" / "1" / "model.plan"
    return build_tensorrt_engine(
        model.onnx, spec or model.spec, plan, model.golden, _options(tmp_path, **options), device=fake.memory
    )


# --- without TensorRT ------------------------------------------------------------------------------------------


def test_importing_the_module_does_not_import_tensorrt(tmp_path: Path) -> None:
    poison = tmp_path / "tensorrt.py"
    poison.write_text("raise RuntimeError('tensorrt was imported at module import time')\n")
    code = "import sys, model_pipeline.tensorrt_build; assert 'tensorrt' not in sys.modules"
    env_path = f"{tmp_path}:{ROOT}"
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": env_path},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_unavailable_reason_says_tensorrt_is_not_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` raise ImportError
    reason = tensorrt_unavailable_reason()
    assert reason is not None and reason.startswith("tensorrt not importable: ")


def test_unavailable_reason_says_there_is_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt())

    def no_driver(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(tensorrt_build.ctypes, "CDLL", no_driver)
    reason = tensorrt_unavailable_reason()
    assert reason is not None and reason.startswith("no CUDA GPU: ") and "libcuda.so.1" in reason


def test_build_without_tensorrt_raises_instead_of_writing_a_plan(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, mlp: Model
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineBuildError, match="tensorrt not importable"):
        build_tensorrt_engine(mlp.onnx, mlp.spec, tmp_path / "model.plan", mlp.golden, _options(tmp_path))
    assert not (tmp_path / "model.plan").exists()


@pytest.mark.parametrize("built", ["11.1.0", "11.1.0.106"])
def test_plan_from_the_triton_tensorrt_release_is_compatible(built: str) -> None:
    check_plan_compatible(built, "11.1.0")


@pytest.mark.parametrize("built", ["11.1.1", "11.0.0.1", "10.14.1.48", "11"])
def test_plan_from_another_tensorrt_release_is_refused(built: str) -> None:
    with pytest.raises(EngineCompatibilityError, match=rf"built with TensorRT {built}, .* ships TensorRT 11\.1\.0"):
        check_plan_compatible(built, "11.1.0")


def test_default_required_version_is_the_triton_images() -> None:
    from model_pipeline.release import TRITON_TENSORRT_VERSION

    check_plan_compatible(TRITON_TENSORRT_VERSION + ".7")
    with pytest.raises(EngineCompatibilityError):
        check_plan_compatible("10.14.1.48")


def test_garbled_version_is_refused() -> None:
    with pytest.raises(EngineCompatibilityError, match="not dotted numbers"):
        check_plan_compatible("11.1.0-rc", "11.1.0")


def test_profile_shapes_cover_the_batch_and_every_axis_of_every_input(tokens: Model, tmp_path: Path) -> None:
    assert tensorrt_build.profile_shapes(tokens.spec) == {
        "input_ids": ((1, 2), (2, 8), (4, 16)),
        "attention_mask": ((1, 2), (2, 8), (4, 16)),
    }
    fixed = tensorrt_spec(fixed_onnx(tmp_path / "fixed.onnx"), "fixed")
    assert fixed.batch is None
    assert tensorrt_build.profile_shapes(fixed) == {"image": ((3, 8), (3, 8), (3, 8))}


# --- FP16 ONNX (real ONNX and ONNX Runtime) -----------------------------------------------------------------


def test_fp16_copy_keeps_fp32_io_and_stores_fp16_weights(tmp_path: Path) -> None:
    source = onnx.load(str(mlp_onnx(tmp_path / "m.onnx")))
    converted = convert_to_fp16(source)
    io_types = [v.type.tensor_type.elem_type for v in (*converted.graph.input, *converted.graph.output)]
    assert io_types == [TensorProto.FLOAT, TensorProto.FLOAT]
    assert {t.data_type for t in converted.graph.initializer} == {TensorProto.FLOAT16}
    constant = next(n for n in converted.graph.node if n.op_type == "Constant")
    assert constant.attribute[0].t.data_type == TensorProto.FLOAT16
    onnx.checker.check_model(converted, full_check=True)
    # The inserted casts are what make FP32 I/O legal around an FP16 graph.
    assert converted.graph.node[0].op_type == "Cast" and converted.graph.node[-1].op_type == "Cast"


@pytest.mark.parametrize("mask_type", [TensorProto.INT64, TensorProto.BOOL])
def test_fp16_copy_leaves_token_ids_and_masks_untouched(tmp_path: Path, mask_type: int) -> None:
    converted = convert_to_fp16(onnx.load(str(token_onnx(tmp_path / "t.onnx", mask_type))))
    inputs = {v.name: v.type.tensor_type.elem_type for v in converted.graph.input}
    outputs = {v.name: v.type.tensor_type.elem_type for v in converted.graph.output}
    assert inputs == {"input_ids": TensorProto.INT64, "attention_mask": mask_type}
    assert outputs == {"pooled": TensorProto.FLOAT, "scores": TensorProto.FLOAT}
    casts = sorted(n.name for n in converted.graph.node if n.name.endswith(("__to_fp16", "__to_fp32")))
    assert casts == ["pooled__to_fp32", "scores__to_fp32"]  # only FLOAT graph I/O gets a cast
    gather = next(n for n in converted.graph.node if n.op_type == "Gather")
    assert list(gather.input) == ["embedding", "input_ids"]
    axes = next(t for t in converted.graph.initializer if t.name == "last_axis")
    assert axes.data_type == TensorProto.INT64


def test_fp16_copy_of_a_token_model_runs_close_to_fp32(tokens: Model, tmp_path: Path) -> None:
    diffs = write_fp16_onnx(tokens.onnx, tmp_path / "t16.onnx", tokens.golden, tokens.spec.engine_tolerance, "encoder")
    assert set(diffs) == {"pooled", "scores"}
    assert all(0 < d.max_abs < 5e-2 for d in diffs.values())


def test_fp16_copy_runs_in_onnx_runtime_close_to_fp32(tmp_path: Path, mlp: Model) -> None:
    diffs = write_fp16_onnx(mlp.onnx, tmp_path / "m16.onnx", mlp.golden, Tolerance(atol=1e-2, rtol=1e-2), "mnist")
    assert set(diffs) == {"logits"}
    assert 0 < diffs["logits"].max_abs < 1e-2  # FP16 rounding is visible but small
    case = verification.read_golden(mlp.golden)[0]
    out = verification.run_onnx(verification.onnx_session(tmp_path / "m16.onnx"), case.inputs)
    assert out["logits"].dtype == np.float32


def test_fp16_copy_out_of_tolerance_is_rejected(tmp_path: Path, mlp: Model) -> None:
    with pytest.raises(
        ModelValidationError,
        match=r"model 'mnist': the FP16 copy of model\.onnx differs .* at the min shapes \(input \[1, 1, 28, 28\]\)",
    ):
        write_fp16_onnx(mlp.onnx, tmp_path / "m16.onnx", mlp.golden, Tolerance(atol=1e-9, rtol=0.0), "mnist")


def test_fp16_conversion_saturates_weights_beyond_the_fp16_range(tmp_path: Path) -> None:
    model = onnx.load(str(mlp_onnx(tmp_path / "m.onnx")))
    big = numpy_helper.to_array(model.graph.initializer[1]).copy()
    big[0] = 1e6
    model.graph.initializer[1].CopyFrom(numpy_helper.from_array(big, "b1"))
    values = numpy_helper.to_array(next(t for t in convert_to_fp16(model).graph.initializer if t.name == "b1"))
    assert np.isfinite(values).all() and values[0] == np.float16(65504)


def test_fp16_conversion_refuses_subgraphs_it_cannot_convert(tmp_path: Path) -> None:
    model = onnx.load(str(mlp_onnx(tmp_path / "m.onnx")))
    branch = helper.make_graph([], "branch", [], [helper.make_tensor_value_info("scale", TensorProto.FLOAT, [])])
    model.graph.node.append(helper.make_node("If", ["cond"], ["x"], name="/if", then_branch=branch, else_branch=branch))
    with pytest.raises(EngineBuildError, match=r"node '/if' \(If\)"):
        convert_to_fp16(model)


# --- builder logic against the test double ----------------------------------------------------------------


@pytest.mark.tensorrt_double
def test_profile_covers_the_specs_min_opt_max_batch(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    result = _build(fake, tmp_path, mlp)
    expected = {"input": ((1, 1, 28, 28), (4, 1, 28, 28), (8, 1, 28, 28))}
    assert fake.state.profile_shapes() == expected
    assert result.profile_shapes == expected


@pytest.mark.tensorrt_double
@pytest.mark.parametrize("version", ["10.14.1.48", "11.1.0.106"])
def test_token_model_profile_covers_batch_and_sequence_of_every_input(monkeypatch, tmp_path, tokens, version) -> None:
    fake = _install(monkeypatch, version)
    result = _build(fake, tmp_path, tokens)
    assert fake.state.profile_shapes() == {
        "input_ids": ((1, 2), (2, 8), (4, 16)),
        "attention_mask": ((1, 2), (2, 8), (4, 16)),
    }
    assert fake.state.executions == [
        {"input_ids": (1, 2), "attention_mask": (1, 2)},
        {"input_ids": (2, 8), "attention_mask": (2, 8)},
        {"input_ids": (4, 16), "attention_mask": (4, 16)},
    ]
    assert set(result.differences) == {"pooled", "scores"}
    assert all(d.max_abs < tokens.spec.engine_tolerance.atol for d in result.differences.values())


@pytest.mark.tensorrt_double
@pytest.mark.parametrize("mask_type", [TensorProto.INT32, TensorProto.BOOL])
def test_engine_runs_integer_and_boolean_inputs(monkeypatch, tmp_path, mask_type) -> None:
    onnx_path = token_onnx(tmp_path / "t.onnx", mask_type)
    spec = token_spec(onnx_path, precision="fp32")
    model = Model(spec, onnx_path, golden_for(spec, onnx_path, tmp_path / "golden.npz"))
    fake = _install(monkeypatch, "11.1.0.106")
    result = _build(fake, tmp_path, model)
    assert all(d.max_abs < 1e-6 for d in result.differences.values())
    assert len(fake.state.executions) == 3


@pytest.mark.tensorrt_double
def test_model_without_batch_dim_gets_a_profile_without_batch(monkeypatch, tmp_path) -> None:
    onnx_path = fixed_onnx(tmp_path / "fixed.onnx")
    spec = tensorrt_spec(onnx_path, "fixed")
    model = Model(spec, onnx_path, golden_for(spec, onnx_path, tmp_path / "golden.npz"))
    fake = _install(monkeypatch, "11.1.0.106")
    result = _build(fake, tmp_path, model)
    assert fake.state.profile_shapes() == {"image": ((3, 8), (3, 8), (3, 8))}
    assert fake.state.executions == [{"image": (3, 8)}]  # min, opt and max are one shape: one case
    assert set(result.differences) == {"out"}


@pytest.mark.tensorrt_double
def test_golden_shapes_outside_the_profile_are_refused(monkeypatch, tmp_path, tokens) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    narrower = dataclasses.replace(tokens.spec, axes=(("sequence", Bounds(2, 8, 8)),))
    with pytest.raises(ModelValidationError, match=r"refused input '\w+' of shape \[4, 16\]: outside its optimization"):
        _build(fake, tmp_path, tokens, spec=narrower)
    assert not (tmp_path / "repo" / "1" / "model.plan").exists()


@pytest.mark.tensorrt_double
def test_tensorrt_10_uses_the_fp16_builder_flag_on_the_original_onnx(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "10.14.1.48")
    result = _build(fake, tmp_path, mlp)
    (config,) = fake.state.configs
    assert fake.BuilderFlag.FP16 in config.flags
    assert fake.state.parsed_files == [str(mlp.onnx)]
    assert result.fp16_mode == "builder_flag"


@pytest.mark.tensorrt_double
def test_tensorrt_11_builds_from_an_fp16_onnx_with_fp32_io(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    result = _build(fake, tmp_path, mlp)
    assert not hasattr(fake.BuilderFlag, "FP16")  # removed in TensorRT 11: using it would raise
    assert fake.state.parsed_files != [str(mlp.onnx)]
    assert fake.state.parsed_io_types == [{"input": TensorProto.FLOAT, "logits": TensorProto.FLOAT}]
    assert fake.state.parsed_initializer_types == [{TensorProto.FLOAT16}]
    assert fake.state.configs[0].flags == set()
    assert result.fp16_mode == "fp16_onnx" and result.precision == "fp16"


@pytest.mark.tensorrt_double
def test_tensorrt_11_fp16_onnx_keeps_the_int64_token_ids(monkeypatch, tmp_path, tokens) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    _build(fake, tmp_path, tokens)
    assert fake.state.parsed_io_types == [
        {
            "input_ids": TensorProto.INT64,
            "attention_mask": TensorProto.INT64,
            "pooled": TensorProto.FLOAT,
            "scores": TensorProto.FLOAT,
        }
    ]
    assert fake.state.parsed_initializer_types == [{TensorProto.FLOAT16, TensorProto.INT64}]


@pytest.mark.tensorrt_double
def test_fp32_spec_sets_no_fp16_flag_and_parses_the_original(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "10.14.1.48")
    result = _build(fake, tmp_path, mlp, spec=dataclasses.replace(mlp.spec, precision="fp32"))
    assert fake.state.configs[0].flags == set()
    assert fake.state.parsed_files == [str(mlp.onnx)]
    assert result.fp16_mode == "none"


@pytest.mark.tensorrt_double
def test_workspace_limit_and_explicit_batch_network(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    _build(fake, tmp_path, mlp, workspace_bytes=123 << 20, builder_optimization_level=5)
    (config,) = fake.state.configs
    assert config.memory_pool_limits == {fake.MemoryPoolType.WORKSPACE: 123 << 20}
    assert config.builder_optimization_level == 5
    assert fake.state.network_flags == [0]


@pytest.mark.tensorrt_double
def test_timing_cache_is_keyed_by_version_and_gpu_and_reused(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    first = _build(fake, tmp_path, mlp)
    assert first.timing_cache_path.name == "trt-11.1.0.106_sm90_nvidia-h100-80gb-hbm3.cache"
    assert not first.timing_cache_reused and fake.state.configs[0].timing_cache_loaded_from == b""
    written = first.timing_cache_path.read_bytes()
    assert written == b"<timings build 1>"
    second = _build(fake, tmp_path, mlp)
    assert second.timing_cache_reused
    assert fake.state.configs[1].timing_cache_loaded_from == written
    assert fake.state.configs[1].ignore_mismatch is False
    assert second.timing_cache_path.read_bytes() == written + b"<timings build 2>"


@pytest.mark.tensorrt_double
def test_unreadable_timing_cache_is_replaced_not_fatal(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    cache = tensorrt_build.timing_cache_path(tmp_path / "cache", "11.1.0.106", H100)
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"corrupt bytes")
    result = _build(fake, tmp_path, mlp)
    assert not result.timing_cache_reused and result.plan_path.is_file()
    assert cache.read_bytes() == b"<timings build 1>"


@pytest.mark.tensorrt_double
def test_parser_errors_are_reported_with_node_names(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    fake.state.parser_errors = [("/fc1/MatMul", "MatMul", "unsupported datatype"), ("/relu", "Relu", "bad input")]
    with pytest.raises(EngineBuildError) as error:
        _build(fake, tmp_path, mlp)
    message = str(error.value)
    assert "node '/fc1/MatMul' (MatMul): unsupported datatype" in message
    assert "node '/relu' (Relu): bad input" in message
    assert fake.state.build_calls == 0
    assert not (tmp_path / "repo" / "1" / "model.plan").exists()


@pytest.mark.tensorrt_double
def test_failed_build_raises_with_tensorrts_message_and_writes_nothing(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    fake.state.build_fails = True
    with pytest.raises(EngineBuildError, match=r"model 'mnist': TensorRT failed .*could not find any implementation"):
        _build(fake, tmp_path, mlp)
    assert not (tmp_path / "repo" / "1" / "model.plan").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.tensorrt_double
def test_network_io_must_match_the_spec(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    renamed = dataclasses.replace(mlp.spec, outputs=(TensorSpec("probabilities", "FP32", (10,)),))
    with pytest.raises(EngineBuildError, match=r"outputs \['logits'\].*expects .*outputs \['probabilities'\]"):
        _build(fake, tmp_path, mlp, spec=renamed)
    assert fake.state.build_calls == 0


@pytest.mark.tensorrt_double
def test_accepted_plan_reproduced_every_golden_case(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "10.14.1.48")
    result = _build(fake, tmp_path, mlp)
    assert result.plan_path == tmp_path / "repo" / "1" / "model.plan" and result.plan_path.is_file()
    assert set(result.differences) == {"logits"} and result.differences["logits"].max_abs < 1e-6
    assert fake.state.executions == [{"input": (1, 1, 28, 28)}, {"input": (4, 1, 28, 28)}, {"input": (8, 1, 28, 28)}]
    assert fake.memory.buffers == {} and fake.memory.streams_open == 0  # every buffer and stream released
    assert (result.tensorrt_version, result.compute_capability) == ("10.14.1.48", "9.0")


@pytest.mark.tensorrt_double
def test_plan_that_misses_the_golden_outputs_is_not_accepted(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "11.1.0.106")
    fake.state.output_offset = 0.5
    with pytest.raises(
        ModelValidationError,
        match=r"model 'mnist': the TensorRT engine differs from ONNX Runtime at the min shapes .* max abs diff 0\.5",
    ):
        _build(fake, tmp_path, mlp)
    assert not (tmp_path / "repo" / "1" / "model.plan").exists()


@pytest.mark.tensorrt_double
def test_engine_tolerance_is_the_specs(monkeypatch, tmp_path, tokens) -> None:
    fake = _install(monkeypatch, "10.14.1.48")
    fake.state.output_offset = 0.01  # within the fp16 default (0.05), outside the entry's own tolerance
    assert _build(fake, tmp_path, tokens).differences["scores"].max_abs == pytest.approx(0.01, abs=1e-6)
    strict = dataclasses.replace(tokens.spec, tolerance=Tolerance(atol=1e-3, rtol=0.0))
    with pytest.raises(ModelValidationError, match=r"output '\w+' max abs diff 0\.01 exceeds atol 0\.001 \+ rtol 0"):
        _build(fake, tmp_path, tokens, spec=strict)


@pytest.mark.tensorrt_double
def test_build_refuses_a_tensorrt_other_than_the_triton_images(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "10.14.1.48")
    with pytest.raises(EngineCompatibilityError, match=r"ships TensorRT 11\.1\.0"):
        _build(fake, tmp_path, mlp, required_tensorrt_version="11.1.0")
    assert fake.state.build_calls == 0


@pytest.mark.tensorrt_double
def test_verify_refuses_a_plan_from_another_tensorrt(monkeypatch, tmp_path, mlp) -> None:
    fake = _install(monkeypatch, "10.14.1.48")
    plan = _build(fake, tmp_path, mlp).plan_path
    tolerance = Tolerance(1e-3, 1e-3)
    other = _install(monkeypatch, "10.15.1.29")
    with pytest.raises(EngineCompatibilityError, match=r"cannot be deserialized by TensorRT 10\.15\.1\.29"):
        verify_engine(plan, mlp.golden, tolerance, "mnist", device=other.memory)
    same = _install(monkeypatch, "10.14.1.48")
    assert set(verify_engine(plan, mlp.golden, tolerance, "mnist", device=same.memory)) == {"logits"}


# --- real TensorRT ----------------------------------------------------------------------------------------


def test_real_tensorrt_build_of_mnist(tmp_path: Path, mlp: Model) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(f"real TensorRT build not possible here: {reason}")
    options = EngineBuildOptions(timing_cache_dir=tmp_path / "cache", required_tensorrt_version=None)
    result = build_tensorrt_engine(mlp.onnx, mlp.spec, tmp_path / "model.plan", mlp.golden, options)
    assert result.plan_path.stat().st_size > 0
    assert result.differences["logits"].max_abs < mlp.spec.engine_tolerance.atol
    assert result.timing_cache_path.is_file()


def test_real_tensorrt_build_of_a_token_model(tmp_path: Path, tokens: Model) -> None:
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        pytest.skip(f"real TensorRT build not possible here: {reason}")
    options = EngineBuildOptions(timing_cache_dir=tmp_path / "cache", required_tensorrt_version=None)
    result = build_tensorrt_engine(tokens.onnx, tokens.spec, tmp_path / "model.plan", tokens.golden, options)
    assert set(result.differences) == {"pooled", "scores"}
