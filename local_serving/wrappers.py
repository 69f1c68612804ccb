"""Turn the pipeline's model repository into one Triton on this CPU-only machine can serve.

Each ONNX model becomes a python-backend model (generated config.pbtxt + the ONNX Runtime wrapper as model.py)
that keeps the model's name, inputs, outputs, max_batch_size and dynamic batching, and runs the same model.onnx.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from local_serving.errors import ServingRepositoryError

TEMPLATES = Path(__file__).resolve().parent / "backend_templates"
CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"
UNBATCHED_SUFFIX = "__no_dynamic_batching"


@dataclass(frozen=True)
class SourceModel:
    """One model of the pipeline's repository: its parsed config and the ONNX file of its served version."""

    name: str
    config: mc.ModelConfig
    onnx_path: Path
    version: int
    golden_path: Path | None


def read_config(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt with Triton's own schema."""
    try:
        return text_format.Parse(path.read_text(), mc.ModelConfig())
    except text_format.ParseError as error:
        raise ServingRepositoryError(f"{path} is not a valid Triton model config: {error}") from error


def discover_models(repository: Path) -> list[SourceModel]:
    """Every model directory of the repository, each with its newest version that has a model.onnx."""
    if not repository.is_dir():
        raise ServingRepositoryError(
            f"model repository {repository} does not exist; build it with the model pipeline "
            "(`make repository`) or pass --repository"
        )
    models = [_read_model(directory) for directory in sorted(repository.iterdir()) if directory.is_dir()]
    if not models:
        raise ServingRepositoryError(f"model repository {repository} holds no model directories (<model>/config.pbtxt)")
    return models


def _read_model(directory: Path) -> SourceModel:
    config_path = directory / CONFIG_FILE
    if not config_path.is_file():
        raise ServingRepositoryError(f"{directory} has no {CONFIG_FILE}")
    config = read_config(config_path)
    if config.name and config.name != directory.name:
        raise ServingRepositoryError(
            f"{config_path} names the model {config.name!r} but its directory is {directory.name!r}"
        )
    versions = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit() and (p / ONNX_FILE).is_file())
    if not versions:
        raise ServingRepositoryError(f"{directory} has no <version>/{ONNX_FILE}; only ONNX models can be served here")
    golden = directory / "golden.npz"
    return SourceModel(
        name=directory.name,
        config=config,
        onnx_path=directory / str(versions[-1]) / ONNX_FILE,
        version=versions[-1],
        golden_path=golden if golden.is_file() else None,
    )


def wrapper_config(source: mc.ModelConfig, name: str, dynamic_batching: bool = True) -> mc.ModelConfig:
    """The python-backend config for a model: same name, tensors, max_batch_size and batching; CPU instances."""
    config = mc.ModelConfig()
    config.name = name
    config.backend = "python"
    config.max_batch_size = source.max_batch_size
    if source.HasField("version_policy"):
        config.version_policy.CopyFrom(source.version_policy)
    config.input.extend(source.input)
    config.output.extend(source.output)
    if dynamic_batching and source.HasField("dynamic_batching"):
        config.dynamic_batching.CopyFrom(source.dynamic_batching)
    count = max((group.count for group in source.instance_group), default=1) or 1
    # No GPU here: every instance runs ONNX Runtime on the CPU.
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=count)
    config.model_warmup.extend(source.model_warmup)
    config.parameters["onnx_file"].string_value = ONNX_FILE
    return config


def write_config(config: mc.ModelConfig, directory: Path) -> Path:
    """Write config.pbtxt in Triton's text format."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_FILE
    path.write_text(text_format.MessageToString(config))
    return path


def write_onnx_wrapper(
    model: SourceModel, target: Path, name: str | None = None, dynamic_batching: bool = True
) -> Path:
    """Generate ``<target>/<name>/`` (config.pbtxt, <version>/model.py, <version>/model.onnx) for one model."""
    name = name or model.name
    directory = target / name
    version_dir = directory / str(model.version)
    version_dir.mkdir(parents=True, exist_ok=True)
    write_config(wrapper_config(model.config, name, dynamic_batching), directory)
    shutil.copyfile(TEMPLATES / "onnx_wrapper.py", version_dir / "model.py")
    (version_dir / ONNX_FILE).symlink_to(model.onnx_path.resolve())
    return directory


def write_serving_repository(repository: Path, target: Path, unbatched_variants: bool = False) -> list[str]:
    """Wrap every model of ``repository`` into ``target``; optionally add a copy without dynamic batching.

    Returns the served model names. The variants (``<name>__no_dynamic_batching``) let one Triton run measure
    throughput with and without the batcher.
    """
    served = []
    for model in discover_models(repository):
        write_onnx_wrapper(model, target)
        served.append(model.name)
        if unbatched_variants and model.config.HasField("dynamic_batching"):
            write_onnx_wrapper(model, target, model.name + UNBATCHED_SUFFIX, dynamic_batching=False)
            served.append(model.name + UNBATCHED_SUFFIX)
    return served


def write_sleeping_model(
    target: Path, name: str, sleep_ms: float, max_batch_size: int = 8, max_queue_delay_us: int = 0
) -> Path:
    """Generate a python-backend model that sleeps ``sleep_ms`` per execution and echoes FP32 ``input``."""
    config = mc.ModelConfig(name=name, backend="python", max_batch_size=max_batch_size)
    config.input.add(name="input", data_type=mc.TYPE_FP32, dims=[1])
    config.output.add(name="output", data_type=mc.TYPE_FP32, dims=[1])
    if max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    config.parameters["sleep_ms"].string_value = str(sleep_ms)
    directory = target / name
    write_config(config, directory)
    (directory / "1").mkdir(exist_ok=True)
    shutil.copyfile(TEMPLATES / "sleeping.py", directory / "1" / "model.py")
    return directory
