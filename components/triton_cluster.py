"""TritonCluster: Triton Inference Server serving the S3 model repository, hardened and disruption-safe."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.gpu_stack import GpuPlacement
from components.kube import (
    after,
    labels,
    namespace,
    restricted_container_security,
    restricted_pod_security,
    s3_keys_env,
    s3_keys_secret,
    selector,
    url_port,
)
from components.model_repository import RepositoryAccess
from components.settings import TritonSettings

HTTP_PORT, GRPC_PORT, METRICS_PORT = 8000, 8001, 8002
STARTUP_PROBE_PERIOD = 10
MODEL_CACHE_DIR = "/var/lib/triton/models"


@dataclass(frozen=True)
class TritonPorts:
    """Triton's three endpoints, by Service/container port name."""

    http: int = HTTP_PORT
    grpc: int = GRPC_PORT
    metrics: int = METRICS_PORT


@dataclass(frozen=True)
class TritonBackend:
    """Where Triton serves, as the gateway and the HPA need it: its namespace, Service and Deployment, and ports."""

    namespace: pulumi.Output[str]
    service: pulumi.Output[str]
    deployment: pulumi.Output[str]
    ports: TritonPorts = TritonPorts()

    @property
    def host(self) -> pulumi.Output[str]:
        """The Service's cluster DNS name."""
        return pulumi.Output.concat(self.service, ".", self.namespace, ".svc")

    @property
    def http_url(self) -> pulumi.Output[str]:
        return pulumi.Output.concat("http://", self.host, f":{self.ports.http}")

    @property
    def grpc_address(self) -> pulumi.Output[str]:
        return pulumi.Output.concat(self.host, f":{self.ports.grpc}")


AWAIT_TIMEOUT_ANNOTATION = "pulumi.com/timeoutSeconds"  # how long pulumi-kubernetes waits for the rollout
ROLLOUT_MARGIN_SECONDS = 300


def rollout_timeout_seconds(args: TritonClusterArgs) -> int:
    """Pods are replaced maxSurge + maxUnavailable at a time and each batch may take the whole startup budget:
    Pulumi's default 10-minute wait would fail a healthy prod rollout (900 s per pod)."""
    batch = args.settings.max_surge + args.settings.max_unavailable
    batches = -(-args.rollout_replicas // batch)
    return batches * args.settings.startup_budget_seconds + ROLLOUT_MARGIN_SECONDS


@dataclass(frozen=True)
class TritonClusterArgs:
    """Inputs of :class:`TritonCluster`."""

    settings: TritonSettings
    repository: RepositoryAccess  # ModelRepository.access, as it is
    placement: GpuPlacement
    autoscaled: bool = False
    rollout_replicas: int = 1  # the most pods a rollout replaces (autoscaling's maximum when it is on)
    client_namespaces: tuple[str, ...] = ()  # may reach HTTP/gRPC (triton.clientNamespaces, the gateway's)
    monitoring_namespace: str = "monitoring"


def pod_selector(component_name: str) -> dict[str, str]:
    """Labels that select a TritonCluster's pods; known before the cluster exists (PodMonitors use them)."""
    return selector(labels("triton", component_name))


def triton_args(args: TritonClusterArgs, repository_uri: str) -> list[str]:
    """The tritonserver command line."""
    s = args.settings
    command = [
        "tritonserver",
        f"--model-repository={repository_uri}",
        f"--model-control-mode={s.model_control_mode}",
        "--strict-readiness=true",
        "--exit-on-error=true",
        f"--exit-timeout-secs={s.exit_timeout_seconds}",
        f"--http-port={HTTP_PORT}",
        f"--grpc-port={GRPC_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--allow-metrics=true",
        f"--allow-gpu-metrics={'true' if args.placement.gpu_metrics else 'false'}",
        f"--log-verbose={s.log_verbose}",
    ]
    if s.model_control_mode == "explicit":
        command += [f"--load-model={m}" for m in args.repository.models]
    return command


def probes(settings: TritonSettings) -> dict[str, Any]:
    """Startup gates on readiness with the configured budget; liveness only asks whether the process is up."""
    ready = {"path": "/v2/health/ready", "port": "http"}
    return {
        "startupProbe": {
            "httpGet": ready,
            "periodSeconds": STARTUP_PROBE_PERIOD,
            "timeoutSeconds": 5,
            "failureThreshold": math.ceil(settings.startup_budget_seconds / STARTUP_PROBE_PERIOD),
        },
        "readinessProbe": {"httpGet": ready, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }


def termination_grace_seconds(settings: TritonSettings) -> int:
    """Long enough for the preStop drain plus Triton's own exit timeout, with margin."""
    return settings.drain_seconds + settings.exit_timeout_seconds + 10


def _env(args: TritonClusterArgs, secret_name: pulumi.Input[str] | None) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "AWS_DEFAULT_REGION", "value": args.repository.region},
        {"name": "TRITON_AWS_MOUNT_DIRECTORY", "value": MODEL_CACHE_DIR},
    ]
    if secret_name is not None:
        env += s3_keys_env(secret_name)
    return env


