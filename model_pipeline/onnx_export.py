"""PyTorch -> ONNX with a dynamic batch axis, checked with ONNX Runtime, plus golden outputs for engine checks.

We use the torch.export-based ("dynamo") exporter: it is torch's default and maintained path (the TorchScript
exporter warns that it will be removed), it folds BatchNorm into Conv for eval models, and it exports
ResNet-50 in about 5 s on 2 CPUs against 1.5 s for TorchScript: a fair price for not using a deprecated path.
"""

from __future__ import annotations

import contextlib
import io
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from model_pipeline.errors import ModelValidationError
from model_pipeline.specs import ModelSpec, TensorSpec

if TYPE_CHECKING:
    import torch

# torch is imported inside the two functions that run PyTorch: the engine-build Job imports this module for the
# golden checks inside the TensorRT container, which has no torch.
BATCH_DIM_NAME = "batch"


@dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``, as in numpy.allclose."""

    atol: float
    rtol: float


# ONNX Runtime FP32 against PyTorch FP32: only operator order and BatchNorm folding differ.
ONNX_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)


@dataclass(frozen=True)
class GoldenCase:
    """Inputs for one batch size and the ONNX Runtime outputs they produced."""

    batch: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class ExportResult:
    """What was exported and how closely ONNX Runtime reproduced PyTorch, per batch size."""

    onnx_path: Path
    golden_path: Path
    opset: int
    ir_version: int
    max_abs_diff: dict[int, float]
    export_seconds: float


def max_abs_diff(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> float:
    """Largest absolute elementwise difference over all outputs (shapes must agree)."""
    worst = 0.0
    for name, reference in expected.items():
        if actual[name].shape != reference.shape:
            raise ModelValidationError(
                f"output '{name}' has shape {list(actual[name].shape)}, expected {list(reference.shape)}"
            )
        diff = np.abs(actual[name].astype(np.float64) - reference.astype(np.float64))
        worst = max(worst, float(diff.max(initial=0.0)))
    return worst


def within_tolerance(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance) -> bool:
    """True when every output matches within ``tol`` (NaN never matches)."""
    return all(
        np.allclose(actual[name], reference, atol=tol.atol, rtol=tol.rtol, equal_nan=False)
        for name, reference in expected.items()
    )


def make_inputs(
    spec: ModelSpec, batch: int, seed: int, samples: Mapping[str, np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """FP32 inputs of ``batch`` rows, taken in order from ``samples`` (e.g. test images) or seeded N(0, 1)."""
    rng = np.random.default_rng(seed + batch)
    inputs = {}
    for tensor in spec.inputs:
        if samples is not None and tensor.name in samples:
            rows = np.resize(np.arange(len(samples[tensor.name])), batch)
            inputs[tensor.name] = np.ascontiguousarray(samples[tensor.name][rows], dtype=np.float32)
        else:
            inputs[tensor.name] = rng.standard_normal((batch, *tensor.dims), dtype=np.float32)
    return inputs


def _torch_outputs(model: torch.nn.Module, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        result = model(*(torch.from_numpy(inputs[t.name]) for t in spec.inputs))
    tensors = result if isinstance(result, tuple | list) else (result,)
    return {t.name: out.detach().cpu().numpy() for t, out in zip(spec.outputs, tensors, strict=True)}


def _export(model: torch.nn.Module, spec: ModelSpec, path: Path) -> None:
    import torch

    # Example batch >= 2: torch.export specialises a dimension whose example size is 1.
    example_batch = max(2, spec.profile.opt)
    example = make_inputs(spec, example_batch, seed=0)
    batch = torch.export.Dim(BATCH_DIM_NAME, min=1, max=max(spec.profile.max, 2))
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():  # it prints its own progress
        # torch 2.13's exporter trips over its own pytree deprecation; nothing for us to act on.
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        torch.onnx.export(
            model,
            tuple(torch.from_numpy(example[t.name]) for t in spec.inputs),
            str(path),
            input_names=[t.name for t in spec.inputs],
            output_names=[t.name for t in spec.outputs],
            dynamic_shapes=tuple({0: batch} for _ in spec.inputs),
            external_data=False,  # one self-contained file: Triton, ORT and the TRT parser load it alone
            dynamo=True,
        )


def _check_io(model: onnx.ModelProto, spec: ModelSpec) -> None:
    """Graph inputs/outputs must carry the spec's names, FP32, a dynamic "batch" axis and the spec's dims."""

    def describe(values: list[onnx.ValueInfoProto]) -> list[tuple[str, int, list[str | int]]]:
        return [
            (
                v.name,
                v.type.tensor_type.elem_type,
                [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
            )
            for v in values
        ]

    def expected(tensors: tuple[TensorSpec, ...]) -> list[tuple[str, int, list[str | int]]]:
        return [(t.name, onnx.TensorProto.FLOAT, [BATCH_DIM_NAME, *t.dims]) for t in tensors]

    for kind, actual, wanted in (
        ("inputs", describe(list(model.graph.input)), expected(spec.inputs)),
        ("outputs", describe(list(model.graph.output)), expected(spec.outputs)),
    ):
        if actual != wanted:
            raise ModelValidationError(
                f"model '{spec.name}': ONNX graph {kind} are {actual}; expected (name, FLOAT=1, dims) {wanted}"
            )


def onnx_session(path: Path) -> Any:  # onnxruntime ships no type hints
    """A CPU ONNX Runtime session: the reference every engine is compared with."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX Runtime session; outputs by name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def verify_against_torch(
    model: torch.nn.Module,
    spec: ModelSpec,
    onnx_path: Path,
    batches: tuple[int, ...],
    tolerance: Tolerance = ONNX_TOLERANCE,
    samples: Mapping[str, np.ndarray] | None = None,
) -> dict[int, float]:
    """Max abs diff ONNX Runtime vs PyTorch per batch; ModelValidationError on a batch out of tolerance."""
    session = onnx_session(onnx_path)
    diffs = {}
    for batch in batches:
        inputs = make_inputs(spec, batch, seed=1, samples=samples)
        reference, actual = _torch_outputs(model, spec, inputs), run_onnx(session, inputs)
        diffs[batch] = max_abs_diff(reference, actual)
        if not within_tolerance(reference, actual, tolerance):
            raise ModelValidationError(
                f"model '{spec.name}': ONNX Runtime differs from PyTorch at batch {batch}: max abs diff "
                f"{diffs[batch]:.3g} exceeds atol {tolerance.atol} + rtol {tolerance.rtol}"
            )
    return diffs


