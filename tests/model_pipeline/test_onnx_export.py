"""PyTorch -> ONNX: the built-in module with a dynamic "batch" axis, a brought torch.export program, onnx.checker.

The MNIST module is exported once for the module (the first torch export pays for the exporter's imports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch

from model_pipeline.derive import read_graph
from model_pipeline.errors import ModelValidationError
from model_pipeline.models import MnistMLP
from model_pipeline.onnx_export import check_onnx, export_module, export_program, load_program
from model_pipeline.specs import Bounds, ModelSpec, TensorSpec
from model_pipeline.verification import (
    ONNX_TOLERANCE,
    GoldenCase,
    check_against,
    onnx_session,
    run_onnx,
    torch_runner,
)

pytestmark = pytest.mark.slow

MNIST = ModelSpec(
    "mnist", (TensorSpec("input", "FP32", (1, 28, 28)),), (TensorSpec("logits", "FP32", (10,)),), Bounds(1, 4, 8)
)


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[MnistMLP, Path]:
    torch.manual_seed(0)
    model = MnistMLP().train()  # left in training mode on purpose: the export must switch to eval
    path = tmp_path_factory.mktemp("mnist") / "model.onnx"
    example = {"input": np.zeros((4, 1, 28, 28), np.float32)}
    export_module(model, example, ["logits"], 8, path)
    return model, path


def _case(session: Any, label: str, batch: int) -> GoldenCase:
    """ONNX Runtime's logits for random images at ``batch``."""
    inputs = {"input": np.random.default_rng(batch).standard_normal((batch, 1, 28, 28)).astype(np.float32)}
    return GoldenCase(label, inputs, run_onnx(session, inputs))


def test_the_module_export_names_its_tensors_and_a_dynamic_batch_axis(mnist: tuple[MnistMLP, Path]) -> None:
    inputs, outputs = read_graph(mnist[1])
    assert [(t.name, t.data_type, t.shape) for t in inputs] == [("input", "FP32", ("batch", 1, 28, 28))]
    assert [(t.name, t.data_type, t.shape) for t in outputs] == [("logits", "FP32", ("batch", 10))]


def test_the_export_is_one_self_contained_file_that_passes_the_full_checker(mnist: tuple[MnistMLP, Path]) -> None:
    model, path = mnist
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no .data next to it
    graph = onnx.load(str(path), load_external_data=False).graph
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer)
    check_onnx(path, "mnist")
    assert not model.training


def test_onnx_runtime_matches_pytorch_at_batches_it_was_not_exported_with(mnist: tuple[MnistMLP, Path]) -> None:
    model, path = mnist
    session = onnx_session(path)
    cases = [_case(session, "min", 1), _case(session, "max", 7)]  # the example had 4
    worst = check_against("PyTorch", cases, torch_runner(model, MNIST), ONNX_TOLERANCE, "mnist")
    assert worst["logits"].max_abs < 1e-4


def test_a_pytorch_module_that_computes_something_else_is_named(mnist: tuple[MnistMLP, Path]) -> None:
    _, path = mnist
    torch.manual_seed(99)
    other = MnistMLP().eval()
    cases = [_case(onnx_session(path), "min", 1)]
    with pytest.raises(
        ModelValidationError,
        match=r"model 'mnist': PyTorch differs from ONNX Runtime at the min shapes \(input \[1, 1, 28, 28\]\)",
    ):
        check_against("PyTorch", cases, torch_runner(other, MNIST), ONNX_TOLERANCE, "mnist")


def test_check_onnx_refuses_a_corrupt_file_naming_the_model(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x08\x07garbage-not-a-protobuf\xff\xff")
    with pytest.raises(ModelValidationError, match=r"model 'bert': model\.onnx fails onnx\.checker: "):
        check_onnx(broken, "bert")


class _Scorer(torch.nn.Module):
    """Two inputs sharing their first dimension, as a brought model might take features and a mask."""

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return features * 2 + mask.sum(dim=1, keepdim=True)


def test_a_saved_torch_export_program_is_exported_with_its_dynamic_dimension(tmp_path: Path) -> None:
    rows = torch.export.Dim("rows", min=1, max=64)
    example = (torch.ones(3, 4), torch.ones(3, 5))
    program = torch.export.export(_Scorer(), example, dynamic_shapes=({0: rows}, {0: rows}))
    torch.export.save(program, str(tmp_path / "scorer.pt2"))

    loaded = load_program(tmp_path / "scorer.pt2")
    export_program(loaded, tmp_path / "model.onnx")
    check_onnx(tmp_path / "model.onnx", "scorer")

    inputs, outputs = read_graph(tmp_path / "model.onnx")
    assert [t.name for t in inputs] == ["features", "mask"]
    first = {t.shape[0] for t in (*inputs, *outputs)}
    assert len(first) == 1 and isinstance(next(iter(first)), str)  # one dynamic dim 0 shared by every tensor
    assert [t.shape[1:] for t in (*inputs, *outputs)] == [(4,), (5,), (4,)]
    features, mask = np.ones((9, 4), np.float32), np.ones((9, 5), np.float32)  # 9 rows: not the example's 3
    got = run_onnx(onnx_session(tmp_path / "model.onnx"), {"features": features, "mask": mask})
    np.testing.assert_allclose(next(iter(got.values())), np.full((9, 4), 7.0, np.float32))


def test_a_file_that_is_not_a_saved_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip")
    with pytest.raises(ModelValidationError, match=r"model\.pt2 is not a torch\.export program saved with"):
        load_program(path)
