"""EngineBuild: TensorRT engines built in the cluster, on a GPU node, by the TensorRT release Triton runs.

One hardened Kubernetes Job per TensorRT model runs ``python -m model_pipeline build-engine`` in the TensorRT
container with the Triton image's YY.MM. The pipeline's code is shipped, not copied: a ConfigMap generated at
deploy time from the model_pipeline sources is mounted and put on PYTHONPATH, so the Job runs the same build and
golden check as a local build. Pulumi awaits each Job; Triton's Deployment waits for them.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.errors import PlatformError
from components.gpu_stack import GpuPlacement
from components.images import mirrored
from components.kube import (
    after,
    labels,
    namespace,
    restricted_container_security,
    restricted_pod_security,
    s3_keys_env,
    s3_keys_secret,
    url_port,
)
from model_pipeline.cli import EXIT_REJECTED  # the engine failed its build or check: retrying cannot help

ROOT = Path(__file__).resolve().parents[1]
SERVICE_ACCOUNT = "engine-build"
PIPELINE_MOUNT = "/opt/pipeline"
DEPS_DIR = "/opt/deps"
WORK_DIR = "/work"
BUILD_CONTAINER = "build"
JOB_UID = 10001
# Runtime packages of the Job's code path that the TensorRT container lacks (the same pins as
# requirements-dev.txt); model_pipeline/engine.Dockerfile preinstalls the same file for air-gapped clusters.
REQUIREMENTS_FILE = "model_pipeline/requirements-engine.txt"
ENGINE_JOB_REQUIREMENTS = tuple((ROOT / REQUIREMENTS_FILE).read_text().split())
# Files shipped to the Job: the pipeline package (which imports nothing of the program) and its pins.
SHIPPED_SOURCES = ("model_pipeline/*.py", REQUIREMENTS_FILE)
_RELEASE = re.compile(r":(?P<release>\d{2}\.\d{2})-py3(@sha256:[a-f0-9]{64})?$")
# Written reasons for the checkov checks this Job does not satisfy (read by checkov from the annotations).
CHECKOV_SKIPS = {
    "CKV_K8S_43": "the TensorRT image is pinned by its release tag, which must match Triton's; NGC rebuilds "
    "digests per architecture",
    "CKV_K8S_15": "a pinned release tag of a 10 GB image; IfNotPresent avoids pulling it again for every build",
}


class EngineJobError(PlatformError, ValueError):
    """The engine-build Job cannot be declared as configured."""


@dataclass(frozen=True)
class EngineModel:
    """One model whose engine the Job builds: its optimization profile and the tolerance it must meet."""

    name: str
    precision: str
    batch: tuple[int, int, int] | None  # None: a model without a batch dimension
    axes: tuple[tuple[str, tuple[int, int, int]], ...] = ()
    tolerance: tuple[float, float] | None = None  # (atol, rtol); None: the precision's default


@dataclass(frozen=True)
class EngineBuildArgs:
    """Inputs of :class:`EngineBuild`."""

    models: tuple[EngineModel, ...]
    repository: str  # s3://bucket/prefix/<digest>: the published repository the engines join
    namespace: str
    triton_image: str
    placement: GpuPlacement
    region: str
    endpoint: str | None = None
    # The build container's image: by default the TensorRT release of triton_image, which installs the Job's
    # packages at start (from python_index, else PyPI); an engine image has them already and installs nothing.
    engine_image: str | None = None
    image_registry: str | None = None  # sources.imageRegistry: the mirror of the default TensorRT image
    python_index: str | None = None  # sources.pythonIndex: a PyPI mirror for that install
    role_arn: pulumi.Input[str] | None = None  # IRSA role that may write under the prefix
    access_key_id: pulumi.Input[str] | None = None  # static keys: MinIO/dev only
    secret_access_key: pulumi.Input[str] | None = None
    timeout_seconds: int = 3600
    ttl_seconds: int = 86400
    cpu: str = "4"
    memory: str = "16Gi"
    ephemeral_storage: str = "6Gi"  # the pod's whole scratch disk: wheels + work dir
    wait_for: Sequence[pulumi.Resource] = field(default_factory=tuple)  # the published files the Jobs read


def tensorrt_image_for(triton_image: str) -> str:
    """``nvcr.io/nvidia/tensorrt:<YY.MM>-py3`` for ``tritonserver:<YY.MM>-py3``: plans load only in that release."""
    match = _RELEASE.search(triton_image)
    if not match:
        raise EngineJobError(
            f"triton.image ({triton_image!r}) must carry an NGC release tag such as :26.07-py3 when a model uses "
            "backend tensorrt: the engine is built in the TensorRT container of the same release"
        )
    return f"nvcr.io/nvidia/tensorrt:{match.group('release')}-py3"


def pipeline_sources(root: Path = ROOT) -> dict[str, str]:
    """The files the Job runs, by repository path, read now: what is deployed is what is checked out."""
    files = sorted({p for pattern in SHIPPED_SOURCES for p in root.glob(pattern)})
    sources = {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8") for p in files}
    return sources


def config_map_key(path: str) -> str:
    """ConfigMap keys cannot hold '/'; the volume's items map each key back to its path."""
    return path.replace("/", "__")


