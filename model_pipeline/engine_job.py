"""Build one model's TensorRT engine inside a published repository: the in-cluster engine-build Job's work.

The Job runs in the TensorRT container that matches the Triton image, on a GPU node like the ones Triton uses.
It downloads the model's ONNX, golden file and config from ``s3://bucket/prefix/<digest>/`` and derives the spec
from the ONNX graph and the request (the stack entry's batch and axis bounds, precision and tolerance, passed as
flags), as the build does. It builds the engine with :mod:`model_pipeline.tensorrt_build`, which accepts a plan
only once it reproduces golden.npz within the tolerance, then uploads ``model.plan``, the config switched to
``tensorrt_plan`` and an ``engine.json`` record. Until the config switch the published ONNX Runtime config stays
valid, so the repository is loadable at every moment.
A repository whose plan was already built by this TensorRT for this GPU is left as it is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_pipeline.derive import derive_spec
from model_pipeline.digest import MANIFEST_FILE, file_sha256
from model_pipeline.entry import ModelEntry
from model_pipeline.errors import EngineBuildError, PublishError
from model_pipeline.specs import POINTS, Bounds, ModelSpec

if TYPE_CHECKING:
    from model_pipeline.tensorrt_build import EngineBuildResult

ENGINE_RECORD_FILE = "engine.json"
_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<prefix>.+?)/?$")


@dataclass(frozen=True)
class EngineJobRequest:
    """What one Job builds: which model of which published repository, with the stack entry's engine settings."""

    repository: str  # s3://bucket/prefix/<digest>
    model: str
    precision: str = "fp16"
    batch: tuple[int, int, int] | None = None  # None: the default batch, or a model without a batch dim
    axes: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # min/opt/max of each dynamic axis, by ONNX dim name
    tolerance: tuple[float, float] | None = None  # (atol, rtol); None: the precision's default
    endpoint_url: str | None = None
    region: str | None = None


@dataclass
class EngineJobResult:
    """What the Job did; ``already_built`` when an engine for this TensorRT and GPU was there."""

    model: str
    keys_written: list[str]
    already_built: bool = False
    record: dict[str, Any] = dataclasses.field(default_factory=dict)


def split_repository_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix/digest`` -> (bucket, "prefix/digest")."""
    match = _S3_URI.match(uri)
    if not match:
        raise PublishError(f"repository '{uri}' must be s3://BUCKET/PREFIX/DIGEST (the published repository)")
    return match.group("bucket"), match.group("prefix")


def job_entry(request: EngineJobRequest, source: str) -> ModelEntry:
    """The stack entry the request stands for: a TensorRT model brought as the published ONNX ``source``."""
    low, opt, high = request.batch or (None, None, None)
    atol, rtol = request.tolerance or (None, None)
    return ModelEntry(
        name=request.model,
        source=source,
        backend="tensorrt",
        precision=request.precision,
        batch_min=low,
        batch_opt=opt,
        batch_max=high,
        axes=tuple((name, Bounds(*bounds)) for name, bounds in request.axes),
        atol=atol,
        rtol=rtol,
    )


def job_spec(request: EngineJobRequest, onnx_path: Path) -> ModelSpec:
    """The model's spec, derived from the published ONNX graph and the request as the build derives it."""
    return derive_spec(job_entry(request, onnx_path.name), onnx_path)


