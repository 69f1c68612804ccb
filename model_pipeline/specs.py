"""What each served model looks like to Triton: tensors, batch profile, backend, batching and instances.

A spec is validated when it is created, so an impossible one (a profile with min > max, a preferred batch size
that the engine cannot run) fails here with a message naming the field, instead of at Triton load time.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from model_pipeline import syntax
from model_pipeline.errors import SpecError, UnknownModelError

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
BACKENDS = ("onnxruntime", "tensorrt")
PRECISIONS = ("fp16", "fp32")
INSTANCE_KINDS = ("KIND_AUTO", "KIND_GPU", "KIND_CPU")
ARCHITECTURES = ("mnist_mlp", "resnet50")

PLATFORM_BY_BACKEND = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILE_BY_PLATFORM = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise SpecError(message)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; ``dims`` exclude the batch dimension."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def __post_init__(self) -> None:
        _require(bool(self.name), "tensor name must not be empty")
        _require(
            self.data_type in DATA_TYPES,
            f"tensor '{self.name}': data_type '{self.data_type}' is unknown; allowed: {sorted(DATA_TYPES)}",
        )
        _require(len(self.dims) >= 1, f"tensor '{self.name}': dims must have at least one dimension")
        _require(
            all(isinstance(d, int) and d >= 1 for d in self.dims),
            f"tensor '{self.name}': dims {list(self.dims)} must all be integers >= 1 (batch dim excluded)",
        )


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimization profile of the batch dimension; Triton's max_batch_size is ``max``."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        _require(
            1 <= self.min <= self.opt <= self.max,
            f"batch profile {self.min}/{self.opt}/{self.max} must satisfy 1 <= min <= opt <= max",
        )

    def as_list(self) -> list[int]:
        """``[min, opt, max]``, the form stored in the manifest."""
        return [self.min, self.opt, self.max]


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
    """A model as Triton serves it; ``name`` is the Triton model name and the repository directory name."""

    name: str
    architecture: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    profile: BatchProfile
    backend: str = "onnxruntime"
    precision: str = "fp16"
    version: int = 1
    dynamic_batching: DynamicBatching | None = None
    instance_count: int = 1
    instance_kind: str = "KIND_AUTO"
    warmup: bool = False

    def __post_init__(self) -> None:
        _require(
            bool(syntax.MODEL_NAME.match(self.name)),
            f"model name '{self.name}' must be {syntax.MODEL_NAME_RULE}, at most 63 characters",
        )
        where = f"model '{self.name}'"
        _require(
            self.architecture in ARCHITECTURES,
            f"{where}: architecture '{self.architecture}' is unknown; allowed: {list(ARCHITECTURES)}",
        )
        _require(
            self.backend in BACKENDS,
            f"{where}: backend '{self.backend}' is unknown; allowed: {list(BACKENDS)}",
        )
        _require(
            self.precision in PRECISIONS,
            f"{where}: precision '{self.precision}' is unknown; allowed: {list(PRECISIONS)}",
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

    def _check_batching(self, where: str) -> None:
        if self.dynamic_batching is None:
            return
        too_big = [s for s in self.dynamic_batching.preferred_batch_sizes if s > self.profile.max]
        _require(
            not too_big,
            f"{where}: preferred_batch_sizes {too_big} exceed the batch profile max ({self.profile.max})",
        )

    @property
    def max_queue_delay_us(self) -> int:
        """How long the dynamic batcher waits for a fuller batch (0 without dynamic batching)."""
        return self.dynamic_batching.max_queue_delay_us if self.dynamic_batching else 0

    @property
    def max_batch_size(self) -> int:
        """Triton's ``max_batch_size``: the largest batch the TensorRT profile accepts."""
        return self.profile.max

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable form (tuples become lists); used for cache keys and reports."""
        return dataclasses.asdict(self)


def _mnist() -> ModelSpec:
    return ModelSpec(
        name="mnist",
        architecture="mnist_mlp",
        inputs=(TensorSpec("input", "FP32", (1, 28, 28)),),
        outputs=(TensorSpec("logits", "FP32", (10,)),),
        profile=BatchProfile(1, 4, 8),
        backend="tensorrt",
        precision="fp16",
        dynamic_batching=DynamicBatching(preferred_batch_sizes=(4, 8), max_queue_delay_us=100),
        instance_count=1,
        instance_kind="KIND_AUTO",
        warmup=False,
    )


def _resnet50() -> ModelSpec:
    return ModelSpec(
        name="resnet50",
        architecture="resnet50",
        inputs=(TensorSpec("input", "FP32", (3, 224, 224)),),
        outputs=(TensorSpec("logits", "FP32", (1000,)),),
        profile=BatchProfile(1, 8, 16),
        backend="tensorrt",
        precision="fp16",
        dynamic_batching=DynamicBatching(preferred_batch_sizes=(8, 16), max_queue_delay_us=500),
        instance_count=1,
        instance_kind="KIND_AUTO",
        # The first ResNet request would otherwise pay for cuDNN/TensorRT autotuning; warm up before READY.
        warmup=True,
    )


DEFAULT_SPECS: dict[str, ModelSpec] = {"mnist": _mnist(), "resnet50": _resnet50()}


# A stack's `models` entries (Pulumi.<stack>.yaml) override these spec fields; the defaults below apply where an
# entry says nothing and the architecture's spec has no opinion. components/settings.py declares the same keys
# with these defaults, so what the program checks and what the build writes cannot differ.
STACK_MODEL_DEFAULTS: dict[str, Any] = {"backend": "onnxruntime", "precision": "fp16", "instances": 1}
SPECS_BY_ARCHITECTURE: dict[str, ModelSpec] = {spec.architecture: spec for spec in DEFAULT_SPECS.values()}


def spec_for_stack_model(entry: dict[str, Any]) -> ModelSpec:
    """The spec a stack's model entry asks for: its architecture's spec with the entry's settings applied."""
    name = str(entry.get("name") or "")
    default = DEFAULT_SPECS.get(name)
    architecture = entry.get("architecture") or (default.architecture if default else None)
    if architecture not in SPECS_BY_ARCHITECTURE:
        raise UnknownModelError(
            f"model '{name}': architecture {architecture!r} is unknown; allowed: {', '.join(SPECS_BY_ARCHITECTURE)}"
        )
    base = SPECS_BY_ARCHITECTURE[architecture]
    batch = entry.get("batch") or {}
    profile = BatchProfile(
        int(batch.get("min", base.profile.min)),
        int(batch.get("opt", base.profile.opt)),
        int(batch.get("max", base.profile.max)),
    )
    delay = base.max_queue_delay_us
    return dataclasses.replace(
        base,
        name=name,
        backend=str(entry.get("backend", STACK_MODEL_DEFAULTS["backend"])),
        precision=str(entry.get("precision", STACK_MODEL_DEFAULTS["precision"])),
        profile=profile,
        # The batcher waits for the profile's opt and max, as the architectures' own specs do.
        dynamic_batching=DynamicBatching(
            tuple(dict.fromkeys((profile.opt, profile.max))), int(entry.get("maxQueueDelayUs", delay))
        ),
        instance_count=int(entry.get("instances", STACK_MODEL_DEFAULTS["instances"])),
    )


def get_spec(name: str, specs: dict[str, ModelSpec] | None = None) -> ModelSpec:
    """The spec called ``name``, or UnknownModelError listing the known names."""
    known = DEFAULT_SPECS if specs is None else specs
    if name not in known:
        raise UnknownModelError(f"unknown model '{name}'; known models: {', '.join(sorted(known))}")
    return known[name]


def parse_model_list(text: str, specs: dict[str, ModelSpec] | None = None) -> list[ModelSpec]:
    """Specs for a comma-separated list such as ``"mnist,resnet50"``, in that order, without repeats."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise UnknownModelError(f"no model given; known models: {', '.join(sorted(DEFAULT_SPECS))}")
    unique = list(dict.fromkeys(names))
    return [get_spec(name, specs) for name in unique]
