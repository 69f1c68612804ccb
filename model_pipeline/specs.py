"""What each served model looks like to Triton: tensors, batch and axis bounds, backend, batching and instances.

A spec is derived from the model's own graph and its stack entry (:mod:`model_pipeline.derive`), and validated
when it is created, so an impossible one (a profile with min > max, a dynamic axis TensorRT has no bounds for)
fails here with a message naming the field, instead of at Triton load time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from model_pipeline import syntax
from model_pipeline.errors import SpecError

# Triton's DataType enum without the "TYPE_" prefix (model_config.proto).
DATA_TYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "STRING",
        "BF16",
    }
)
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})
BACKENDS = ("onnxruntime", "tensorrt")
# ONNX Runtime serves the ONNX file as exported; only TensorRT builds an engine in a chosen precision.
PRECISIONS_BY_BACKEND = {"onnxruntime": ("fp32",), "tensorrt": ("fp16", "fp32")}
PRECISIONS = ("fp16", "fp32")
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")
DYNAMIC = -1  # Triton's dims value of an axis whose size varies per request
POINTS = ("min", "opt", "max")  # the shapes of an optimization profile, and of the verification inputs

PLATFORM_BY_BACKEND = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILE_BY_PLATFORM = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


@dataclass(frozen=True)
class Bounds:
    """The smallest, tuned-for and largest size of one axis (the batch, or a dynamic axis such as sequence)."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        _require(
            1 <= self.min <= self.opt <= self.max,
            f"bounds {self.min}/{self.opt}/{self.max} must satisfy 1 <= min <= opt <= max",
        )

    def at(self, point: str) -> int:
        """The size at ``point`` ("min", "opt" or "max")."""
        return int(getattr(self, point))

    def as_list(self) -> list[int]:
        """``[min, opt, max]``, the form stored in the manifest and passed to the engine Job."""
        return [self.min, self.opt, self.max]


@dataclass(frozen=True)
class Tolerance:
    """Elementwise ``|actual - expected| <= atol + rtol * |expected|``, as in numpy.allclose."""

    atol: float
    rtol: float


# How closely an engine must reproduce ONNX Runtime's FP32 outputs: half precision keeps ~3 significant digits
# through 50+ layers; FP32 engines may still pick TF32 tactics.
DEFAULT_TOLERANCE = {"fp16": Tolerance(atol=5e-2, rtol=5e-2), "fp32": Tolerance(atol=1e-3, rtol=1e-3)}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output; ``dims`` exclude the batch dimension, DYNAMIC (-1) where the size varies.

    ``axes`` names each dynamic dim (the ONNX dim name, "" for a fixed one); empty when nothing is dynamic.
    """

    name: str
    data_type: str
    dims: tuple[int, ...]
    axes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _require(bool(self.name), "tensor name must not be empty")
        _require(
            self.data_type in DATA_TYPES,
            f"tensor '{self.name}': data_type '{self.data_type}' is unknown; allowed: {sorted(DATA_TYPES)}",
        )
        _require(
            all(isinstance(d, int) and (d >= 1 or d == DYNAMIC) for d in self.dims),
            f"tensor '{self.name}': dims {list(self.dims)} must all be integers >= 1, or -1 (batch dim excluded)",
        )
        _require(
            not self.axes or len(self.axes) == len(self.dims),
            f"tensor '{self.name}': axes {list(self.axes)} must name each of its {len(self.dims)} dims",
        )

    def axis_name(self, index: int) -> str:
        """The name of dim ``index`` (batch excluded) when it is dynamic."""
        return self.axes[index] if self.axes else ""


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's dynamic batcher: batch sizes it waits for and how long a request may wait for them."""

    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int

    def __post_init__(self) -> None:
        sizes = self.preferred_batch_sizes
        _require(all(s >= 1 for s in sizes), f"preferred_batch_sizes {list(sizes)} must all be >= 1")
        _require(len(set(sizes)) == len(sizes), f"preferred_batch_sizes {list(sizes)} must not repeat")
        _require(self.max_queue_delay_us >= 0, f"max_queue_delay_us ({self.max_queue_delay_us}) must be >= 0")


