"""The rules that span keys: what no single declaration can say.

``SECTION_RULES`` run as each object is read (they see its section, so a problem names the full key) and may
fill in a default that depends on another key. ``check_platform`` runs on the whole configuration.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from components.settings import (
    HAMI_NODE_LABEL,
    RETENTION_SIZE,
    AutoscalingSettings,
    GpuSettings,
    HamiSettings,
    LoadBalancerSettings,
    ModelRepositorySettings,
    MonitoringSettings,
    PlatformConfig,
    ScalingRules,
    TritonSettings,
)
from model_pipeline import syntax
from model_pipeline.schema_reader import Rules, Section

_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")  # Prometheus sizes are base 2
_S3_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")


def _hami(settings: HamiSettings, s: Section) -> HamiSettings:
    if settings.gpu_memory_mib and settings.gpu_memory_percent:
        s.problem("gpuMemoryPercent", settings.gpu_memory_percent, "cannot be set together with gpuMemoryMiB")
    return settings


def _gpu(settings: GpuSettings, s: Section) -> GpuSettings:
    hami = settings.hami
    if settings.uses_hami and not s.has("nodeSelector"):
        # HAMi's own convention: GPU nodes labelled gpu=on (the whole-GPU default is GPU Feature Discovery's).
        settings = dataclasses.replace(settings, node_selector=dict([HAMI_NODE_LABEL]))
    retired_gpu_nodes = s.raw_value("gpuNodes")
    if retired_gpu_nodes is not None:
        s.problem(
            "gpuNodes",
            retired_gpu_nodes,
            "is no longer read: GPU nodes are selected by gpu.nodeSelector "
            "(a label of the node group, e.g. node.kubernetes.io/instance-type or eks.amazonaws.com/nodegroup); "
            "remove the key",
        )
    if settings.uses_hami and settings.node_selector.get(HAMI_NODE_LABEL[0]) != HAMI_NODE_LABEL[1]:
        s.problem(
            "nodeSelector",
            dict(settings.node_selector),
            'must include gpu: "on" when sharing is hami: HAMi\'s '
            "device plugin only runs on nodes with that label (its chart's default, which Helm keeps); label "
            "the GPU node group with it, which every replacement node inherits",
        )
    if settings.uses_hami and settings.mig_strategy == "single":
        s.problem("migStrategy", "single", "must be none or mixed with HAMi (HAMi schedules MIG slices itself)")
    if settings.sharing == "whole" and settings.mig_strategy == "mixed":
        s.problem(
            "migStrategy",
            "mixed",
            "cannot be used with gpu.sharing whole: under the mixed strategy a MIG-partitioned node advertises "
            "nvidia.com/mig-<profile>, never the nvidia.com/gpu Triton and the engine Jobs request, so they would "
            "stay Pending; set gpu.migStrategy single (one profile per node, advertised as nvidia.com/gpu) or none, "
            "or gpu.sharing hami (HAMi schedules MIG slices itself)",
        )
    if not settings.uses_hami and (hami.gpu_memory_mib or hami.gpu_memory_percent or hami.gpu_cores_percent):
        s.problems.append("gpu.hami: GPU memory/core shares only apply when gpu.sharing is hami")
    return settings


def _triton(settings: TritonSettings, s: Section) -> TritonSettings:
    if settings.max_surge == settings.max_unavailable == 0:
        s.problem("maxUnavailable", 0, "must be at least 1 when triton.maxSurge is 0, or no rollout can progress")
    for what, request, limit in (
        ("cpu", settings.cpu_request, settings.cpu_limit),
        ("memory", settings.memory_request, settings.memory_limit),
    ):
        if syntax.quantity_value(request) > syntax.quantity_value(limit):
            s.problem(f"{what}Request", request, f"must not exceed triton.{what}Limit ({limit})")
    return settings


def _cluster_local(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[1].rsplit(":", 1)[0]
    return host.endswith((".svc", ".cluster.local")) or ("." not in host and host != "localhost")


def _model_repository(settings: ModelRepositorySettings, s: Section) -> ModelRepositorySettings:
    """The URI names a valid bucket; bucket and IAM are only created on AWS; IRSA roles come either from config
    or from the OIDC provider; static keys come as a pair and never with IRSA."""
    if settings.uri and not syntax.is_bucket_name(settings.bucket):
        s.problem("uri", settings.uri, f"must name a valid bucket: {syntax.BUCKET_NAME_RULE}")
    if settings.uri and not _S3_PREFIX.match(settings.prefix):
        s.problem("uri", settings.uri, "must have a prefix of S3-safe characters (letters, digits, !_.*'()/-)")
    if settings.publish_endpoint and not settings.endpoint:
        s.problem(
            "publishEndpoint",
            settings.publish_endpoint,
            "needs modelRepository.endpoint: AWS S3 is reached the same way from everywhere",
        )
    if settings.endpoint and not settings.publish_endpoint and _cluster_local(settings.endpoint):
        s.problem(
            "endpoint",
            settings.endpoint,
            "resolves only inside the cluster, and `pulumi up` publishes from "
            "outside it: set modelRepository.publishEndpoint to the same store as this machine reaches it "
            "(an ingress, or `kubectl port-forward` to http://127.0.0.1:<port>)",
        )
    if settings.endpoint and settings.create_bucket:
        s.problem("createBucket", True, "must be false with an S3-compatible endpoint: that bucket must already exist")
    if (settings.oidc_provider_arn is None) != (settings.oidc_provider_url is None):
        s.problems.append("modelRepository.oidcProviderArn and modelRepository.oidcProviderUrl must be set together")
    if settings.creates_roles and settings.endpoint:
        s.problem("oidcProviderArn", settings.oidc_provider_arn, "cannot be used with an S3-compatible endpoint")
    if settings.creates_roles and settings.irsa_role_arn:
        s.problem(
            "irsaRoleArn",
            settings.irsa_role_arn,
            "cannot be combined with oidcProviderArn: the roles for Triton and engine builds are created then",
        )
    if settings.creates_roles and settings.uses_static_keys:
        s.problem("oidcProviderArn", settings.oidc_provider_arn, "cannot be combined with static S3 keys")
    if (settings.access_key_id is None) != (settings.secret_access_key is None):
        s.problems.append("s3AccessKeyId and s3SecretAccessKey must be set together (as secrets)")
    if settings.uses_static_keys and settings.irsa_role_arn:
        s.problem(
            "irsaRoleArn",
            settings.irsa_role_arn,
            "cannot be combined with static S3 keys: Triton would silently prefer the keys",
        )
    return settings


def _monitoring(settings: MonitoringSettings, s: Section) -> MonitoringSettings:
    for window, key in ((settings.recording_window, "recordingWindow"), (settings.alert_window, "alertWindow")):
        # rate()/increase() need several samples in the window; Prometheus' guidance is 4 scrape intervals.
        if syntax.duration_seconds(window) < 4 * syntax.duration_seconds(settings.scrape_interval):
            s.problem(key, window, f"must be at least 4 x monitoring.scrapeInterval ({settings.scrape_interval})")
    if settings.create_storage_class and not settings.storage_class:
        s.problem("createStorageClass", True, "needs monitoring.storageClass: the name of the class to create")
    size = RETENTION_SIZE.match(settings.retention_size or "")
    if size and int(size["n"]) * 1024 ** _SIZE_UNITS.index(size["unit"]) >= syntax.quantity_value(
        settings.storage_size
    ):
        s.problem(
            "retentionSize",
            settings.retention_size,
            f"must be smaller than monitoring.storageSize ({settings.storage_size}) or Prometheus fills its disk",
        )
    return settings


def _scaling_rules(settings: ScalingRules, s: Section) -> ScalingRules:
    if s.has("policies") and not settings.policies and settings.select_policy != "Disabled":
        s.problem("policies", s.raw.get("policies"), "must list at least one policy unless selectPolicy is Disabled")
    return settings


def _autoscaling(settings: AutoscalingSettings, s: Section) -> AutoscalingSettings:
    if settings.max_replicas < settings.min_replicas:
        s.problem("maxReplicas", settings.max_replicas, f"must be >= autoscaling.minReplicas ({settings.min_replicas})")
    return settings


def _load_balancer(settings: LoadBalancerSettings, s: Section) -> LoadBalancerSettings:
    if settings.tls_enabled and not settings.certificate_secret:
        s.problem(
            "tls.certificateSecret",
            None,
            "is required when loadBalancer.tls.enabled is true: a kubernetes.io/tls Secret in loadBalancer.namespace",
        )
    if settings.http_port == settings.grpc_port:
        s.problem("grpcPort", settings.grpc_port, "must differ from loadBalancer.httpPort: each has its own listener")
    return settings


SECTION_RULES: Rules = {
    HamiSettings: _hami,
    GpuSettings: _gpu,
    TritonSettings: _triton,
    ModelRepositorySettings: _model_repository,
    MonitoringSettings: _monitoring,
    ScalingRules: _scaling_rules,
    AutoscalingSettings: _autoscaling,
    LoadBalancerSettings: _load_balancer,
}


def check_platform(cfg: PlatformConfig, raw_charts: Any, problems: list[str]) -> None:
    """Rules that span sections."""
    _check_guaranteed_qos(cfg, problems)
    _check_namespaces(cfg, problems)
    _check_unique_models(cfg, problems)
    _check_chart_archives(cfg, raw_charts, problems)


def _check_guaranteed_qos(cfg: PlatformConfig, problems: list[str]) -> None:
    if not cfg.gpu.uses_hami:
        return
    # HAMi's in-container limiter misreports (nvidia-smi fails) unless the pod has Guaranteed QoS (HAMi#1704).
    for what, request, limit in (
        ("cpu", cfg.triton.cpu_request, cfg.triton.cpu_limit),
        ("memory", cfg.triton.memory_request, cfg.triton.memory_limit),
    ):
        if request != limit:
            problems.append(
                f"triton.{what}Request ({request!r}) must equal triton.{what}Limit ({limit!r}) "
                "when gpu.sharing is hami: HAMi needs Guaranteed QoS pods"
            )


def _check_namespaces(cfg: PlatformConfig, problems: list[str]) -> None:
    namespaces = {
        "triton.namespace": cfg.triton.namespace,
        "monitoring.namespace": cfg.monitoring.namespace,
        "gpu.operatorNamespace": cfg.gpu.operator_namespace,
    }
    if cfg.gpu.uses_hami:
        namespaces["gpu.hami.namespace"] = cfg.gpu.hami.namespace
    if cfg.load_balancer.enabled:
        namespaces["loadBalancer.namespace"] = cfg.load_balancer.namespace
    if any(m.backend == "tensorrt" for m in cfg.models):
        namespaces["modelRepository.buildNamespace"] = cfg.model_repository.build_namespace
    seen: dict[str, str] = {}
    for key, value in namespaces.items():
        if value in seen and key != seen[value]:
            problems.append(f"{key} ({value!r}) must differ from {seen[value]}: each part runs in its own namespace")
        seen.setdefault(value, key)


def _check_unique_models(cfg: PlatformConfig, problems: list[str]) -> None:
    names = [m.name for m in cfg.models]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"models ({duplicate!r}) is listed more than once; model names must be unique")


def _check_chart_archives(cfg: PlatformConfig, raw: Any, problems: list[str]) -> None:
    """A local chart folder must hold the archive of every chart this stack installs, named as Helm packages it."""
    folder = cfg.sources.charts
    if folder is None or not cfg.sources.local_charts:
        return
    for pin in cfg.charts:
        if not (Path(folder) / pin.archive).is_file():
            problems.append(
                f"sources.charts ({raw!r}) must hold {pin.archive} (chart {pin.name} {pin.version}, "
                f"which this stack installs): {Path(folder) / pin.archive} does not exist"
            )