def sources_digest(sources: Mapping[str, str]) -> str:
    """Short content hash of the shipped code, so a code change shows as a new Job in the preview."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(f"{path}\0{sources[path]}\0".encode())
    return digest.hexdigest()[:12]


def build_command(args: EngineBuildArgs, model: EngineModel) -> list[str]:
    """The Job's entrypoint: the pipeline's own CLI."""
    command = [
        "python3",
        "-m",
        "model_pipeline",
        "build-engine",
        "--repository",
        args.repository,
        "--model",
        model.name,
        "--precision",
        model.precision,
        "--region",
        args.region,
        "--work-dir",
        WORK_DIR,
    ]
    if model.batch is not None:
        command += ["--profile", _joined(model.batch)]
    for axis, bounds in model.axes:
        command += ["--axis", f"{axis}={_joined(bounds)}"]
    if model.tolerance is not None:
        command += ["--tolerance", _joined(model.tolerance)]
    if args.endpoint:
        command += ["--endpoint-url", args.endpoint]
    return command


def _joined(values: Sequence[float]) -> str:
    return ",".join(f"{v:g}" for v in values)


def _env(args: EngineBuildArgs, secret_name: pulumi.Input[str] | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "PYTHONPATH", "value": f"{PIPELINE_MOUNT}:{DEPS_DIR}"},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},  # the code is mounted read-only
        {"name": "HOME", "value": WORK_DIR},
        {"name": "TMPDIR", "value": WORK_DIR},
        {"name": "AWS_DEFAULT_REGION", "value": args.region},
    ]
    if secret_name is not None:
        env += s3_keys_env(secret_name)
    return env


def _mounts() -> list[dict[str, Any]]:
    return [
        {"name": "pipeline", "mountPath": PIPELINE_MOUNT, "readOnly": True},
        {"name": "deps", "mountPath": DEPS_DIR},
        {"name": "work", "mountPath": WORK_DIR},
    ]


DEPS_SIZE = "2Gi"  # onnx, onnxruntime, tritonclient and boto3 wheels, unpacked


def _volumes(config_map: pulumi.Input[str], sources: Mapping[str, str], scratch: str) -> list[dict[str, Any]]:
    items = [{"key": config_map_key(path), "path": path} for path in sorted(sources)]
    return [
        {"name": "pipeline", "configMap": {"name": config_map, "items": items, "defaultMode": 0o444}},
        {"name": "deps", "emptyDir": {"sizeLimit": DEPS_SIZE}},
        {"name": "work", "emptyDir": {"sizeLimit": scratch}},
    ]


def build_image(args: EngineBuildArgs) -> str:
    """The configured engine image, else the TensorRT container of Triton's release (through the mirror)."""
    return args.engine_image or mirrored(tensorrt_image_for(args.triton_image), args.image_registry)


def container_command(args: EngineBuildArgs, model: EngineModel) -> list[str]:
    """The build, preceded (in the stock TensorRT image) by installing the few packages it lacks; exec keeps the
    build's exit code as the Job's."""
    if args.engine_image:
        return build_command(args, model)
    index = f" --index-url {args.python_index}" if args.python_index else ""
    install = (
        f"python3 -m pip install --quiet --no-cache-dir --disable-pip-version-check --no-warn-script-location"
        f"{index} --target {DEPS_DIR} -r {PIPELINE_MOUNT}/{REQUIREMENTS_FILE}"
    )
    return ["/bin/sh", "-c", f'{install} && exec "$@"', "build-engine", *build_command(args, model)]


def pod_spec(
    args: EngineBuildArgs,
    model: EngineModel,
    config_map: pulumi.Input[str],
    sources: Mapping[str, str],
    secret_name: pulumi.Input[str] | None,
) -> dict[str, Any]:
    """One GPU container in the TensorRT image: install, build, check and upload the engine."""
    build: dict[str, Any] = {
        "name": BUILD_CONTAINER,
        "image": build_image(args),
        "imagePullPolicy": "IfNotPresent",
        "command": container_command(args, model),
        "workingDir": WORK_DIR,
        "env": _env(args, secret_name),
        "resources": {
            "requests": {
                "cpu": args.cpu,
                "memory": args.memory,
                "ephemeral-storage": args.ephemeral_storage,
                **args.placement.limits,
            },
            "limits": {
                "cpu": args.cpu,
                "memory": args.memory,
                "ephemeral-storage": args.ephemeral_storage,
                **args.placement.limits,
            },
        },
        "securityContext": {**restricted_container_security(), "runAsUser": JOB_UID, "runAsGroup": JOB_UID},
        "volumeMounts": _mounts(),
    }
    return {
        "serviceAccountName": SERVICE_ACCOUNT,
        "automountServiceAccountToken": False,  # IRSA projects its own token; the Job never calls the API
        "enableServiceLinks": False,
        "restartPolicy": "Never",
        "securityContext": restricted_pod_security(JOB_UID),
        "containers": [build],
        "volumes": _volumes(config_map, sources, args.ephemeral_storage),
        **args.placement.pod_fields(),
    }


