"""TensorRT engines from the exported ONNX: one optimization profile, FP16, a reused timing cache, golden checks.

The profile covers the batch and every dynamic axis of every input at the spec's min, opt and max shapes.
``tensorrt`` is imported lazily: without it (or without a CUDA GPU) :func:`tensorrt_unavailable_reason` says why
and the caller skips the engine. A plan is accepted only after it reproduced golden.npz on the GPU within the
spec's engine tolerance.
FP16 on TensorRT 10 is the builder flag; TensorRT 11 removed it (networks are strongly typed), so there the
build parses an FP16 copy of the ONNX graph whose inputs and outputs stay FP32 (Triton's config is unchanged).
"""

from __future__ import annotations

import copy
import ctypes
import importlib
import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import onnx
from onnx import numpy_helper

from model_pipeline.errors import EngineBuildError, EngineCompatibilityError, ModelValidationError
from model_pipeline.release import TRITON_TENSORRT_VERSION
from model_pipeline.specs import POINTS, ModelSpec, Tolerance
from model_pipeline.verification import Difference, check_against, onnx_session, read_golden, run_onnx

DEFAULT_WORKSPACE_BYTES = 2 << 30
DEFAULT_TIMING_CACHE_DIR = Path("build") / "tensorrt-timing-cache"
_FP16_MAX = float(np.finfo(np.float16).max)
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------
# Availability and version compatibility


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device engines are built for; TensorRT plans only run on the compute capability they target."""

    name: str
    compute_capability: str  # "9.0" for H100


def import_tensorrt() -> ModuleType:
    """The ``tensorrt`` module, or EngineBuildError saying why it cannot be imported."""
    try:
        return importlib.import_module("tensorrt")
    except Exception as exc:  # a broken wheel stub raises anything from ImportError to RuntimeError
        raise EngineBuildError(f"tensorrt not importable: {type(exc).__name__}: {exc}") from exc


class _CudaDriver:
    """The few CUDA driver API calls we need, through ctypes: no CUDA Python package is required."""

    def __init__(self) -> None:
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as exc:
            raise EngineBuildError(f"no CUDA GPU: the NVIDIA driver library libcuda.so.1 is missing ({exc})") from exc
        self.lib.cuMemcpyHtoD_v2.argtypes = [ctypes.c_uint64, ctypes.c_void_p, ctypes.c_size_t]
        self.lib.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_size_t]
        self.lib.cuMemFree_v2.argtypes = [ctypes.c_uint64]
        self.lib.cuStreamSynchronize.argtypes = [ctypes.c_void_p]
        self.lib.cuStreamDestroy_v2.argtypes = [ctypes.c_void_p]
        self.call("cuInit", 0)

    def call(self, function: str, *args: Any) -> None:
        status = getattr(self.lib, function)(*args)
        if status != 0:
            message = ctypes.c_char_p()
            self.lib.cuGetErrorString(status, ctypes.byref(message))
            text = message.value.decode() if message.value else "unknown error"
            raise EngineBuildError(f"no CUDA GPU: {function} failed with CUDA error {status} ({text})")

    def device(self, index: int = 0) -> ctypes.c_int:
        count = ctypes.c_int()
        self.call("cuDeviceGetCount", ctypes.byref(count))
        if count.value <= index:
            raise EngineBuildError(f"no CUDA GPU: the driver reports {count.value} devices, need index {index}")
        device = ctypes.c_int()
        self.call("cuDeviceGet", ctypes.byref(device), index)
        return device

    def gpu_info(self, index: int = 0) -> GpuInfo:
        device = self.device(index)
        major, minor, name = ctypes.c_int(), ctypes.c_int(), ctypes.create_string_buffer(256)
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76 (cuda.h).
        self.call("cuDeviceGetAttribute", ctypes.byref(major), 75, device)
        self.call("cuDeviceGetAttribute", ctypes.byref(minor), 76, device)
        self.call("cuDeviceGetName", name, 256, device)
        return GpuInfo(name=name.value.decode(), compute_capability=f"{major.value}.{minor.value}")


def detect_gpu() -> GpuInfo:
    """Name and compute capability of CUDA device 0; EngineBuildError("no CUDA GPU: ...") without one."""
    return _CudaDriver().gpu_info()


def tensorrt_unavailable_reason() -> str | None:
    """Why no engine can be built here ("tensorrt not importable: ...", "no CUDA GPU: ..."), or None."""
    try:
        import_tensorrt()
        detect_gpu()
    except EngineBuildError as exc:
        return str(exc)
    return None


def _version_parts(version: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise EngineCompatibilityError(f"TensorRT version '{version}' is not dotted numbers such as 11.1.0")
    return tuple(int(part) for part in version.split("."))


def check_plan_compatible(plan_trt_version: str, required_trt_version: str = TRITON_TENSORRT_VERSION) -> None:
    """Raise unless a plan built by ``plan_trt_version`` loads in a Triton that ships ``required_trt_version``.

    Plans load only in the exact TensorRT release that built them; the comparison covers as many components
    as ``required_trt_version`` gives ("11.1.0" accepts 11.1.0.106, refuses 11.1.1 and 10.14.1).
    """
    required = _version_parts(required_trt_version)
    built = _version_parts(plan_trt_version)
    if built[: len(required)] != required:
        raise EngineCompatibilityError(
            f"TensorRT plan built with TensorRT {plan_trt_version}, but the Triton image ships TensorRT "
            f"{required_trt_version}; a plan only loads in the exact version that built it. Build it in "
            f"the matching TensorRT container (model_pipeline/release.py TENSORRT_IMAGE)."
        )


def _major(trt: ModuleType) -> int:
    return _version_parts(str(trt.__version__))[0]


# ---------------------------------------------------------------------------------------------------------------
# FP16 ONNX for strongly typed TensorRT (11+)


def _tensor_to_fp16(tensor: onnx.TensorProto) -> onnx.TensorProto:
    # Values past FP16's range would become inf; saturate them as TensorRT's own FP16 conversion does.
    values = np.clip(numpy_helper.to_array(tensor).astype(np.float32), -_FP16_MAX, _FP16_MAX)
    return numpy_helper.from_array(values.astype(np.float16), tensor.name)


def _convert_node_constants(node: onnx.NodeProto) -> None:
    for attribute in node.attribute:
        if attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise EngineBuildError(
                f"FP16 conversion does not handle subgraphs; node '{node.name}' ({node.op_type}) has one"
            )
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == onnx.TensorProto.FLOAT:
            attribute.t.CopyFrom(_tensor_to_fp16(attribute.t))
        if node.op_type == "Cast" and attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
            attribute.i = onnx.TensorProto.FLOAT16


def _rename_uses(nodes: list[onnx.NodeProto], old: str, new: str) -> None:
    for node in nodes:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of ``model``: FP16 weights and compute, FP32 graph inputs and outputs (keep_io_types)."""
    converted = copy.deepcopy(model)
    graph = converted.graph
    nodes = list(graph.node)
    for initializer in graph.initializer:
        if initializer.data_type == onnx.TensorProto.FLOAT:
            initializer.CopyFrom(_tensor_to_fp16(initializer))
    for node in nodes:
        _convert_node_constants(node)
    weights = {initializer.name for initializer in graph.initializer}
    cast_in, cast_out = [], []
    for value in graph.input:
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and value.name not in weights:
            _rename_uses(nodes, value.name, f"{value.name}__fp16")
            cast_in.append(
                onnx.helper.make_node(
                    "Cast",
                    [value.name],
                    [f"{value.name}__fp16"],
                    name=f"{value.name}__to_fp16",
                    to=onnx.TensorProto.FLOAT16,
                )
            )
    for value in graph.output:
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            _rename_uses(nodes, value.name, f"{value.name}__fp16")
            cast_out.append(
                onnx.helper.make_node(
                    "Cast",
                    [f"{value.name}__fp16"],
                    [value.name],
                    name=f"{value.name}__to_fp32",
                    to=onnx.TensorProto.FLOAT,
                )
            )
    graph.ClearField("node")
    graph.node.extend([*cast_in, *nodes, *cast_out])
    graph.ClearField("value_info")  # stale FP32 annotations; shape inference below recomputes them
    try:
        return onnx.shape_inference.infer_shapes(converted, check_type=True, strict_mode=True)
    except onnx.shape_inference.InferenceError as exc:
        raise EngineBuildError(f"FP16 copy of the ONNX graph is not type-consistent: {exc}") from exc