class _Store:
    """The few S3 calls the Job makes, each failure turned into one PublishError."""

    def __init__(self, request: EngineJobRequest, client: Any | None) -> None:
        from model_pipeline.publish import S3Location, make_s3_client

        bucket, self.root = split_repository_uri(request.repository)
        self.location = S3Location(bucket, "", endpoint_url=request.endpoint_url, region=request.region)
        self.client = client if client is not None else make_s3_client(self.location)

    def key(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def download(self, relative: str, target: Path) -> Path:
        from model_pipeline.publish import describe_s3_error

        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.location.bucket, self.key(relative), str(target))
        except Exception as exc:  # botocore's ClientError, boto3's transfer errors
            raise describe_s3_error(exc, self.location, f"download {self.key(relative)}") from exc
        return target

    def read_json(self, relative: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        from model_pipeline.publish import describe_s3_error

        try:
            body = self.client.get_object(Bucket=self.location.bucket, Key=self.key(relative))["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise describe_s3_error(exc, self.location, f"read {self.key(relative)}") from exc
        return dict(json.loads(body))

    def upload(self, relative: str, body: bytes, content_type: str) -> str:
        import hashlib

        from model_pipeline.publish import SHA256_METADATA_KEY, describe_s3_error

        key = self.key(relative)
        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata={SHA256_METADATA_KEY: hashlib.sha256(body).hexdigest()},
            )
        except Exception as exc:
            raise describe_s3_error(exc, self.location, f"upload {key}") from exc
        return key


def _tensorrt_config(published_config: Path, spec: ModelSpec, record: dict[str, Any]) -> str:
    """The published config with the platform switched to ``tensorrt_plan``, checked like the pipeline checks it."""
    from google.protobuf import text_format

    from model_pipeline.release import TRITON_TENSORRT_VERSION
    from model_pipeline.triton_config import check_config_against_plan, load_config, validate_config

    config = load_config(published_config)
    config.platform = "tensorrt_plan"
    config.ClearField("backend")
    validate_config(config, spec.name)
    entry = {"tensorrt": {"status": "built", "version": record["tensorrt_version"]}, "profile": record["profile"]}
    check_config_against_plan(config, entry, TRITON_TENSORRT_VERSION)
    header = (
        f"# Switched to tensorrt_plan by the engine-build Job (TensorRT {record['tensorrt_version']}, "
        f"sm{record['compute_capability'].replace('.', '')}); see {ENGINE_RECORD_FILE}\n"
    )
    return header + text_format.MessageToString(config, as_utf8=True)


def _already_built(existing: dict[str, Any] | None, onnx_sha256: str, trt_version: str, capability: str) -> bool:
    """The record is written after the config switch, so its presence means the whole model was switched."""
    wanted = {"onnx_sha256": onnx_sha256, "tensorrt_version": trt_version, "compute_capability": capability}
    return existing is not None and all(existing.get(key) == value for key, value in wanted.items())


def _published_version(store: _Store, model: str) -> str:
    """The model's version directory, from the published manifest; PublishError for a model it does not hold."""
    models = (store.read_json(MANIFEST_FILE) or {}).get("models", {})
    if model not in models:
        raise PublishError(f"model '{model}' is not in the published repository; it holds {sorted(models)}")
    return str(models[model]["version"])


def engine_record(spec: ModelSpec, result: EngineBuildResult, onnx_sha256: str) -> dict[str, Any]:
    """``engine.json``: what the plan was built from, by which TensorRT for which GPU, and how close it came."""
    return {
        "model": spec.name,
        "onnx_sha256": onnx_sha256,
        "plan_sha256": file_sha256(result.plan_path),
        "tensorrt_version": result.tensorrt_version,
        "compute_capability": result.compute_capability,
        "gpu": result.gpu_name,
        "precision": result.precision,
        "fp16_mode": result.fp16_mode,
        **spec.profile_record(),
        "shapes": {
            name: dict(zip(POINTS, map(list, shapes), strict=True)) for name, shapes in result.profile_shapes.items()
        },
        "differences": {name: d.to_dict() for name, d in result.differences.items()},
        "build_seconds": round(result.build_seconds, 1),
    }


def build_engine_job(
    request: EngineJobRequest, work_dir: Path, client: Any | None = None, device: Any | None = None
) -> EngineJobResult:
    """Download, build, check against golden.npz and publish one model's engine; see the module docstring."""
    from model_pipeline import tensorrt_build
    from model_pipeline.repository import GOLDEN_FILE
    from model_pipeline.triton_config import CONFIG_FILE, check_config_against_onnx, load_config

    store = _Store(request, client)
    name, model_dir = request.model, work_dir / request.model
    version = _published_version(store, name)
    onnx_path = store.download(f"{name}/{version}/model.onnx", model_dir / version / "model.onnx")
    golden = store.download(f"{name}/{GOLDEN_FILE}", model_dir / GOLDEN_FILE)
    config_path = store.download(f"{name}/{CONFIG_FILE}", model_dir / "published.config.pbtxt")
    spec = job_spec(request, onnx_path)
    check_config_against_onnx(load_config(config_path), onnx_path, profile_max=spec.batch.max if spec.batch else None)

    reason = tensorrt_build.tensorrt_unavailable_reason()
    if reason is not None:
        raise EngineBuildError(f"model '{name}': cannot build the engine here: {reason}")
    trt_version = str(tensorrt_build.import_tensorrt().__version__)
    gpu = tensorrt_build.detect_gpu()
    onnx_sha256 = file_sha256(onnx_path)
    existing = store.read_json(f"{name}/{ENGINE_RECORD_FILE}")
    if _already_built(existing, onnx_sha256, trt_version, gpu.compute_capability):
        return EngineJobResult(name, [], already_built=True, record=existing or {})

    options = tensorrt_build.EngineBuildOptions(timing_cache_dir=work_dir / "timing-cache")
    result = tensorrt_build.build_tensorrt_engine(
        onnx_path, spec, model_dir / version / "model.plan", golden, options, device=device
    )
    record = engine_record(spec, result, onnx_sha256)
    config_text = _tensorrt_config(config_path, spec, record)
    # The plan before the config that names it: until the switch, the repository still loads the ONNX model.
    # The record goes last: a Job that dies before it is rebuilt next time instead of being taken as done.
    keys = [
        store.upload(f"{name}/{version}/model.plan", result.plan_path.read_bytes(), "application/octet-stream"),
        store.upload(f"{name}/{CONFIG_FILE}", config_text.encode(), "text/plain"),
        store.upload(f"{name}/{ENGINE_RECORD_FILE}", json.dumps(record, indent=2).encode(), "application/json"),
    ]
    return EngineJobResult(name, keys, record=record)