def write_golden(
    spec: ModelSpec, onnx_path: Path, golden_path: Path, samples: Mapping[str, np.ndarray] | None = None
) -> Path:
    """Save inputs at the profile's min and max batch with the ONNX Runtime outputs they give."""
    session = onnx_session(onnx_path)
    arrays: dict[str, np.ndarray] = {"model": np.array(spec.name)}
    for batch in sorted({spec.profile.min, spec.profile.max}):
        inputs = make_inputs(spec, batch, seed=2, samples=samples)
        arrays.update({f"b{batch}.in.{name}": value for name, value in inputs.items()})
        arrays.update({f"b{batch}.out.{name}": value for name, value in run_onnx(session, inputs).items()})
    golden_path.parent.mkdir(parents=True, exist_ok=True)
    with golden_path.open("wb") as stream:
        np.savez(stream, allow_pickle=False, **arrays)
    return golden_path


def read_golden(path: str | Path) -> list[GoldenCase]:
    """The golden cases of an ``.npz`` written by :func:`write_golden`, smallest batch first."""
    cases: dict[int, GoldenCase] = {}
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            if key == "model":
                continue
            batch_text, direction, name = key.split(".", 2)
            batch = int(batch_text[1:])
            case = cases.setdefault(batch, GoldenCase(batch, {}, {}))
            (case.inputs if direction == "in" else case.outputs)[name] = archive[key]
    if not cases:
        raise ModelValidationError(f"golden file {path} holds no cases")
    return [cases[b] for b in sorted(cases)]


def _validate(
    model: torch.nn.Module,
    spec: ModelSpec,
    path: Path,
    tolerance: Tolerance,
    samples: Mapping[str, np.ndarray] | None,
) -> dict[int, float]:
    try:
        onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ModelValidationError(f"model '{spec.name}': exported ONNX fails onnx.checker: {exc}") from exc
    _check_io(onnx.load(str(path)), spec)
    batches = tuple(sorted({1, spec.profile.opt, spec.profile.max}))
    return verify_against_torch(model, spec, path, batches, tolerance, samples)


def export_onnx(
    model: torch.nn.Module,
    spec: ModelSpec,
    onnx_path: str | Path,
    golden_path: str | Path,
    *,
    tolerance: Tolerance = ONNX_TOLERANCE,
    samples: Mapping[str, np.ndarray] | None = None,
) -> ExportResult:
    """Export ``model`` (in eval mode) as one self-contained ONNX file, validate it and write its golden file.

    ``samples`` (name -> ``[N, *dims]`` arrays, e.g. real test images) replace random inputs in the checks.
    """
    onnx_path, golden_path = Path(onnx_path), Path(golden_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    started = time.perf_counter()
    partial = onnx_path.with_name(onnx_path.name + ".partial")
    try:
        _export(model, spec, partial)
        diffs = _validate(model, spec, partial, tolerance, samples)
        partial.replace(onnx_path)  # only a verified model takes the final name
    finally:
        partial.unlink(missing_ok=True)
    write_golden(spec, onnx_path, golden_path, samples)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    return ExportResult(
        onnx_path=onnx_path,
        golden_path=golden_path,
        opset=next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        ir_version=proto.ir_version,
        max_abs_diff=diffs,
        export_seconds=time.perf_counter() - started,
    )
