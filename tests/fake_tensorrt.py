"""TEST DOUBLE of the ``tensorrt`` Python module. It is NOT TensorRT and builds no engine.

TensorRT cannot be installed on our build machines or in CI, so tests put the module returned by
:func:`make_fake_tensorrt` into ``sys.modules["tensorrt"]`` to check the logic of model_pipeline.tensorrt_build:
which profile shapes, flags, workspace and timing cache it hands the builder, how it reports parser and build
failures, and how it runs a plan by tensor name. The surface follows TensorRT 10/11's Python API by name, with
TensorRT's DataType values; like TensorRT it refuses to build when the profile does not cover an input's dynamic
dims (-1, from ONNX dim names) and refuses input shapes outside the profile at run time.

Its "plans" are JSON marked ``fake-tensorrt-plan`` and exist only in test temporary directories. Running one
evaluates the ONNX file it names with ONNX Runtime (plus a configurable offset on float outputs, to provoke
mismatches), reading and writing :class:`HostMemory` "device" buffers in the engine's tensor types, so the
caller's buffer, type and shape handling is exercised for real.
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

    def profile_shapes(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """The (min, opt, max) shapes per input of the one profile the last build config was given."""
        (profile,) = self.configs[-1].profiles
        return dict(profile.shapes)


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
    host = memory or HostMemory()
    trt = types.ModuleType("tensorrt")
    trt.__doc__ = "TEST DOUBLE of tensorrt (tests/fake_tensorrt.py), not TensorRT"
    trt.__version__ = version
    trt.state = state  # type: ignore[attr-defined]
    trt.memory = host  # type: ignore[attr-defined]

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
    DataType = enum.IntEnum(  # TensorRT's values (NvInferRuntimeBase.h)
        "DataType", {"FLOAT": 0, "HALF": 1, "INT8": 2, "INT32": 3, "BOOL": 4, "UINT8": 5, "BF16": 7, "INT64": 8}
    )
    numpy_types = {
        DataType.FLOAT: np.float32,
        DataType.HALF: np.float16,
        DataType.INT8: np.int8,
        DataType.INT32: np.int32,
        DataType.BOOL: np.bool_,
        DataType.UINT8: np.uint8,
        DataType.INT64: np.int64,
    }
    onnx_types = {
        onnx.TensorProto.FLOAT: DataType.FLOAT,
        onnx.TensorProto.FLOAT16: DataType.HALF,
        onnx.TensorProto.INT8: DataType.INT8,
        onnx.TensorProto.INT32: DataType.INT32,
        onnx.TensorProto.BOOL: DataType.BOOL,
        onnx.TensorProto.UINT8: DataType.UINT8,
        onnx.TensorProto.BFLOAT16: DataType.BF16,
        onnx.TensorProto.INT64: DataType.INT64,
    }

    def nptype(data_type: Any) -> type:
        if data_type not in numpy_types:
            raise TypeError(f"could not resolve TensorRT datatype {data_type} to an equivalent numpy datatype")
        return numpy_types[data_type]

    class ITensor:
        def __init__(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
            self.name, self.shape, self.dtype = name, shape, dtype

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

    def _tensors(values: Any, weights: set[str]) -> list[ITensor]:
        return [
            ITensor(
                v.name,
                tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim),
                onnx_types[v.type.tensor_type.elem_type],
            )
            for v in values
            if v.name not in weights
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
            weights = {t.name for t in model.graph.initializer}
            self.network.inputs = _tensors(model.graph.input, weights)
            self.network.outputs = _tensors(model.graph.output, set())
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
            problem = _profile_problem(network, config)
            if problem:
                self.logger.log(Severity.ERROR, problem)
                return None
            if config.timing_cache is not None:  # tactic timings measured by this build land in the cache
                config.timing_cache.data += f"<timings build {state.build_calls}>".encode()
            plan = {
                "marker": PLAN_MARKER,
                "version": version,
                "onnx": network.onnx_path,
                "inputs": {t.name: int(t.dtype) for t in network.inputs},
                "outputs": {t.name: int(t.dtype) for t in network.outputs},
                "profile": {name: [list(s) for s in shapes] for name, shapes in config.profiles[0].shapes.items()},
            }
            return IHostMemory(json.dumps(plan).encode())

    def _profile_problem(network: INetworkDefinition, config: IBuilderConfig) -> str | None:
        """What TensorRT would refuse: no single profile, or one that does not fit an input's dims."""
        if len(config.profiles) != 1:
            return f"Error Code 4: the double expects one optimization profile, got {len(config.profiles)}"
        shapes = config.profiles[0].shapes
        for tensor in network.inputs:
            given = shapes.get(tensor.name)
            if given is None:
                if -1 in tensor.shape:
                    return f"Error Code 4: input '{tensor.name}' has dynamic dimensions but no profile shapes"
                continue
            fits = all(
                len(s) == len(tensor.shape) and all(d in (-1, n) for d, n in zip(tensor.shape, s, strict=True))
                for s in given
            )
            if not fits:
                return f"Error Code 4: profile shapes {given} of '{tensor.name}' do not fit its dims {tensor.shape}"
        return None

    class IExecutionContext:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.input_shapes: dict[str, tuple[int, ...]] = {}
            self.addresses: dict[str, int] = {}
            self.session: Any = None

        def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
            low, _, high = self.plan["profile"][name]
            if len(shape) != len(low) or any(not lo <= n <= hi for lo, n, hi in zip(low, shape, high, strict=True)):
                return False  # TensorRT logs an error and returns False for a shape outside the profile
            self.input_shapes[name] = tuple(shape)
            return True

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            if name in self.input_shapes:
                return self.input_shapes[name]
            zeros: dict[str, np.ndarray] = {n: np.zeros(s, self._type(n)) for n, s in self.input_shapes.items()}
            return tuple(self._run(zeros)[name].shape)  # TensorRT infers it; running the graph is simpler

        def set_tensor_address(self, name: str, pointer: int) -> bool:
            self.addresses[name] = pointer
            return True

        def _type(self, name: str) -> type:
            return nptype(DataType({**self.plan["inputs"], **self.plan["outputs"]}[name]))

        def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import onnxruntime as ort

            if self.session is None:
                self.session = ort.InferenceSession(self.plan["onnx"], providers=["CPUExecutionProvider"])
            names = list(self.plan["outputs"])
            return dict(zip(names, self.session.run(names, feeds), strict=True))

        def execute_async_v3(self, stream_handle: int) -> bool:
            state.executions.append(dict(self.input_shapes))
            feeds: dict[str, np.ndarray] = {}
            for name, shape in self.input_shapes.items():
                feeds[name] = np.empty(shape, dtype=self._type(name))
                host.from_device(feeds[name], self.addresses[name])
            for name, value in self._run(feeds).items():
                if np.issubdtype(value.dtype, np.floating):
                    value = value + state.output_offset
                host.to_device(self.addresses[name], value.astype(self._type(name)))
            return True

    class ICudaEngine:
        def __init__(self, plan: dict[str, Any]) -> None:
            self.plan = plan
            self.names = [*plan["inputs"], *plan["outputs"]]

        @property
        def num_io_tensors(self) -> int:
            return len(self.names)

        def get_tensor_name(self, index: int) -> str:
            return self.names[index]

        def get_tensor_mode(self, name: str) -> Any:
            return TensorIOMode.INPUT if name in self.plan["inputs"] else TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name: str) -> Any:
            return DataType({**self.plan["inputs"], **self.plan["outputs"]}[name])

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
            return ICudaEngine(plan)

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
