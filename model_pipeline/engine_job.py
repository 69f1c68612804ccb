"""Build one model's TensorRT engine inside a published repository: the in-cluster engine-build Job's work.

The Job runs in the TensorRT container that matches the Triton image, on a GPU node like the ones Triton uses.
It downloads the model's ONNX, golden file and config from ``s3://bucket/prefix/<digest>/``, builds the engine
with :mod:`model_pipeline.tensorrt_build` (which accepts a plan only once it reproduces the golden outputs),
then uploads ``model.plan``, the config switched to ``tensorrt_plan`` and an ``engine.json`` record. Until the
config switch the published ONNX Runtime config stays valid, so the repository is loadable at every moment.
A repository whose plan was already built by this TensorRT for this GPU is left as it is.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_pipeline.errors import EngineBuildError, PublishError
from model_pipeline.specs import BatchProfile, ModelSpec, get_spec

ENGINE_RECORD_FILE = "engine.json"
_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/(?P<prefix>.+?)/?$")


@dataclass(frozen=True)
class EngineJobRequest:
    """What one Job builds: which model, in which published repository, with which profile and precision."""

    repository: str  # s3://bucket/prefix/<digest>
    model: str
    precision: str = "fp16"
    profile: tuple[int, int, int] | None = None  # None: the spec's own
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


def job_spec(request: EngineJobRequest) -> ModelSpec:
    """The pipeline's spec for the model, with the deployment's precision and batch profile."""
    spec = get_spec(request.model)
    profile = BatchProfile(*request.profile) if request.profile else spec.profile
    return dataclasses.replace(spec, precision=request.precision, profile=profile, backend="tensorrt")


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


def build_engine_job(
    request: EngineJobRequest, work_dir: Path, client: Any | None = None, device: Any | None = None
) -> EngineJobResult:
    """Download, build, check against golden.npz and publish one model's engine; see the module docstring."""
    from model_pipeline import tensorrt_build
    from model_pipeline.repository import GOLDEN_FILE, file_sha256
    from model_pipeline.triton_config import CONFIG_FILE, check_config_against_onnx, load_config

    spec = job_spec(request)
    store = _Store(request, client)
    model_dir = work_dir / spec.name
    version = str(spec.version)
    onnx_path = store.download(f"{spec.name}/{version}/model.onnx", model_dir / version / "model.onnx")
    golden = store.download(f"{spec.name}/{GOLDEN_FILE}", model_dir / GOLDEN_FILE)
    config_path = store.download(f"{spec.name}/{CONFIG_FILE}", model_dir / "published.config.pbtxt")
    check_config_against_onnx(load_config(config_path), onnx_path, profile_max=spec.profile.max)

    reason = tensorrt_build.tensorrt_unavailable_reason()
    if reason is not None:
        raise EngineBuildError(f"model '{spec.name}': cannot build the engine here: {reason}")
    trt_version = str(tensorrt_build.import_tensorrt().__version__)
    gpu = tensorrt_build.detect_gpu()
    onnx_sha256 = file_sha256(onnx_path)
    existing = store.read_json(f"{spec.name}/{ENGINE_RECORD_FILE}")
    if _already_built(existing, onnx_sha256, trt_version, gpu.compute_capability):
        return EngineJobResult(spec.name, [], already_built=True, record=existing or {})

    options = tensorrt_build.EngineBuildOptions(timing_cache_dir=work_dir / "timing-cache")
    result = tensorrt_build.build_tensorrt_engine(
        onnx_path, spec, model_dir / version / "model.plan", golden, options, device=device
    )
    plan = result.plan_path.read_bytes()
    record = {
        "model": spec.name,
        "onnx_sha256": onnx_sha256,
        "plan_sha256": file_sha256(result.plan_path),
        "tensorrt_version": result.tensorrt_version,
        "compute_capability": result.compute_capability,
        "gpu": result.gpu_name,
        "precision": result.precision,
        "fp16_mode": result.fp16_mode,
        "profile": list(result.profile),
        "max_abs_diff": {str(batch): diff for batch, diff in sorted(result.max_abs_diff.items())},
        "build_seconds": round(result.build_seconds, 1),
    }
    config_text = _tensorrt_config(config_path, spec, record)
    # The plan before the config that names it: until the switch, the repository still loads the ONNX model.
    # The record goes last: a Job that dies before it is rebuilt next time instead of being taken as done.
    keys = [
        store.upload(f"{spec.name}/{version}/model.plan", plan, "application/octet-stream"),
        store.upload(f"{spec.name}/{CONFIG_FILE}", config_text.encode(), "text/plain"),
        store.upload(f"{spec.name}/{ENGINE_RECORD_FILE}", json.dumps(record, indent=2).encode(), "application/json"),
    ]
    return EngineJobResult(spec.name, keys, record=record)