def write_fp16_onnx(
    source: Path, target: Path, golden_path: Path | None, tolerance: Tolerance, model: str
) -> dict[str, Difference]:
    """Write the FP16 copy of ``source`` and check it with ONNX Runtime (CPU) against the golden outputs.

    Returns the worst difference per output; ModelValidationError when one exceeds ``tolerance``.
    """
    converted = convert_to_fp16(onnx.load(str(source)))
    try:
        onnx.checker.check_model(converted, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise EngineBuildError(f"FP16 copy of {source} fails onnx.checker: {exc}") from exc
    onnx.save(converted, str(target))
    if golden_path is None:
        return {}
    session = onnx_session(target)
    what = f"the FP16 copy of {source.name}"
    return check_against(what, read_golden(golden_path), lambda feeds: run_onnx(session, feeds), tolerance, model)


# ---------------------------------------------------------------------------------------------------------------
# Engine build


ProfileShapes = tuple[tuple[int, ...], ...]  # an input's (min, opt, max) shapes


@dataclass(frozen=True)
class EngineBuildOptions:
    """Builder settings that do not belong to the model spec."""

    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES
    timing_cache_dir: Path = DEFAULT_TIMING_CACHE_DIR
    builder_optimization_level: int | None = None  # TensorRT's default is 3; 0-5
    required_tensorrt_version: str | None = TRITON_TENSORRT_VERSION  # None: accept whatever is installed


@dataclass(frozen=True)
class EngineBuildResult:
    """A verified plan and what it was built with: it only runs on this TensorRT version and compute capability."""

    plan_path: Path
    tensorrt_version: str
    compute_capability: str
    gpu_name: str
    precision: str
    fp16_mode: str  # "builder_flag" (TRT 10) | "fp16_onnx" (TRT 11+) | "none"
    profile_shapes: dict[str, ProfileShapes]  # per input
    timing_cache_path: Path
    timing_cache_reused: bool
    build_seconds: float
    differences: dict[str, Difference]  # per output, the worst over the golden cases


def profile_shapes(spec: ModelSpec) -> dict[str, ProfileShapes]:
    """Each input's min, opt and max shape: the batch (when there is one) and every declared axis."""
    return {t.name: tuple(spec.shape(t, point) for point in POINTS) for t in spec.inputs}


def timing_cache_path(cache_dir: Path, tensorrt_version: str, gpu: GpuInfo) -> Path:
    """Timing cache file for one TensorRT version and GPU model: a cache from another is refused by TensorRT."""
    gpu_slug = re.sub(r"[^a-z0-9]+", "-", gpu.name.lower()).strip("-")
    return cache_dir / f"trt-{tensorrt_version}_sm{gpu.compute_capability.replace('.', '')}_{gpu_slug}.cache"


def _fp16_mode(trt: ModuleType, precision: str) -> str:
    if precision != "fp16":
        return "none"
    if _major(trt) < 11 and hasattr(trt.BuilderFlag, "FP16"):
        return "builder_flag"
    return "fp16_onnx"


def _make_logger(trt: ModuleType) -> Any:
    class CapturingLogger(trt.ILogger):  # type: ignore[name-defined]
        """Keeps warnings and errors so a failed build can say what TensorRT reported."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= int(trt.ILogger.Severity.WARNING):  # 0 internal error .. 4 verbose
                self.messages.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    return CapturingLogger()


def _parse(trt: ModuleType, network: Any, trt_logger: Any, onnx_path: Path, model_name: str) -> None:
    parser = trt.OnnxParser(network, trt_logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        errors.append(f"node '{error.node_name()}' ({error.node_operator()}): {error.desc()}")
    raise EngineBuildError(
        f"model '{model_name}': TensorRT's ONNX parser rejected {onnx_path.name}: " + "; ".join(errors)
    )


def _check_network_io(network: Any, spec: ModelSpec) -> None:
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    wanted_inputs, wanted_outputs = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
    if inputs != wanted_inputs or outputs != wanted_outputs:
        raise EngineBuildError(
            f"model '{spec.name}': the parsed network has inputs {inputs} and outputs {outputs}; the spec "
            f"(and Triton's config) expects inputs {wanted_inputs} and outputs {wanted_outputs}"
        )


def _add_profile(builder: Any, config: Any, spec: ModelSpec) -> None:
    profile = builder.create_optimization_profile()
    shapes = profile_shapes(spec)
    for name, (low, opt, high) in shapes.items():
        profile.set_shape(name, low, opt, high)
    if config.add_optimization_profile(profile) < 0:
        described = {name: [list(shape) for shape in points] for name, points in shapes.items()}
        raise EngineBuildError(f"model '{spec.name}': TensorRT refused the optimization profile {described}")


def _configure(trt: ModuleType, config: Any, options: EngineBuildOptions, fp16_mode: str) -> None:
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    if options.builder_optimization_level is not None:
        config.builder_optimization_level = options.builder_optimization_level
    if fp16_mode == "builder_flag":
        config.set_flag(trt.BuilderFlag.FP16)


def _load_timing_cache(config: Any, path: Path) -> bool:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None and data:  # an unreadable cache only costs build time: start a fresh one
        logger.warning("TensorRT could not read the timing cache %s; starting an empty one", path)
        data, cache = b"", config.create_timing_cache(b"")
    # ignore_mismatch=False: the file name already pins version and GPU; a mismatch means a broken file.
    config.set_timing_cache(cache, ignore_mismatch=False)
    return bool(data)


def _save_timing_cache(config: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(bytes(config.get_timing_cache().serialize()))
    partial.replace(path)


def _serialize(
    trt: ModuleType, onnx_path: Path, spec: ModelSpec, options: EngineBuildOptions, fp16_mode: str, cache_path: Path
) -> tuple[bytes, bool]:
    trt_logger = _make_logger(trt)
    try:
        builder = trt.Builder(trt_logger)
    except TypeError as exc:  # pybind returns nullptr when CUDA cannot be initialised
        raise EngineBuildError(f"no CUDA GPU: TensorRT could not create a builder ({exc})") from exc
    network = builder.create_network(0)  # explicit batch always (TRT 10+); strongly typed always on TRT 11
    _parse(trt, network, trt_logger, onnx_path, spec.name)
    _check_network_io(network, spec)
    config = builder.create_builder_config()
    _configure(trt, config, options, fp16_mode)
    _add_profile(builder, config, spec)
    reused = _load_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = "; ".join(trt_logger.messages[-5:]) or "no message from TensorRT"
        raise EngineBuildError(f"model '{spec.name}': TensorRT failed to build the engine: {detail}")
    _save_timing_cache(config, cache_path)
    return bytes(plan), reused


def build_tensorrt_engine(
    onnx_path: str | Path,
    spec: ModelSpec,
    plan_path: str | Path,
    golden_path: str | Path,
    options: EngineBuildOptions | None = None,
    device: DeviceMemory | None = None,
) -> EngineBuildResult:
    """Build ``spec``'s engine from ``onnx_path`` and write ``plan_path`` only once it matches the golden outputs.

    Call :func:`tensorrt_unavailable_reason` first: without TensorRT or a GPU this raises EngineBuildError.
    """
    onnx_path, plan_path, golden_path = Path(onnx_path), Path(plan_path), Path(golden_path)
    options = options or EngineBuildOptions()
    trt = import_tensorrt()
    version = str(trt.__version__)
    if options.required_tensorrt_version is not None:
        check_plan_compatible(version, options.required_tensorrt_version)
    gpu = detect_gpu()
    tolerance = spec.engine_tolerance
    fp16_mode = _fp16_mode(trt, spec.precision)
    cache_path = timing_cache_path(options.timing_cache_dir, version, gpu)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"trt-{spec.name}-") as scratch:
        source = onnx_path
        if fp16_mode == "fp16_onnx":
            source = Path(scratch) / "model.fp16.onnx"
            write_fp16_onnx(onnx_path, source, golden_path, tolerance, spec.name)
        plan, reused = _serialize(trt, source, spec, options, fp16_mode, cache_path)
        candidate = Path(scratch) / "model.plan"
        candidate.write_bytes(plan)
        diffs = verify_engine(candidate, golden_path, tolerance, spec.name, device=device)
        plan_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(candidate, plan_path)  # only a verified plan reaches the repository
    return EngineBuildResult(
        plan_path=plan_path,
        tensorrt_version=version,
        compute_capability=gpu.compute_capability,
        gpu_name=gpu.name,
        precision=spec.precision,
        fp16_mode=fp16_mode,
        profile_shapes=profile_shapes(spec),
        timing_cache_path=cache_path,
        timing_cache_reused=reused,
        build_seconds=time.perf_counter() - started,
        differences=diffs,
    )


# ---------------------------------------------------------------------------------------------------------------
# Engine verification on the GPU


class DeviceMemory(Protocol):
    """Device buffers and a stream for running an engine; CUDA in production, host memory in the test double."""

    def alloc(self, nbytes: int) -> int: ...
    def free(self, pointer: int) -> None: ...
    def to_device(self, pointer: int, array: np.ndarray) -> None: ...
    def from_device(self, array: np.ndarray, pointer: int) -> None: ...
    def create_stream(self) -> int: ...
    def synchronize(self, stream: int) -> None: ...
    def destroy_stream(self, stream: int) -> None: ...


class CudaMemory:
    """DeviceMemory on CUDA device 0 through the driver API, sharing the primary context with TensorRT."""

    def __init__(self) -> None:
        self.driver = _CudaDriver()
        context = ctypes.c_void_p()
        self.driver.call("cuDevicePrimaryCtxRetain", ctypes.byref(context), self.driver.device())
        self.driver.call("cuCtxSetCurrent", context)

    def alloc(self, nbytes: int) -> int:
        pointer = ctypes.c_uint64()
        self.driver.call("cuMemAlloc_v2", ctypes.byref(pointer), ctypes.c_size_t(max(nbytes, 1)))
        return pointer.value

    def free(self, pointer: int) -> None:
        self.driver.call("cuMemFree_v2", ctypes.c_uint64(pointer))

    def to_device(self, pointer: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        self.driver.call("cuMemcpyHtoD_v2", ctypes.c_uint64(pointer), data.ctypes.data, data.nbytes)

    def from_device(self, array: np.ndarray, pointer: int) -> None:
        self.driver.call("cuMemcpyDtoH_v2", array.ctypes.data, ctypes.c_uint64(pointer), array.nbytes)

    def create_stream(self) -> int:
        stream = ctypes.c_void_p()
        self.driver.call("cuStreamCreate", ctypes.byref(stream), 0)
        return stream.value or 0

    def synchronize(self, stream: int) -> None:
        self.driver.call("cuStreamSynchronize", ctypes.c_void_p(stream))

    def destroy_stream(self, stream: int) -> None:
        self.driver.call("cuStreamDestroy_v2", ctypes.c_void_p(stream))


def _bind_input(trt: ModuleType, engine: Any, context: Any, name: str, array: np.ndarray) -> np.ndarray:
    if not context.set_input_shape(name, tuple(array.shape)):
        raise ModelValidationError(
            f"the engine refused input '{name}' of shape {list(array.shape)}: outside its optimization profile"
        )
    # The engine's own type: TensorRT before 10 binds INT64 token ids as INT32.
    return np.ascontiguousarray(array, dtype=trt.nptype(engine.get_tensor_dtype(name)))


def _output_buffer(trt: ModuleType, engine: Any, context: Any, name: str) -> np.ndarray:
    shape = tuple(context.get_tensor_shape(name))
    if any(size < 0 for size in shape):
        raise ModelValidationError(
            f"output '{name}' has the data-dependent shape {list(shape)}, which the engine check cannot size"
        )
    return np.empty(shape, dtype=trt.nptype(engine.get_tensor_dtype(name)))


def _run_case(
    trt: ModuleType, engine: Any, context: Any, device: DeviceMemory, inputs: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    if sorted(input_names) != sorted(inputs):
        raise ModelValidationError(f"engine inputs {input_names} do not match the golden inputs {sorted(inputs)}")
    host = {name: _bind_input(trt, engine, context, name, inputs[name]) for name in input_names}
    outputs = {name: _output_buffer(trt, engine, context, name) for name in names if name not in host}
    host.update(outputs)
    pointers = {name: device.alloc(array.nbytes) for name, array in host.items()}
    stream = device.create_stream()
    try:
        for name in names:
            context.set_tensor_address(name, pointers[name])
        for name in input_names:
            device.to_device(pointers[name], host[name])
        if not context.execute_async_v3(stream):
            raise ModelValidationError("TensorRT execute_async_v3 reported a failure")
        device.synchronize(stream)
        for name, array in outputs.items():
            device.from_device(array, pointers[name])
        return outputs
    finally:
        device.destroy_stream(stream)
        for pointer in pointers.values():
            device.free(pointer)


def verify_engine(
    plan_path: str | Path,
    golden_npz: str | Path,
    tolerance: Tolerance,
    model: str,
    device: DeviceMemory | None = None,
) -> dict[str, Difference]:
    """Run the plan on every golden case by tensor name; the worst difference per output, or ModelValidationError."""
    trt = import_tensorrt()
    device = device or CudaMemory()
    plan_path = Path(plan_path)
    runtime = trt.Runtime(_make_logger(trt))
    engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
    if engine is None:
        raise EngineCompatibilityError(
            f"{plan_path} cannot be deserialized by TensorRT {trt.__version__} on this GPU (built by another "
            "TensorRT version or for another compute capability?)"
        )
    context = engine.create_execution_context()

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _run_case(trt, engine, context, device, feeds)

    return check_against("the TensorRT engine", read_golden(golden_npz), run, tolerance, model)
