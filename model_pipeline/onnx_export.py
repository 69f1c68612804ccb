"""PyTorch -> ONNX: a built-in module with a dynamic batch axis, or a brought torch.export program as it is.

We use the torch.export-based ("dynamo") exporter: it is torch's default and maintained path (the TorchScript
exporter is gone from the pinned torch), it folds BatchNorm into Conv for eval models, and it keeps the dim names
a program was exported with. Every exported file passes ``onnx.checker`` with full checks before it is used.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from model_pipeline.errors import ModelValidationError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions that run PyTorch: the engine-build Job has no torch.
BATCH_DIM_NAME = "batch"


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # it prints its own progress
        # torch 2.13's exporter trips over its own pytree deprecation; nothing for us to act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        yield


def check_onnx(path: Path, model: str) -> None:
    """``onnx.checker`` with full checks (shape inference included); ModelValidationError naming the model."""
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except Exception as exc:  # ValidationError, InferenceError, DecodeError: the file is not a sound model
        raise ModelValidationError(f"model '{model}': {path.name} fails onnx.checker: {exc}") from exc


def export_module(
    module: torch.nn.Module,
    example: dict[str, Any],
    output_names: list[str],
    max_batch: int,
    path: Path,
) -> None:
    """Export ``module`` (eval mode) with axis 0 of every input dynamic and named "batch", as one file."""
    import torch

    module.eval()
    batch = torch.export.Dim(BATCH_DIM_NAME, min=1, max=max(max_batch, 2))
    with _quiet_exporter():
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(array) for array in example.values()),
            str(path),
            input_names=list(example),
            output_names=output_names,
            dynamic_shapes=tuple({0: batch} for _ in example),
            external_data=False,  # one self-contained file: Triton, ORT and the TRT parser load it alone
            dynamo=True,
        )


def load_program(path: Path) -> Any:
    """A saved ``torch.export`` ExportedProgram; ModelValidationError when the file is not one."""
    import torch

    try:
        return torch.export.load(str(path))
    except Exception as exc:  # zip, pickle and version errors alike
        raise ModelValidationError(
            f"{path.name} is not a torch.export program saved with torch.export.save ({type(exc).__name__}: {exc})"
        ) from exc


def export_program(program: Any, path: Path) -> None:
    """Export a torch.export program to ONNX with the dynamic shapes it was exported with."""
    import torch

    with _quiet_exporter():
        try:
            torch.onnx.export(program, (), str(path), external_data=False, dynamo=True)
        except Exception as exc:  # torch.onnx raises its own export errors for unsupported operators
            raise ModelValidationError(f"the torch.export program cannot be exported to ONNX: {exc}") from exc
