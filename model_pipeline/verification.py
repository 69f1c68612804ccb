"""Verification inputs and reference outputs: what every model is checked with before it is published.

Inputs are the entry's samples, else generated per data type (within ``inputs.<name>.range``), at the shapes of
the profile's min, opt and max. ONNX Runtime (CPU) runs them for the reference outputs, saved with the inputs as
``golden.npz``; a PyTorch source is checked against ONNX Runtime on the same inputs, and every engine, replay and
served answer is later compared with the reference, output by output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_pipeline.errors import ModelValidationError
from model_pipeline.specs import FLOAT_TYPES, POINTS, Bounds, ModelSpec, TensorSpec, Tolerance

# Sizes of a dynamic axis ONNX Runtime serves without declared bounds (TensorRT requires them): verification only.
UNBOUNDED_AXIS = Bounds(1, 8, 32)
DEFAULT_INT_RANGE = (0, 9)  # small enough to index any embedding; give inputs.<name>.range for real token ids
NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "STRING": np.object_,
}
# ONNX Runtime FP32 against PyTorch FP32: only operator order and constant folding differ.
ONNX_TOLERANCE = Tolerance(atol=1e-4, rtol=1e-3)


@dataclass(frozen=True)
class GoldenCase:
    """Inputs at one profile point (``min``, ``opt``, ``max``) and the reference outputs they produced."""

    label: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]

    def describe(self) -> str:
        shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in self.inputs.items())
        return f"the {self.label} shapes ({shapes})"


@dataclass(frozen=True)
class Difference:
    """The worst elementwise difference of one output, absolute and relative, as Model Navigator reports it."""

    max_abs: float
    max_rel: float

    def to_dict(self) -> dict[str, float]:
        return {"max_abs": self.max_abs, "max_rel": self.max_rel}


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def _generated(spec: ModelSpec, tensor: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    kind = tensor.data_type
    bounds = spec.value_range(tensor.name)
    if kind in FLOAT_TYPES:
        values = rng.uniform(*bounds, size=shape) if bounds else rng.standard_normal(shape)
        return values.astype(NUMPY_TYPES.get(kind, np.float32))
    if kind == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if kind == "STRING":
        words = np.array(["alpha", "beta", "gamma", "delta"], dtype=np.object_)
        return words[rng.integers(0, len(words), size=shape)]
    low, high = (int(b) for b in bounds) if bounds else _int_range(kind)
    return rng.integers(low, high + 1, size=shape).astype(NUMPY_TYPES[kind])


def _strings(array: np.ndarray) -> np.ndarray:
    """A STRING tensor as Python str objects, what ONNX Runtime takes and gives (bytes would reach it as "b'..'")."""
    values = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(array).ravel().tolist()]
    return np.array(values, dtype=np.object_).reshape(np.shape(array))


def _int_range(kind: str) -> tuple[int, int]:
    return (0, 255) if kind == "UINT8" else DEFAULT_INT_RANGE


def _from_samples(spec: ModelSpec, samples: Mapping[str, np.ndarray], point: str) -> dict[str, np.ndarray]:
    """Sample rows for the batch at ``point`` (repeated when there are fewer); unbatched samples as they are."""
    inputs = {}
    for tensor in spec.inputs:
        array = np.asarray(samples[tensor.name])
        kind = NUMPY_TYPES[tensor.data_type]
        array = _strings(array) if tensor.data_type == "STRING" else array.astype(kind, copy=False)
        if spec.batch is not None:
            array = array[np.resize(np.arange(len(array)), spec.batch.at(point))]
        inputs[tensor.name] = np.ascontiguousarray(array)
    return inputs


def check_samples(spec: ModelSpec, samples: Mapping[str, np.ndarray], source: str) -> None:
    """Samples hold one array per input, of its rank and fixed dims; ModelValidationError naming the model."""
    where = f"model '{spec.name}': samples {source}"
    missing = [t.name for t in spec.inputs if t.name not in samples]
    if missing:
        raise ModelValidationError(f"{where} has no array for the inputs {missing}; it holds {sorted(samples)}")
    for tensor in spec.inputs:
        shape = np.shape(samples[tensor.name])
        dims = shape[1:] if spec.batch is not None else shape
        if len(dims) != len(tensor.dims) or any(d not in (-1, s) for d, s in zip(tensor.dims, dims, strict=True)):
            want = (["batch"] if spec.batch else []) + list(tensor.dims)
            raise ModelValidationError(f"{where}: '{tensor.name}' has shape {list(shape)}; the model takes {want}")


def verification_inputs(
    spec: ModelSpec, samples: Mapping[str, np.ndarray] | None = None, seed: int = 2
) -> dict[str, dict[str, np.ndarray]]:
    """Inputs per profile point: the samples, else generated at the min, opt and max shapes (repeats dropped)."""
    cases: dict[str, dict[str, np.ndarray]] = {}
    seen: set[tuple[Any, ...]] = set()
    for index, point in enumerate(POINTS):
        if samples is not None:
            inputs = _from_samples(spec, samples, point)
        else:
            rng = np.random.default_rng(seed + index)
            inputs = {t.name: _generated(spec, t, spec.shape(t, point, UNBOUNDED_AXIS), rng) for t in spec.inputs}
        shapes = tuple(a.shape for a in inputs.values())
        if shapes not in seen:
            seen.add(shapes)
            cases[point] = inputs
    return cases


def load_samples(path: Path) -> dict[str, np.ndarray]:
    """An .npz of real inputs, one array per input name."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise ModelValidationError(f"samples {path} is not a readable .npz ({exc})") from exc


# ---------------------------------------------------------------------------------------------------------------
# ONNX Runtime, the reference


