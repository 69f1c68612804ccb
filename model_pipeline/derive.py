"""A model's spec, derived from its ONNX graph and its stack entry: nothing the graph can tell is asked for.

From the graph: input and output names, data types and dims; whether dimension 0 is a batch dimension shared by
every input and output (then ``max_batch_size`` is ``batch.max`` and the dynamic batcher is on), or there is none
(``max_batch_size`` 0, no batcher); which other axes are dynamic (Triton dims -1), by their ONNX dim names.
From the entry: backend, precision, the batch and axis bounds, input ranges, tolerance, batching and instances.
Everything the two disagree on is reported at once, each problem naming the model's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from model_pipeline.entry import ModelEntry
from model_pipeline.errors import ModelValidationError, SpecError
from model_pipeline.release import TRITON_TENSORRT_VERSION
from model_pipeline.sources import BUILTIN_BY_ARCHITECTURE
from model_pipeline.specs import DEFAULT_TOLERANCE, DYNAMIC, Bounds, DynamicBatching, ModelSpec, TensorSpec, Tolerance

# ONNX element types -> Triton data type names (without "TYPE_").
ONNX_TO_TRITON: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.STRING: "STRING",
}
# The I/O types TensorRT 10 and later bind (INT64 arrived in TensorRT 10).
TENSORRT_IO_TYPES = frozenset({"FP32", "FP16", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8"})
TENSORRT_INT64_SINCE = 10


@dataclass(frozen=True)
class GraphTensor:
    """A graph input or output as ONNX declares it: each dim a size, a dim name, or "" (dynamic, unnamed)."""

    name: str
    data_type: str
    shape: tuple[int | str, ...]

    def dynamic(self, index: int) -> bool:
        return isinstance(self.shape[index], str)

    def axis(self, index: int) -> str:
        """The name ``axes`` knows dim ``index`` by: its ONNX dim name, else ``tensor[index]``."""
        return str(self.shape[index]) or f"{self.name}[{index}]"


def read_graph(path: Path) -> tuple[list[GraphTensor], list[GraphTensor]]:
    """Graph inputs (without initializers) and outputs; ModelValidationError for a file that is not a model."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ModelValidationError(f"{path.name} is not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.output:
        raise ModelValidationError(f"{path.name} is not a readable ONNX model (the graph has no outputs)")
    weights = {init.name for init in model.graph.initializer}
    inputs = [_graph_tensor(v) for v in model.graph.input if v.name not in weights]
    return inputs, [_graph_tensor(v) for v in model.graph.output]


def _graph_tensor(value: onnx.ValueInfoProto) -> GraphTensor:
    tensor_type = value.type.tensor_type
    data_type = ONNX_TO_TRITON.get(int(tensor_type.elem_type), f"ONNX element type {tensor_type.elem_type}")
    shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor_type.shape.dim)
    return GraphTensor(value.name, data_type, shape)


def batch_axis(entry: ModelEntry, tensors: list[GraphTensor]) -> str | None:
    """The batch dim's name when dimension 0 is dynamic in every tensor, named alike, and not an entry's axis."""
    if not all(t.shape and t.dynamic(0) for t in tensors):
        return None
    names = {t.shape[0] for t in tensors} - {""}
    if len(names) > 1 or names & {name for name, _ in entry.axes}:
        return None
    return str(next(iter(names), ""))


class _Problems:
    """The problems of one model, each naming the entry's key."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.items: list[str] = []

    def add(self, name: str, message: str) -> None:
        self.items.append(f"{self.key}.{name} {message}" if name else f"{self.key} {message}")


def derive_spec(entry: ModelEntry, onnx_path: Path, key: str | None = None) -> ModelSpec:
    """``entry``'s spec from the model at ``onnx_path``; one SpecError listing every problem found."""
    problems = derive_problems(entry, onnx_path, key)
    if problems:
        raise SpecError("; ".join(problems))
    return _spec(entry, *read_graph(onnx_path))


def derive_problems(entry: ModelEntry, onnx_path: Path, key: str | None = None) -> list[str]:
    """Everything wrong with serving ``onnx_path`` as ``entry`` says, each naming ``models[<name>].<key>``."""
    found = _Problems(key or f"models[{entry.name}]")
    inputs, outputs = read_graph(onnx_path)
    batch = batch_axis(entry, inputs + outputs)
    _check_types(entry, inputs + outputs, found)
    _check_axes(entry, inputs, batch, found)
    if batch is None and entry.batch_given:
        found.add("batch", "is refused: the model has no batch dimension (dim 0 is not dynamic in every tensor)")
    unknown = sorted({name for name, _ in entry.input_ranges} - {t.name for t in inputs})
    if unknown:
        found.add("inputs", f"names {unknown}, which the model does not have; its inputs: {[t.name for t in inputs]}")
    empty = [t.name for t in inputs + outputs if not t.shape and batch is None]
    if empty:
        found.add("source", f"has scalar tensors {empty}; Triton needs at least one dimension")
    return found.items


