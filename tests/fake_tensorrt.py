"""TEST DOUBLE of the ``tensorrt`` Python module. It is NOT TensorRT and builds no engine.

TensorRT cannot be installed on our build machines or in CI, so tests put the module returned by
:func:`make_fake_tensorrt` into ``sys.modules["tensorrt"]`` to check the logic of model_pipeline.tensorrt_build:
which profile shapes, flags, workspace and timing cache it hands the builder, how it reports parser and build
failures, and how it runs a plan by tensor name. The surface follows TensorRT 10/11's Python API by name.

Its "plans" are JSON marked ``fake-tensorrt-plan`` and exist only in test temporary directories. Running one
evaluates the ONNX file it names with ONNX Runtime (plus a configurable offset, to provoke mismatches), reading
and writing :class:`HostMemory` "device" buffers, so the caller's buffer and shape handling is exercised for real.
"""

from __future__ import annotations

import enum
import json
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

PLAN_MARKER = "fake-tensorrt-plan"


@dataclass
class FakeState:
    """What the code under test did to the double, and how the double should misbehave."""

    version: str
    parser_errors: list[tuple[str, str, str]] = field(default_factory=list)  # (node name, operator, description)
    build_fails: bool = False
    output_offset: float = 0.0
    parsed_files: list[str] = field(default_factory=list)
    parsed_io_types: list[dict[str, int]] = field(default_factory=list)
    parsed_initializer_types: list[set[int]] = field(default_factory=list)
    network_flags: list[int] = field(default_factory=list)
    configs: list[Any] = field(default_factory=list)  # every IBuilderConfig created
    build_calls: int = 0
    executions: list[dict[str, tuple[int, ...]]] = field(default_factory=list)


class HostMemory:
    """ "Device" memory in host RAM for the double: pointers are dictionary keys."""

    def __init__(self) -> None:
        self.buffers: dict[int, bytearray] = {}
        self.next_pointer = 0x1000
        self.freed: list[int] = []
        self.streams_open = 0

    def alloc(self, nbytes: int) -> int:
        pointer, self.next_pointer = self.next_pointer, self.next_pointer + max(nbytes, 1) + 256
        self.buffers[pointer] = bytearray(nbytes)
        return pointer

    def free(self, pointer: int) -> None:
        del self.buffers[pointer]
        self.freed.append(pointer)

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        self.buffers[pointer][:] = np.ascontiguousarray(array).tobytes()

    def from_device(self, array: np.ndarray, pointer: int) -> None:
        array[...] = np.frombuffer(bytes(self.buffers[pointer]), dtype=array.dtype).reshape(array.shape)

    def create_stream(self) -> int:
        self.streams_open += 1
        return 7

    def synchronize(self, stream: int) -> None:
        assert stream == 7, "synchronize on a stream the double never created"

    def destroy_stream(self, stream: int) -> None:
        self.streams_open -= 1