def onnx_session(path: Path) -> Any:  # onnxruntime ships no type hints
    """A CPU ONNX Runtime session: the reference every engine and served answer is compared with."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(session: Any, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an ONNX Runtime session; outputs by name."""
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs)), strict=True))


def reference_cases(spec: ModelSpec, onnx_path: Path, inputs: Mapping[str, dict[str, np.ndarray]]) -> list[GoldenCase]:
    """ONNX Runtime's outputs for each case; ModelValidationError naming the model and ORT's message."""
    try:
        session = onnx_session(onnx_path)
        return [GoldenCase(label, dict(feeds), run_onnx(session, feeds)) for label, feeds in inputs.items()]
    except ModelValidationError:
        raise
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument/RuntimeException types
        raise ModelValidationError(f"model '{spec.name}': ONNX Runtime cannot run it: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# Comparing outputs


def differences(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> dict[str, Difference]:
    """The worst absolute and relative difference per output (shapes must agree)."""
    result = {}
    for name, reference in expected.items():
        got = actual.get(name)
        if got is None or got.shape != reference.shape:
            shape = "missing" if got is None else f"shape {list(got.shape)}"
            raise ModelValidationError(f"output '{name}' is {shape}, expected shape {list(reference.shape)}")
        if reference.dtype == np.object_:
            result[name] = Difference(float(np.sum(got != reference)), 0.0)
            continue
        diff = np.abs(got.astype(np.float64) - reference.astype(np.float64))
        scale = np.maximum(np.abs(reference.astype(np.float64)), 1e-12)
        result[name] = Difference(float(diff.max(initial=0.0)), float((diff / scale).max(initial=0.0)))
    return result


def within_tolerance(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], tol: Tolerance) -> bool:
    """True when every output matches within ``tol`` (NaN never matches; strings must be equal)."""
    for name, reference in expected.items():
        if reference.dtype == np.object_:
            if not np.array_equal(actual[name], reference):
                return False
        elif not np.allclose(actual[name], reference, atol=tol.atol, rtol=tol.rtol, equal_nan=False):
            return False
    return True


def worst(per_case: list[dict[str, Difference]]) -> dict[str, Difference]:
    """The worst difference per output over several cases."""
    result: dict[str, Difference] = {}
    for case in per_case:
        for name, d in case.items():
            old = result.get(name, Difference(0.0, 0.0))
            result[name] = Difference(max(old.max_abs, d.max_abs), max(old.max_rel, d.max_rel))
    return result


def check_against(
    what: str, cases: list[GoldenCase], run: Any, tolerance: Tolerance, model: str
) -> dict[str, Difference]:
    """Run ``run(inputs)`` on every case and compare with its reference; the worst difference per output."""
    found = []
    for case in cases:
        actual = run(case.inputs)
        diff = differences(case.outputs, actual)
        found.append(diff)
        if not within_tolerance(case.outputs, actual, tolerance):
            # Name an output that is out of tolerance: the largest absolute difference may be within rtol.
            failing = {n: d for n, d in diff.items() if not within_tolerance({n: case.outputs[n]}, actual, tolerance)}
            name, d = max(failing.items(), key=lambda item: item[1].max_abs)
            raise ModelValidationError(
                f"model '{model}': {what} differs from ONNX Runtime at {case.describe()}: output '{name}' max abs "
                f"diff {d.max_abs:.3g} exceeds atol {tolerance.atol} + rtol {tolerance.rtol}"
            )
    return worst(found)


def torch_runner(module: Any, spec: ModelSpec) -> Any:
    """``inputs -> outputs`` through a PyTorch module, outputs named in the spec's order."""

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            result = module(*(torch.from_numpy(np.ascontiguousarray(inputs[t.name])) for t in spec.inputs))
        tensors = result if isinstance(result, tuple | list) else (result,)
        return {t.name: out.detach().cpu().numpy() for t, out in zip(spec.outputs, tensors, strict=True)}

    return run


# ---------------------------------------------------------------------------------------------------------------
# golden.npz


def write_golden(model: str, cases: list[GoldenCase], path: Path) -> Path:
    """Save every case's inputs and reference outputs (keys ``<point>.in.<tensor>`` and ``<point>.out.<tensor>``)."""
    arrays: dict[str, np.ndarray] = {"model": np.array(model)}
    for case in cases:
        arrays.update({f"{case.label}.in.{name}": value for name, value in case.inputs.items()})
        arrays.update({f"{case.label}.out.{name}": value for name, value in case.outputs.items()})
    if any(a.dtype == np.object_ for a in arrays.values()):
        # Unicode, not bytes: any text fits, and it reads back as the str ONNX Runtime gave.
        arrays = {k: (_strings(a).astype(np.str_) if a.dtype == np.object_ else a) for k, a in arrays.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        np.savez(stream, allow_pickle=False, **arrays)
    return path


def read_golden(path: str | Path) -> list[GoldenCase]:
    """The cases of a golden file, in profile order (min, opt, max)."""
    cases: dict[str, GoldenCase] = {}
    with np.load(path, allow_pickle=False) as archive:
        for key in archive.files:
            if key == "model":
                continue
            label, direction, name = key.split(".", 2)
            case = cases.setdefault(label, GoldenCase(label, {}, {}))
            array = archive[key]
            (case.inputs if direction == "in" else case.outputs)[name] = (
                _strings(array) if array.dtype.kind in "SU" else array
            )
    if not cases:
        raise ModelValidationError(f"golden file {path} holds no cases")
    order = {point: index for index, point in enumerate(POINTS)}
    return [cases[label] for label in sorted(cases, key=lambda label: order.get(label, len(order)))]