def job_annotations(args: EngineBuildArgs) -> dict[str, str]:
    """Pulumi waits past the Job's own deadline (so it reports the Job's failure) and replaces a failed Job."""
    annotations = {
        "pulumi.com/timeoutSeconds": str(args.timeout_seconds + 300),
        "pulumi.com/replaceUnready": "true",
    }
    for index, (check, reason) in enumerate(sorted(CHECKOV_SKIPS.items()), start=1):
        annotations[f"checkov.io/skip{index}"] = f"{check}={reason}"
    return annotations


def job_spec(args: EngineBuildArgs, pod: dict[str, Any], pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """Bounded in time and retries; a rejected engine (exit 3) fails the Job at once instead of being retried."""
    return {
        "backoffLimit": 2,
        "activeDeadlineSeconds": args.timeout_seconds,
        "ttlSecondsAfterFinished": args.ttl_seconds,
        "podFailurePolicy": {
            "rules": [
                {
                    "action": "FailJob",
                    "onExitCodes": {"containerName": BUILD_CONTAINER, "operator": "In", "values": [EXIT_REJECTED]},
                }
            ]
        },
        "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod},
    }


def egress_policy_spec(
    endpoint: str | None, pod_labels: Mapping[str, str], python_index: str | None = None
) -> dict[str, Any]:
    """No ingress; egress to DNS, HTTPS (S3, the package index), the custom S3 endpoint's and the PyPI mirror's
    port."""
    wanted = sorted({443, *(url_port(url) for url in (endpoint, python_index) if url)})
    ports = [{"protocol": "TCP", "port": port} for port in wanted]
    return {
        "podSelector": {"matchLabels": dict(pod_labels)},
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [],
        "egress": [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"ports": ports},
        ],
    }


def _job_spec_output(
    args: EngineBuildArgs,
    model: EngineModel,
    config_map: pulumi.Output[str],
    secret_name: pulumi.Output[str | None],
    sources: Mapping[str, str],
    pod_labels: Mapping[str, str],
) -> pulumi.Output[dict[str, Any]]:
    def render(values: list[Any]) -> dict[str, Any]:
        return job_spec(args, pod_spec(args, model, values[0], sources, values[1]), pod_labels)

    return pulumi.Output.all(config_map, secret_name).apply(render)


class EngineBuild(pulumi.ComponentResource):
    """Namespace, ServiceAccount, the shipped pipeline code, and one awaited engine-build Job per model."""

    jobs: list[k8s.batch.v1.Job]

    def __init__(self, name: str, args: EngineBuildArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:EngineBuild", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        pod_labels = labels("engine-build", name)
        sources = pipeline_sources()
        ns = namespace(f"{name}-ns", args.namespace, "restricted", child)
        meta: dict[str, Any] = {"namespace": ns.metadata.name, "labels": pod_labels}
        annotations = {"eks.amazonaws.com/role-arn": args.role_arn} if args.role_arn else {}
        sa_meta: dict[str, Any] = {**meta, "name": SERVICE_ACCOUNT, "annotations": annotations}
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=sa_meta,
            automount_service_account_token=False,
            opts=child,
        )
        code_name = f"engine-build-pipeline-{sources_digest(sources)}"  # named by content: new code, new Job
        code_meta: dict[str, Any] = {
            **meta,
            "name": code_name,
            "annotations": {"inference-platform/sources": ", ".join(SHIPPED_SOURCES)},
        }
        code_data: dict[str, str] = {config_map_key(path): text for path, text in sources.items()}
        code = k8s.core.v1.ConfigMap(
            f"{name}-pipeline",
            metadata=code_meta,
            data=code_data,
            immutable=True,
            opts=child,
        )
        netpol_meta: dict[str, Any] = {**meta, "name": "engine-build"}
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=netpol_meta,
            spec=egress_policy_spec(args.endpoint, pod_labels, args.python_index),
            opts=child,
        )
        credentials = {**meta, "name": "engine-build-s3-credentials"}
        keys = s3_keys_secret(f"{name}-s3-credentials", credentials, args.access_key_id, args.secret_access_key, child)
        secret_name: pulumi.Output[str | None] = pulumi.Output.from_input(keys)
        after_inputs = after(child, [sa, *args.wait_for])
        self.jobs = []
        # Typed as Any on purpose: mypy's overload matching of Job's metadata/spec TypedDicts takes over 16 GB here;
        # the Job is validated against the Kubernetes schema in the tests instead.
        job_meta: Any = {**meta, "annotations": job_annotations(args)}
        for model in args.models:
            spec = _job_spec_output(args, model, code.metadata.name, secret_name, sources, pod_labels)
            job_spec_input: Any = spec  # see job_meta
            job = k8s.batch.v1.Job(f"{name}-{model.name}", metadata=job_meta, spec=job_spec_input, opts=after_inputs)
            self.jobs.append(job)
        self.register_outputs({"jobs": [job.metadata.name for job in self.jobs]})