@dataclass(frozen=True)
class ModelSpec:
    """A model as Triton serves it; ``name`` is the Triton model name and the repository directory name.

    ``batch`` is None for a model without a batch dimension (Triton's max_batch_size 0, no batcher). ``axes``
    bounds every dynamic axis other than the batch, by name; ``value_ranges`` bound generated verification
    inputs per input name.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: Bounds | None
    axes: tuple[tuple[str, Bounds], ...] = ()
    backend: str = "onnxruntime"
    precision: str = "fp32"
    version: int = 1
    dynamic_batching: DynamicBatching | None = None
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"
    warmup: bool = False
    tolerance: Tolerance | None = None  # None: DEFAULT_TOLERANCE of the precision
    value_ranges: tuple[tuple[str, tuple[float, float]], ...] = ()

    def __post_init__(self) -> None:
        _require(
            bool(syntax.MODEL_NAME.match(self.name)),
            f"model name '{self.name}' must be {syntax.MODEL_NAME_RULE}, at most 63 characters",
        )
        where = f"model '{self.name}'"
        _require(self.backend in BACKENDS, f"{where}: backend '{self.backend}' is unknown; allowed: {list(BACKENDS)}")
        allowed = PRECISIONS_BY_BACKEND[self.backend]
        _require(
            self.precision in allowed,
            f"{where}: precision '{self.precision}' is not one backend '{self.backend}' has; allowed: {list(allowed)}",
        )
        _require(
            self.instance_kind in INSTANCE_KINDS,
            f"{where}: instance_kind '{self.instance_kind}' is unknown; allowed: {list(INSTANCE_KINDS)}",
        )
        # Triton's TensorRT backend refuses CPU instances ("TensorRT backend supports only GPU device").
        _require(
            not (self.backend == "tensorrt" and self.instance_kind == "KIND_CPU"),
            f"{where}: backend 'tensorrt' cannot run on instance_kind 'KIND_CPU'; use KIND_GPU or KIND_AUTO",
        )
        _require(self.version >= 1, f"{where}: version ({self.version}) must be >= 1")
        _require(self.instance_count >= 1, f"{where}: instance_count ({self.instance_count}) must be >= 1")
        self._check_tensors(where)
        self._check_batching(where)

    def _check_tensors(self, where: str) -> None:
        _require(len(self.inputs) >= 1, f"{where}: needs at least one input")
        _require(len(self.outputs) >= 1, f"{where}: needs at least one output")
        names = [t.name for t in (*self.inputs, *self.outputs)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        _require(not duplicates, f"{where}: tensor names {duplicates} are used more than once")
        if self.batch is None:
            scalars = [t.name for t in (*self.inputs, *self.outputs) if not t.dims]
            _require(not scalars, f"{where}: tensors {scalars} have no dimension; Triton needs at least one")
        if self.backend == "tensorrt":
            unbounded = sorted({a for t in self.inputs for a in self.input_axes(t) if a not in dict(self.axes)})
            _require(not unbounded, f"{where}: TensorRT needs min/opt/max bounds for the dynamic axes {unbounded}")

    def _check_batching(self, where: str) -> None:
        if self.dynamic_batching is None:
            return
        _require(self.batch is not None, f"{where}: a model without a batch dimension cannot use dynamic batching")
        too_big = [s for s in self.dynamic_batching.preferred_batch_sizes if s > self.max_batch_size]
        _require(not too_big, f"{where}: preferred_batch_sizes {too_big} exceed the batch max ({self.max_batch_size})")

    @staticmethod
    def input_axes(tensor: TensorSpec) -> list[str]:
        """The names of ``tensor``'s dynamic dims, batch excluded."""
        return [tensor.axis_name(i) for i, d in enumerate(tensor.dims) if d == DYNAMIC]

    @property
    def max_queue_delay_us(self) -> int:
        """How long the dynamic batcher waits for a fuller batch (0 without dynamic batching)."""
        return self.dynamic_batching.max_queue_delay_us if self.dynamic_batching else 0

    @property
    def max_batch_size(self) -> int:
        """Triton's ``max_batch_size``: the largest batch the profile accepts, 0 without a batch dimension."""
        return self.batch.max if self.batch else 0

    @property
    def engine_tolerance(self) -> Tolerance:
        """How closely an engine must reproduce the ONNX Runtime reference outputs."""
        return self.tolerance or DEFAULT_TOLERANCE[self.precision]

    def value_range(self, tensor: str) -> tuple[float, float] | None:
        """The range generated inputs of ``tensor`` are drawn from, when the entry gives one."""
        return dict(self.value_ranges).get(tensor)

    def shape(self, tensor: TensorSpec, point: str, unbounded: Bounds | None = None) -> tuple[int, ...]:
        """``tensor``'s full shape at a profile ``point``; ``unbounded`` sizes axes without declared bounds."""
        bounds = dict(self.axes)
        dims = []
        for index, size in enumerate(tensor.dims):
            if size != DYNAMIC:
                dims.append(size)
                continue
            axis = bounds.get(tensor.axis_name(index)) or unbounded
            if axis is None:
                raise SpecError(
                    f"model '{self.name}': axis '{tensor.axis_name(index)}' of '{tensor.name}' has no bounds"
                )
            dims.append(axis.at(point))
        return ((self.batch.at(point),) if self.batch else ()) + tuple(dims)

    def profile_record(self) -> dict[str, Any]:
        """The bounds and tolerance an engine is built and checked with, as the manifest and engine.json say them."""
        return {
            "profile": self.batch.as_list() if self.batch else None,
            "axes": {name: bounds.as_list() for name, bounds in self.axes},
            "tolerance": dataclasses.asdict(self.engine_tolerance),
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (tuples become lists); used for cache keys and reports."""
        return dataclasses.asdict(self)
