"""ONNX export: spec names, dynamic "batch" axis, weights inside the file, ORT == PyTorch, golden outputs.

Each model is exported once per module (ResNet-50 takes ~15 s with its checks on 2 CPUs).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from model_pipeline.errors import ModelValidationError
from model_pipeline.models import MnistMLP, ResNet50
from model_pipeline.onnx_export import (
    ExportResult,
    Tolerance,
    export_onnx,
    onnx_session,
    read_golden,
    run_onnx,
    verify_against_torch,
)
from model_pipeline.specs import DEFAULT_SPECS, ModelSpec, TensorSpec
from model_pipeline.tensorrt_build import FP16_TOLERANCE, write_fp16_onnx

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mnist_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[MnistMLP, ExportResult]:
    torch.manual_seed(0)
    model = MnistMLP()
    out = tmp_path_factory.mktemp("mnist")
    samples = {"input": np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)}
    return model, export_onnx(
        model, DEFAULT_SPECS["mnist"], out / "1" / "model.onnx", out / "golden.npz", samples=samples
    )


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[ResNet50, ExportResult]:
    torch.manual_seed(0)
    model = ResNet50().train()  # left in training mode on purpose: export must switch to eval
    out = tmp_path_factory.mktemp("resnet50")
    return model, export_onnx(model, DEFAULT_SPECS["resnet50"], out / "1" / "model.onnx", out / "golden.npz")


def _io(path: Path) -> list[tuple[str, list[str | int]]]:
    graph = onnx.load(str(path), load_external_data=False).graph
    return [
        (v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in (*graph.input, *graph.output)
    ]


def test_graph_io_uses_spec_names_and_a_dynamic_batch_axis(mnist_export, resnet_export) -> None:
    assert _io(mnist_export[1].onnx_path) == [("input", ["batch", 1, 28, 28]), ("logits", ["batch", 10])]
    assert _io(resnet_export[1].onnx_path) == [("input", ["batch", 3, 224, 224]), ("logits", ["batch", 1000])]


def test_weights_are_inside_the_single_onnx_file(resnet_export) -> None:
    path = resnet_export[1].onnx_path
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .data, no .partial
    model = onnx.load(str(path), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert path.stat().st_size > 4 * 25_000_000  # 25.5 M FP32 parameters


def test_exported_models_pass_the_full_onnx_checker(mnist_export, resnet_export) -> None:
    for _, result in (mnist_export, resnet_export):
        onnx.checker.check_model(onnx.load(str(result.onnx_path)), full_check=True)
        assert result.opset >= 17


def test_onnx_runtime_matched_pytorch_at_batch_1_opt_and_max(mnist_export, resnet_export) -> None:
    assert set(mnist_export[1].max_abs_diff) == {1, 4, 8}
    assert set(resnet_export[1].max_abs_diff) == {1, 8, 16}
    assert max(resnet_export[1].max_abs_diff.values()) < 1e-3
    assert not resnet_export[0].training


def test_onnx_runs_at_a_batch_it_was_not_exported_with(mnist_export) -> None:
    model, result = mnist_export
    x = np.random.default_rng(5).standard_normal((7, 1, 28, 28)).astype(np.float32)
    got = run_onnx(onnx_session(result.onnx_path), {"input": x})["logits"]
    with torch.inference_mode():
        np.testing.assert_allclose(got, model(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_golden_file_holds_profile_min_and_max_with_onnx_runtime_outputs(mnist_export) -> None:
    _, result = mnist_export
    cases = read_golden(result.golden_path)
    assert [c.batch for c in cases] == [1, 8]
    session = onnx_session(result.onnx_path)
    for case in cases:
        assert case.inputs["input"].shape == (case.batch, 1, 28, 28)
        np.testing.assert_array_equal(run_onnx(session, case.inputs)["logits"], case.outputs["logits"])
    # Inputs come from the given samples, cycled to fill the batch.
    np.testing.assert_array_equal(cases[1].inputs["input"][5], cases[1].inputs["input"][0])


def test_mismatch_names_the_model_batch_and_difference(mnist_export) -> None:
    _, result = mnist_export
    torch.manual_seed(99)
    other = MnistMLP().eval()
    with pytest.raises(
        ModelValidationError, match=r"model 'mnist': ONNX Runtime differs from PyTorch at batch 1: max abs diff \d"
    ):
        verify_against_torch(other, DEFAULT_SPECS["mnist"], result.onnx_path, (1, 8), Tolerance(1e-4, 1e-3))


def test_spec_that_does_not_describe_the_model_fails_and_leaves_no_file(tmp_path: Path) -> None:
    mnist = DEFAULT_SPECS["mnist"]
    wrong = ModelSpec(**{**mnist.__dict__, "outputs": (TensorSpec("logits", "FP32", (12,)),)})
    with pytest.raises(ModelValidationError, match=r"ONNX graph outputs are \[\('logits', 1, \['batch', 10\]\)\]"):
        export_onnx(MnistMLP(), wrong, tmp_path / "model.onnx", tmp_path / "golden.npz")
    assert list(tmp_path.iterdir()) == []


def test_resnet50_fp16_copy_stays_within_the_engine_tolerance(resnet_export, tmp_path: Path) -> None:
    _, result = resnet_export
    diffs = write_fp16_onnx(result.onnx_path, tmp_path / "fp16.onnx", result.golden_path, FP16_TOLERANCE)
    assert set(diffs) == {1, 16} and 0 < max(diffs.values()) < 0.5
    assert (tmp_path / "fp16.onnx").stat().st_size < result.onnx_path.stat().st_size * 0.6