def _resources(settings: TritonSettings, placement: GpuPlacement) -> dict[str, Any]:
    return {
        "requests": {"cpu": settings.cpu_request, "memory": settings.memory_request, **placement.limits},
        "limits": {"cpu": settings.cpu_limit, "memory": settings.memory_limit, **placement.limits},
    }


def _volumes(settings: TritonSettings) -> list[dict[str, Any]]:
    return [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": settings.shm_size}},
        {"name": "model-cache", "emptyDir": {"sizeLimit": settings.model_cache_size}},
        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
    ]


def container(args: TritonClusterArgs, repository_uri: str, secret_name: pulumi.Input[str] | None) -> dict[str, Any]:
    """The Triton container."""
    s = args.settings
    return {
        "name": "triton",
        "image": s.image,
        "imagePullPolicy": "IfNotPresent",
        "args": triton_args(args, repository_uri),
        "ports": [
            {"name": "http", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "env": _env(args, secret_name),
        "resources": _resources(s, args.placement),
        **probes(s),
        # Give endpoints and the gateway time to stop routing here before Triton starts refusing requests.
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(s.drain_seconds)]}}},
        "securityContext": restricted_container_security(),
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": MODEL_CACHE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def pod_spec(
    args: TritonClusterArgs,
    repository_uri: str,
    service_account: pulumi.Input[str],
    secret_name: pulumi.Input[str] | None,
    pod_labels: Mapping[str, str],
) -> dict[str, Any]:
    """The pod: one Triton container, GPU placement, no API token, spread across nodes."""
    return {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": restricted_pod_security(),
        "terminationGracePeriodSeconds": termination_grace_seconds(args.settings),
        "containers": [container(args, repository_uri, secret_name)],
        "volumes": _volumes(args.settings),
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector(dict(pod_labels))},
            }
        ],
        **args.placement.pod_fields(),
    }


def deployment_spec(args: TritonClusterArgs, pod: dict[str, Any], pod_labels: Mapping[str, str]) -> dict[str, Any]:
    """Rolling updates as configured (by default never below the current capacity); replicas left to the HPA
    when it scales."""
    rolling = {"maxUnavailable": args.settings.max_unavailable, "maxSurge": args.settings.max_surge}
    spec: dict[str, Any] = {
        "selector": {"matchLabels": selector(dict(pod_labels))},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": rolling},
        "minReadySeconds": 5,
        "revisionHistoryLimit": 5,
        "template": {"metadata": {"labels": dict(pod_labels)}, "spec": pod},
    }
    if not args.autoscaled:
        spec["replicas"] = args.settings.replicas
    return spec


def service_ports() -> list[dict[str, Any]]:
    """Named Service ports; gRPC declares h2c so L7 proxies speak HTTP/2 to it."""
    return [
        {"name": "http", "port": HTTP_PORT, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"},
        {
            "name": "grpc",
            "port": GRPC_PORT,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP", "appProtocol": "http"},
    ]


def _from_namespaces(names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}} for n in names]


def ingress_policy_spec(args: TritonClusterArgs, pod_selector: Mapping[str, str]) -> dict[str, Any]:
    """HTTP/gRPC only from the client namespaces (with none, from nowhere), metrics only from monitoring."""
    rules: list[dict[str, Any]] = [
        {
            "from": _from_namespaces([args.monitoring_namespace]),
            "ports": [{"protocol": "TCP", "port": METRICS_PORT}],
        }
    ]
    if args.client_namespaces:
        rules.insert(
            0,
            {
                "from": _from_namespaces(args.client_namespaces),
                "ports": [{"protocol": "TCP", "port": HTTP_PORT}, {"protocol": "TCP", "port": GRPC_PORT}],
            },
        )
    return {"podSelector": {"matchLabels": dict(pod_selector)}, "policyTypes": ["Ingress"], "ingress": rules}


