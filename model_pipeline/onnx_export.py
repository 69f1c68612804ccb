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
    """Export a torch.export program to ONNX with the dynamic shapes it was exported with.

    A saved program keeps its dynamic dims as bare symbols (``s52``), not the names they were declared with: the
    symbol at dim 0 of every input becomes "batch", any other the ``input[index]`` of its first use. Outputs are
    named after the keys of a dict the program returns, else ``output_0``, ``output_1``...
    """
    import torch

    with _quiet_exporter():
        try:
            exported = torch.onnx.export(program, (), dynamo=True, dynamic_shapes=_dim_names(program))
        except Exception as exc:  # torch.onnx raises its own export errors for unsupported operators
            raise ModelValidationError(f"the torch.export program cannot be exported to ONNX: {exc}") from exc
    _name_outputs(exported.model.graph, _output_names(program))
    exported.save(str(path), external_data=False)


def _dim_names(program: Any) -> dict[str, dict[int, str]]:
    import torch

    shapes = {n.name: n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder"}
    inputs = list(program.graph_signature.user_inputs)
    symbols = {
        name: {i: str(d.node.expr) for i, d in enumerate(shapes[name]) if isinstance(d, torch.SymInt)}
        for name in inputs
    }
    firsts = {dims.get(0) for dims in symbols.values()}
    names: dict[str, str] = {}
    if len(firsts) == 1 and None not in firsts:
        names[str(next(iter(firsts)))] = BATCH_DIM_NAME
    for name in inputs:
        for index, symbol in symbols[name].items():
            names.setdefault(symbol, f"{name}[{index}]")
    return {name: {i: names[symbol] for i, symbol in symbols[name].items()} for name in inputs}


def _output_names(program: Any) -> list[str]:
    tree = program.call_spec.out_spec
    if tree is not None and tree.type is dict:
        return [str(key) for key in tree.context]
    count = len(program.graph_signature.user_outputs)
    return [f"output_{index}" for index in range(count)]


def _name_outputs(graph: Any, wanted: list[str]) -> None:
    """Name the graph outputs, first renaming any inner value that already holds a wanted name (ONNX is SSA)."""
    outputs = list(graph.outputs)
    for node in graph:
        for value in node.outputs:
            if value.name in wanted and value not in outputs:
                value.name = f"{value.name}__inner"
    for value, name in zip(outputs, wanted, strict=True):
        value.name = name


def export_torchscript(path: Path, samples: dict[str, Any], target: Path) -> Any:
    """A TorchScript file to ONNX through torch's TorchScript exporter, which needs example inputs: the entry's
    samples, in the order of forward's arguments. Axis 0 of every input and output is the dynamic "batch"."""
    import torch

    module = torch.jit.load(str(path), map_location="cpu").eval()
    names = [argument.name for argument in module.forward.schema.arguments[1:]]
    missing = [name for name in names if name not in samples]
    if missing:
        raise ModelValidationError(f"{path.name}: samples hold no arrays for forward's arguments {missing}")
    example = tuple(torch.from_numpy(samples[name]) for name in names)
    with torch.inference_mode():
        result = module(*example)
    outputs = [f"output_{index}" for index in range(len(result) if isinstance(result, tuple | list) else 1)]
    with _quiet_exporter(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, and says so for every call
        torch.onnx.export(
            module,
            example,
            str(target),
            input_names=names,
            output_names=outputs,
            dynamic_axes={name: {0: BATCH_DIM_NAME} for name in names + outputs},
            dynamo=False,
        )
    return module