def _check_types(entry: ModelEntry, tensors: list[GraphTensor], found: _Problems) -> None:
    unknown = [t.name for t in tensors if t.data_type not in ONNX_TO_TRITON.values()]
    if unknown:
        found.add("source", f"has tensors {unknown} of a type Triton cannot serve")
    if entry.backend != "tensorrt":
        return
    strings = [t.name for t in tensors if t.data_type == "STRING"]
    if strings:
        found.add(
            "backend",
            f"tensorrt cannot take the STRING tensors {strings}: TensorRT has no strings; serve the model with "
            "backend onnxruntime, or put the tokenizer in front and pass token ids",
        )
    major = int(TRITON_TENSORRT_VERSION.split(".")[0])
    refused = TENSORRT_IO_TYPES - ({"INT64"} if major < TENSORRT_INT64_SINCE else set())
    other = [f"{t.name} ({t.data_type})" for t in tensors if t.data_type not in refused | {"STRING"}]
    if other:
        found.add(
            "backend",
            f"tensorrt {TRITON_TENSORRT_VERSION} cannot bind {other}; it takes {sorted(refused)}: use backend "
            "onnxruntime or cast in the model",
        )


def _check_axes(entry: ModelEntry, inputs: list[GraphTensor], batch: str | None, found: _Problems) -> None:
    first = 1 if batch is not None else 0
    dynamic = {t.axis(i) for t in inputs for i in range(first, len(t.shape)) if t.dynamic(i)}
    declared = {name for name, _ in entry.axes}
    for name in sorted(declared - dynamic):
        have = ", ".join(sorted(dynamic)) or "none"
        found.add(f"axes.{name}", f"names an axis the model does not have; its dynamic axes: {have}")
    missing = sorted(dynamic - declared)
    if missing and entry.backend == "tensorrt":
        found.add(
            "axes",
            f"needs {{min, opt, max}} for the dynamic axes {missing}: TensorRT builds one optimization profile "
            "covering each",
        )


def _spec(entry: ModelEntry, inputs: list[GraphTensor], outputs: list[GraphTensor]) -> ModelSpec:
    batch_name = batch_axis(entry, inputs + outputs)
    first = 0 if batch_name is None else 1
    batch = entry.batch() if batch_name is not None else None
    builtin = BUILTIN_BY_ARCHITECTURE.get(entry.builtin)
    return ModelSpec(
        name=entry.name,
        inputs=tuple(_tensor(t, first) for t in inputs),
        outputs=tuple(_tensor(t, first) for t in outputs),
        batch=batch,
        axes=entry.axes,
        backend=entry.backend,
        precision=entry.effective_precision,
        dynamic_batching=_batching(batch, entry.max_queue_delay_us),
        instance_count=entry.instances,
        warmup=builtin.warmup if builtin else False,
        tolerance=_tolerance(entry),
        value_ranges=entry.input_ranges,
    )


def _tolerance(entry: ModelEntry) -> Tolerance | None:
    """The entry's tolerance, a key it leaves out taken from its precision's default; None: all default."""
    if entry.atol is None and entry.rtol is None:
        return None
    default = DEFAULT_TOLERANCE[entry.effective_precision]
    return Tolerance(
        default.atol if entry.atol is None else entry.atol, default.rtol if entry.rtol is None else entry.rtol
    )


def _batching(batch: Bounds | None, delay_us: int) -> DynamicBatching | None:
    # The batcher waits for the profile's opt and max batch, the sizes the engine is tuned for.
    return DynamicBatching(tuple(dict.fromkeys((batch.opt, batch.max))), delay_us) if batch else None


def _tensor(tensor: GraphTensor, first: int) -> TensorSpec:
    shape = tensor.shape[first:]
    dims = tuple(DYNAMIC if isinstance(d, str) else int(d) for d in shape)
    axes = tuple(tensor.axis(first + i) if isinstance(d, str) else "" for i, d in enumerate(shape))
    return TensorSpec(tensor.name, tensor.data_type, dims, axes if DYNAMIC in dims else ())