def egress_policy_spec(repository: RepositoryAccess, pod_selector: Mapping[str, str]) -> dict[str, Any]:
    """DNS, and the object store (HTTPS, or the custom endpoint's port); no other egress."""
    store_port = url_port(repository.endpoint) if repository.endpoint else 443
    return {
        "podSelector": {"matchLabels": dict(pod_selector)},
        "policyTypes": ["Egress"],
        "egress": [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
            {"ports": [{"protocol": "TCP", "port": store_port}]},
        ],
    }


class TritonCluster(pulumi.ComponentResource):
    """Namespace, ServiceAccount, Deployment, Service, PodDisruptionBudget and NetworkPolicies for Triton."""

    namespace: pulumi.Output[str]
    service_name: pulumi.Output[str]
    deployment_name: pulumi.Output[str]
    service_account_name: pulumi.Output[str]
    selector_labels: dict[str, str]
    ports: TritonPorts
    backend: TritonBackend  # what the gateway and the HPA take as it is

    def __init__(self, name: str, args: TritonClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:TritonCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        pod_labels = labels("triton", name)
        self.selector_labels = pod_selector(name)
        self.ports = TritonPorts()

        ns = namespace(f"{name}-ns", s.namespace, "restricted", child)
        meta: dict[str, Any] = {"namespace": ns.metadata.name, "labels": pod_labels}
        role = args.repository.role_arn
        sa_annotations = {"eks.amazonaws.com/role-arn": role} if role else {}
        sa = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata={**meta, "name": "triton", "annotations": sa_annotations},
            automount_service_account_token=False,
            opts=child,
        )
        repo = args.repository
        credentials = {**meta, "name": "triton-s3-credentials"}
        secret_name = s3_keys_secret(
            f"{name}-s3-credentials", credentials, repo.access_key_id, repo.secret_access_key, child
        )
        uri = pulumi.Output.from_input(args.repository.uri)
        pod = pulumi.Output.all(uri, sa.metadata.name, secret_name).apply(
            lambda v: pod_spec(args, v[0], v[1], v[2], pod_labels)
        )
        # Any on purpose: mypy's overload matching of the pod template's nested TypedDicts exhausts memory; the
        # Deployment is validated against the Kubernetes schema in the tests instead.
        deployment_meta: Any = {
            **meta,
            "name": "triton",
            "annotations": {AWAIT_TIMEOUT_ANNOTATION: str(rollout_timeout_seconds(args))},
        }
        deployment_body: Any = pod.apply(lambda p: deployment_spec(args, p, pod_labels))
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=deployment_meta,
            spec=deployment_body,
            opts=after(child, args.repository.ready),
        )
        service_spec: dict[str, Any] = {"type": "ClusterIP", "selector": self.selector_labels, "ports": service_ports()}
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata={**meta, "name": "triton"},
            spec=service_spec,
            opts=child,
        )
        pdb_spec: dict[str, Any] = {"maxUnavailable": 1, "selector": {"matchLabels": self.selector_labels}}
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata={**meta, "name": "triton"},
            spec=pdb_spec,
            opts=child,
        )
        for role, spec in (
            ("ingress", ingress_policy_spec(args, self.selector_labels)),
            ("egress", egress_policy_spec(args.repository, self.selector_labels)),
        ):
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{role}", metadata={**meta, "name": f"triton-{role}"}, spec=spec, opts=child
            )

        self.namespace = ns.metadata.name
        self.service_name = service.metadata.name
        self.deployment_name = deployment.metadata.name
        self.backend = TritonBackend(self.namespace, self.service_name, self.deployment_name, self.ports)
        self.service_account_name = sa.metadata.name
        self.register_outputs(
            {
                "namespace": self.namespace,
                "service_name": self.service_name,
                "deployment_name": self.deployment_name,
                "service_account_name": self.service_account_name,
                "selector_labels": self.selector_labels,
                "ports": {"http": HTTP_PORT, "grpc": GRPC_PORT, "metrics": METRICS_PORT},
            }
        )