def make_fake_tensorrt(version: str = "11.1.0.106", memory: HostMemory | None = None) -> types.ModuleType:
    """A module object standing in for ``tensorrt`` ``version``; ``module.state`` records every call."""
    major = int(version.split(".")[0])
    state = FakeState(version=version)
    memory = memory or HostMemory()
    trt = types.ModuleType("tensorrt")
    trt.__doc__ = "TEST DOUBLE of tensorrt (tests/fake_tensorrt.py), not TensorRT"
    trt.__version__ = version
    trt.state = state  # type: ignore[attr-defined]
    trt.memory = memory  # type: ignore[attr-defined]

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self) -> None:
            pass

        def log(self, severity: Severity, msg: str) -> None:
            raise NotImplementedError

    ILogger.Severity = Severity  # type: ignore[attr-defined]

    class Logger(ILogger):
        WARNING = Severity.WARNING

        def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
            super().__init__()

        def log(self, severity: Severity, msg: str) -> None:
            pass

    flags = ["TF32", "REFIT", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME"]
    if major < 11:  # TensorRT 11 removed the weak-typing precision flags
        flags += ["FP16", "BF16", "INT8"]
    BuilderFlag = enum.Enum("BuilderFlag", flags)
    MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "TACTIC_SHARED_MEMORY"])
    creation_flags = ["STRONGLY_TYPED"] if major >= 10 else []
    NetworkDefinitionCreationFlag = enum.IntEnum(
        "NetworkDefinitionCreationFlag", [*creation_flags, "PREFER_JIT_PYTHON_PLUGINS"], start=0
    )
    TensorIOMode = enum.Enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    DataType = enum.Enum("DataType", ["FLOAT", "HALF"])

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], onnx_type: int) -> None:
            self.name, self.shape, self.onnx_type = name, shape, onnx_type

    class INetworkDefinition:
        def __init__(self) -> None:
            self.inputs: list[ITensor] = []
            self.outputs: list[ITensor] = []
            self.onnx_path: str | None = None

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        @property
        def num_outputs(self) -> int:
            return len(self.outputs)

        def get_input(self, index: int) -> ITensor:
            return self.inputs[index]

        def get_output(self, index: int) -> ITensor:
            return self.outputs[index]

    class IParserError:
        def __init__(self, node_name: str, operator: str, desc: str) -> None:
            self._node_name, self._operator, self._desc = node_name, operator, desc

        def node_name(self) -> str:
            return self._node_name

        def node_operator(self) -> str:
            return self._operator

        def desc(self) -> str:
            return self._desc

        def code(self) -> int:
            return 8  # ErrorCode.kUNSUPPORTED_NODE

    def _tensors(values: Any) -> list[ITensor]:
        return [
            ITensor(
                v.name,
                tuple(d.dim_value if d.dim_value else -1 for d in v.type.tensor_type.shape.dim),
                v.type.tensor_type.elem_type,
            )
            for v in values
        ]

    class OnnxParser:
        def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
            self.network = network
            self.errors: list[IParserError] = []

        def parse_from_file(self, path: str) -> bool:
            state.parsed_files.append(path)
            model = onnx.load(path)  # a real parse of the file the code under test handed over
            onnx.checker.check_model(model)
            state.parsed_io_types.append(
                {v.name: v.type.tensor_type.elem_type for v in (*model.graph.input, *model.graph.output)}
            )
            state.parsed_initializer_types.append({t.data_type for t in model.graph.initializer})
            self.errors = [IParserError(*error) for error in state.parser_errors]
            if self.errors:
                return False
            self.network.inputs = _tensors(model.graph.input)
            self.network.outputs = _tensors(model.graph.output)
            self.network.onnx_path = path
            return True

        @property
        def num_errors(self) -> int:
            return len(self.errors)

        def get_error(self, index: int) -> IParserError:
            return self.errors[index]

    class IOptimizationProfile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = {}

        def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # TRT's names
            lo, mid, hi = tuple(min), tuple(opt), tuple(max)
            if (
                not (len(lo) == len(mid) == len(hi))
                or any(a > b for a, b in zip(lo, mid, strict=True))
                or any(a > b for a, b in zip(mid, hi, strict=True))
            ):
                raise ValueError(f"invalid profile shapes for {name}: {lo} {mid} {hi}")
            self.shapes[name] = (lo, mid, hi)

    class ITimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> bytes:
            return self.data

    class IBuilderConfig:
        def __init__(self) -> None:
            self.flags: set[Any] = set()
            self.memory_pool_limits: dict[Any, int] = {}
            self.profiles: list[IOptimizationProfile] = []
            self.timing_cache: ITimingCache | None = None
            self.timing_cache_loaded_from: bytes | None = None
            self.ignore_mismatch: bool | None = None
            self.builder_optimization_level = 3

        def set_flag(self, flag: Any) -> None:
            self.flags.add(flag)

        def get_flag(self, flag: Any) -> bool:
            return flag in self.flags

        def set_memory_pool_limit(self, pool: Any, size: int) -> None:
            self.memory_pool_limits[pool] = size

        def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
            if not profile.shapes:
                return -1
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> ITimingCache | None:
            self.timing_cache_loaded_from = bytes(data)
            if bytes(data).startswith(b"corrupt"):
                return None  # TensorRT returns a null cache for data it cannot parse
            return ITimingCache(bytes(data))

        def set_timing_cache(self, cache: ITimingCache, ignore_mismatch: bool) -> bool:
            self.timing_cache, self.ignore_mismatch = cache, ignore_mismatch
            return True

        def get_timing_cache(self) -> ITimingCache | None:
            return self.timing_cache

    class IHostMemory:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def __bytes__(self) -> bytes:
            return self.data

    class Builder:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def create_network(self, flags: int = 0) -> INetworkDefinition:
            state.network_flags.append(flags)
            return INetworkDefinition()

        def create_builder_config(self) -> IBuilderConfig:
            config = IBuilderConfig()
            state.configs.append(config)
            return config

        def create_optimization_profile(self) -> IOptimizationProfile:
            return IOptimizationProfile()

        def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
            state.build_calls += 1
            if state.build_fails:
                self.logger.log(Severity.ERROR, "Error Code 4: Internal Error (could not find any implementation)")
                return None
            if config.timing_cache is not None:  # tactic timings measured by this build land in the cache
                config.timing_cache.data += f"<timings build {state.build_calls}>".encode()
            plan = {
                "marker": PLAN_MARKER,
                "version": version,
                "onnx": network.onnx_path,
                "outputs": {t.name: list(t.shape[1:]) for t in network.outputs},
            }
            return IHostMemory(json.dumps(plan).encode())

    class IExecutionContext:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.session: Any = None

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            self.input_shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            batch = next(iter(self.input_shapes.values()))[0]
            return (batch, *self.plan["outputs"][name])

        def set_tensor_address(self, name: str, pointer: int) -> bool:
            self.addresses[name] = pointer
            return True

        def execute_async_v3(self, stream_handle: int) -> bool:
            import onnxruntime as ort

            state.executions.append(dict(self.input_shapes))
            if self.session is None:
                self.session = ort.InferenceSession(self.plan["onnx"], providers=["CPUExecutionProvider"])
            feeds = {}
            for name, shape in self.input_shapes.items():
                feeds[name] = np.empty(shape, dtype=np.float32)
                memory.from_device(feeds[name], self.addresses[name])
            names = list(self.plan["outputs"])
            for name, value in zip(names, self.session.run(names, feeds), strict=True):
                memory.to_device(self.addresses[name], value.astype(np.float32) + state.output_offset)
            return True

    class ICudaEngine:
        def __init__(self, plan: dict[str, Any], inputs: list[str]) -> None:
            self.plan, self.inputs = plan, inputs
            self.names = [*inputs, *plan["outputs"]]

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> Any:
            return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType.FLOAT

        def create_execution_context(self) -> IExecutionContext:
            return IExecutionContext(self.plan)

    class Runtime:
        def __init__(self, logger: ILogger) -> None:
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes) -> ICudaEngine | None:
            try:
                plan = json.loads(bytes(data))
            except ValueError:
                return None
            if plan.get("marker") != PLAN_MARKER or plan.get("version") != version:
                return None  # like TensorRT: a plan from another version does not deserialize
            inputs = [v.name for v in onnx.load(plan["onnx"], load_external_data=False).graph.input]
            return ICudaEngine(plan, inputs)

    def nptype(data_type: Any) -> type:
        return {DataType.FLOAT: np.float32, DataType.HALF: np.float16}[data_type]

    for name, value in {
        "ILogger": ILogger,
        "Logger": Logger,
        "BuilderFlag": BuilderFlag,
        "MemoryPoolType": MemoryPoolType,
        "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
        "TensorIOMode": TensorIOMode,
        "DataType": DataType,
        "OnnxParser": OnnxParser,
        "Builder": Builder,
        "Runtime": Runtime,
        "nptype": nptype,
    }.items():
        setattr(trt, name, value)
    return trt
