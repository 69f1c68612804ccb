"""The platform's guard rails as plain functions: each takes a resource type and its inputs, returns violations.

No Pulumi import: the policy pack (``__main__.py``) wires these into CrossGuard, and the tests call them directly on
the resources the whole-stack harness records. Inputs are read through ``Mapping``/``Sequence`` only, so the pack
can pass CrossGuard's property proxies, which raise on values unknown during preview.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Props = Mapping[str, Any]
ResourceRule = Callable[[str, Props], list[str]]

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
SECRET = "kubernetes:core/v1:Secret"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
ENVOY_PROXY = "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy"
AWS_PROVIDER = "pulumi:providers:aws"
DYNAMIC_RESOURCE = "pulumi-python:dynamic:Resource"
DYNAMIC_PROVIDER_KEY = "__provider"  # a dynamic resource's pickled provider (base64): code, not configuration

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
WORKLOAD_KINDS_WITH_TEMPLATE = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController")

# group/version -> (Kubernetes release that stopped serving it, what to use instead).
REMOVED_API_VERSIONS: dict[str, tuple[str, str]] = {
    "extensions/v1beta1": ("1.22", "apps/v1 workloads, networking.k8s.io/v1 Ingress and NetworkPolicy"),
    "apps/v1beta1": ("1.16", "apps/v1"),
    "apps/v1beta2": ("1.16", "apps/v1"),
    "networking.k8s.io/v1beta1": ("1.22", "networking.k8s.io/v1"),
    "rbac.authorization.k8s.io/v1beta1": ("1.22", "rbac.authorization.k8s.io/v1"),
    "rbac.authorization.k8s.io/v1alpha1": ("1.22", "rbac.authorization.k8s.io/v1"),
    "admissionregistration.k8s.io/v1beta1": ("1.22", "admissionregistration.k8s.io/v1"),
    "apiextensions.k8s.io/v1beta1": ("1.22", "apiextensions.k8s.io/v1"),
    "apiregistration.k8s.io/v1beta1": ("1.22", "apiregistration.k8s.io/v1"),
    "certificates.k8s.io/v1beta1": ("1.22", "certificates.k8s.io/v1"),
    "coordination.k8s.io/v1beta1": ("1.22", "coordination.k8s.io/v1"),
    "scheduling.k8s.io/v1beta1": ("1.22", "scheduling.k8s.io/v1"),
    "batch/v1beta1": ("1.25", "batch/v1"),
    "batch/v2alpha1": ("1.21", "batch/v1"),
    "policy/v1beta1": ("1.25", "policy/v1 PodDisruptionBudget (PodSecurityPolicy: Pod Security Admission)"),
    "autoscaling/v2beta1": ("1.25", "autoscaling/v2"),
    "autoscaling/v2beta2": ("1.26", "autoscaling/v2"),
    "discovery.k8s.io/v1beta1": ("1.25", "discovery.k8s.io/v1"),
    "events.k8s.io/v1beta1": ("1.25", "events.k8s.io/v1"),
    "node.k8s.io/v1beta1": ("1.25", "node.k8s.io/v1"),
    "storage.k8s.io/v1beta1": ("1.27", "storage.k8s.io/v1"),
    "flowcontrol.apiserver.k8s.io/v1beta1": ("1.26", "flowcontrol.apiserver.k8s.io/v1"),
    "flowcontrol.apiserver.k8s.io/v1beta2": ("1.29", "flowcontrol.apiserver.k8s.io/v1"),
    "flowcontrol.apiserver.k8s.io/v1beta3": ("1.32", "flowcontrol.apiserver.k8s.io/v1"),
}

AWS_KEY_NAMES = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"})
# Access key ids: long-term (AKIA) and temporary (ASIA) credentials.
AWS_ACCESS_KEY_ID_PATTERN = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
AWS_SECRET_IN_TEXT_PATTERN = re.compile(r"aws_secret_access_key\s*[=:]", re.IGNORECASE)
TRITON_IMAGE_MARKER = "tritonserver"
# Input names of credentials, compared lower-case without '_' and '-': a dynamic provider must read them from the
# environment of whoever runs Pulumi, never take them as inputs (inputs and outputs are kept in the state).
CREDENTIAL_INPUT_NAMES = frozenset(
    {
        "accesskey",
        "accesskeyid",
        "awsaccesskeyid",
        "secretkey",
        "secretaccesskey",
        "awssecretaccesskey",
        "sessiontoken",
        "awssessiontoken",
        "token",
        "credentials",
        "profile",
        "awsprofile",
    }
)


@dataclass(frozen=True)
class GpuResourceNames:
    """The extended resources our device plugins advertise (GPU Operator's plugin, or HAMi's)."""

    gpu: str = "nvidia.com/gpu"
    hami_memory: tuple[str, ...] = ("nvidia.com/gpumem", "nvidia.com/gpumem-percentage")
    hami_cores: str = "nvidia.com/gpucores"
    hami_scheduler: str = "hami-scheduler"
    nvidia_runtime_class: str = "nvidia"

    @property
    def allowed(self) -> tuple[str, ...]:
        return (self.gpu, *self.hami_memory, self.hami_cores)

    @property
    def hami(self) -> tuple[str, ...]:
        return (*self.hami_memory, self.hami_cores)


DEFAULT_GPU_NAMES = GpuResourceNames()


# --------------------------------------------------------------------------------------------------------------
# Reading resources


def kind_of(resource_type: str, props: Props) -> str:
    """The Kubernetes kind (``Deployment``), from the inputs or else from the type token."""
    kind = props.get("kind")
    return kind if isinstance(kind, str) else resource_type.rsplit(":", 1)[-1]


def api_version_of(resource_type: str, props: Props) -> str | None:
    """``group/version`` of a Kubernetes object (``v1`` for the core group); None for non-Kubernetes resources."""
    api_version = props.get("apiVersion")
    if isinstance(api_version, str):
        return api_version
    if not resource_type.startswith("kubernetes:") or resource_type.count(":") != 2:
        return None
    group_version = resource_type.split(":")[1]
    return group_version.removeprefix("core/")


def describe(resource_type: str, props: Props) -> str:
    """``Deployment triton/triton``: how messages name a resource."""
    metadata = props.get("metadata")
    name = namespace = None
    if isinstance(metadata, Mapping):
        name, namespace = metadata.get("name"), metadata.get("namespace")
    if resource_type == HELM_RELEASE:
        name, namespace = props.get("name"), props.get("namespace")
    label = kind_of(resource_type, props) if resource_type.startswith("kubernetes:") else resource_type
    where = "/".join(str(part) for part in (namespace, name) if isinstance(part, str))
    return f"{label} {where}" if where else label


def _at(props: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(props, Mapping):
            return None
        props = props.get(key)
    return props


def pod_spec(resource_type: str, props: Props) -> Mapping[str, Any] | None:
    """The pod spec a workload creates pods from; None for other kinds and for ``*Patch`` resources (partial)."""
    if resource_type.endswith("Patch"):
        return None
    path = POD_SPEC_PATHS.get(kind_of(resource_type, props))
    spec = _at(props, path) if path else None
    return spec if isinstance(spec, Mapping) else None


def pod_template_labels(resource_type: str, props: Props) -> Mapping[str, Any]:
    """Labels the workload's pods carry."""
    kind = kind_of(resource_type, props)
    template = POD_SPEC_PATHS.get(kind, ("spec",))[:-1]  # the pod template (or, for a Pod, the object itself)
    found = _at(props, (*template, "metadata", "labels"))
    return found if isinstance(found, Mapping) else {}


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Init and regular containers of a pod spec."""
    for key in ("initContainers", "containers"):
        listed = spec.get(key)
        if isinstance(listed, Sequence) and not isinstance(listed, str):
            yield from (c for c in listed if isinstance(c, Mapping))


def _walk(value: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """Every (dotted path, key, value) below ``value``."""
    if isinstance(value, Mapping):
        for key in value:
            child = value[key]
            child_path = f"{path}.{key}" if path else str(key)
            yield child_path, key, child
            yield from _walk(child, child_path)
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, child in enumerate(value):
            child_path = f"{path}[{index}]"
            yield child_path, index, child
            yield from _walk(child, child_path)


# --------------------------------------------------------------------------------------------------------------
# Images


def image_problem(image: str) -> str | None:
    """Why an image reference is not pinned, or None: a digest or an explicit tag other than ``latest``."""
    if "@" in image:
        return None if re.search(r"@sha256:[0-9a-f]{64}$", image) else "has a malformed digest"
    last_segment = image.rsplit("/", 1)[-1]
    if ":" not in last_segment:
        return "has no tag (Kubernetes pulls latest)"
    tag = last_segment.rsplit(":", 1)[1]
    if not tag:
        return "has an empty tag"
    if tag == "latest":
        return "uses the mutable tag latest"
    return None


def pinned_images(resource_type: str, props: Props) -> list[str]:
    """No ``latest`` or untagged images: in workloads, custom resources and the Helm values we set."""
    if resource_type == SECRET or not resource_type.startswith("kubernetes:"):
        return []
    where = describe(resource_type, props)
    found: list[str] = []
    for path, key, value in _walk(props):
        if key == "image" and isinstance(value, str) and (problem := image_problem(value)):
            found.append(f"{where}: image {value!r} at {path} {problem}; pin a release tag or a digest")
        elif key == "tag" and value == "latest" and resource_type == HELM_RELEASE:
            found.append(f"{where}: values {path} is 'latest'; pin the chart's image to a release tag or digest")
    return found


# --------------------------------------------------------------------------------------------------------------
# Resources


def container_resources(resource_type: str, props: Props) -> list[str]:
    """Every container requests and limits CPU and memory (scheduling, QoS, no noisy neighbours)."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    where = describe(resource_type, props)
    found: list[str] = []
    for container in containers(spec):
        resources = container.get("resources")
        resources = resources if isinstance(resources, Mapping) else {}
        missing = [
            f"{section}.{name}"
            for section in ("requests", "limits")
            for name in ("cpu", "memory")
            if not isinstance(resources.get(section), Mapping) or resources[section].get(name) in (None, "")
        ]
        if missing:
            found.append(
                f"{where}: container {container.get('name')!r} sets no resources {', '.join(missing)}; "
                "every container needs CPU and memory requests and limits"
            )
    return found


def _gpu_like(resource_name: str, names: GpuResourceNames) -> bool:
    return resource_name in names.allowed or resource_name.startswith("nvidia.com/") or "gpu" in resource_name


def _targets_gpu_nodes(spec: Mapping[str, Any], names: GpuResourceNames) -> bool:
    """Whether a pod is placed for GPUs: GPU node selector, GPU taint toleration, HAMi scheduler or nvidia runtime."""
    selector = spec.get("nodeSelector")
    if isinstance(selector, Mapping) and any(str(k).startswith(names.gpu) for k in selector):
        return True
    tolerations = spec.get("tolerations")
    if isinstance(tolerations, Sequence) and any(
        isinstance(t, Mapping) and t.get("key") == names.gpu for t in tolerations
    ):
        return True
    return spec.get("schedulerName") == names.hami_scheduler or spec.get("runtimeClassName") == (
        names.nvidia_runtime_class
    )


def _section(resources: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = resources.get(name)
    return value if isinstance(value, Mapping) else {}


def _gpu_container_problems(
    container: Mapping[str, Any], names: GpuResourceNames, hami: bool
) -> tuple[list[str], bool]:
    """Problems of one container's GPU requests, and whether it requests a GPU at all."""
    label = f"container {container.get('name')!r}"
    resources = container.get("resources")
    resources = resources if isinstance(resources, Mapping) else {}
    requests, limits = _section(resources, "requests"), _section(resources, "limits")
    problems: list[str] = []
    for name in sorted({str(n) for n in (*requests, *limits) if _gpu_like(str(n), names)}):
        if name not in names.allowed:
            problems.append(
                f"{label} requests {name}, which no device plugin here advertises; allowed: {', '.join(names.allowed)}"
            )
        elif name not in limits:
            problems.append(f"{label} sets {name} only in requests; extended resources must be set in limits")
        elif name in requests and str(requests[name]) != str(limits[name]):
            problems.append(
                f"{label} requests {name}={requests[name]} but limits it to {limits[name]}; they must match"
            )
    if any(n in limits for n in names.hami) and names.gpu not in limits:
        problems.append(f"{label} sets HAMi shares without {names.gpu}; HAMi shares apply per requested GPU")
    if hami and names.gpu in limits:
        if not any(n in limits for n in names.hami_memory):
            problems.append(
                f"{label} shares GPUs through HAMi without a memory share ({' or '.join(names.hami_memory)}); "
                "it would be allowed the whole GPU memory"
            )
        cpu_memory_differs = [n for n in ("cpu", "memory") if str(requests.get(n)) != str(limits.get(n))]
        if cpu_memory_differs:
            problems.append(
                f"{label} under HAMi needs Guaranteed QoS: requests must equal limits for "
                f"{', '.join(cpu_memory_differs)} (nvidia-smi fails in the pod otherwise, HAMi#1704)"
            )
    return problems, names.gpu in limits


def gpu_requests(resource_type: str, props: Props, names: GpuResourceNames = DEFAULT_GPU_NAMES) -> list[str]:
    """GPU pods ask for GPUs through the configured resource names, in limits, and HAMi pods for a memory share."""
    spec = pod_spec(resource_type, props)
    if spec is None:
        return []
    where = describe(resource_type, props)
    hami = spec.get("schedulerName") == names.hami_scheduler
    found: list[str] = []
    requests_gpu = False
    for container in containers(spec):
        problems, asks = _gpu_container_problems(container, names, hami)
        found += [f"{where}: {p}" for p in problems]
        requests_gpu = requests_gpu or asks
    if _targets_gpu_nodes(spec, names) and not requests_gpu:
        found.append(
            f"{where}: pod is placed on GPU nodes but no container limits {names.gpu}; the scheduler would not "
            "count it and the container could see every GPU on the node"
        )
    return found


# --------------------------------------------------------------------------------------------------------------
# Triton


def is_triton_workload(resource_type: str, props: Props) -> bool:
    """A workload that runs Triton Inference Server."""
    if kind_of(resource_type, props) not in (*WORKLOAD_KINDS_WITH_TEMPLATE, "Pod"):
        return False
    spec = pod_spec(resource_type, props)
    return spec is not None and any(
        TRITON_IMAGE_MARKER in str(c.get("image", "")) for c in spec.get("containers") or () if isinstance(c, Mapping)
    )


def _http_path(probe: Any) -> str | None:
    path = _at(probe, ("httpGet", "path"))
    return path if isinstance(path, str) else None


def triton_probes(resource_type: str, props: Props) -> list[str]:
    """Triton gates traffic on readiness, survives slow model loads (startup probe) and is never killed for loading."""
    if not is_triton_workload(resource_type, props):
        return []
    spec = pod_spec(resource_type, props) or {}
    where = describe(resource_type, props)
    found: list[str] = []
    for container in spec.get("containers") or ():
        if not isinstance(container, Mapping) or TRITON_IMAGE_MARKER not in str(container.get("image", "")):
            continue
        label = f"{where}: container {container.get('name')!r}"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if not isinstance(container.get(probe), Mapping):
                found.append(f"{label} has no {probe}; Triton needs startup, readiness and liveness probes")
        if _http_path(container.get("livenessProbe")) == "/v2/health/ready":
            found.append(
                f"{label} livenessProbe asks /v2/health/ready; a pod still loading models would be restarted in a "
                "loop - use /v2/health/live for liveness"
            )
        readiness_path = _http_path(container.get("readinessProbe"))
        if readiness_path is not None and readiness_path != "/v2/health/ready":
            found.append(f"{label} readinessProbe asks {readiness_path}; use /v2/health/ready")
    return found


def _selects(selector: Any, labels: Mapping[str, Any]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) matches these labels."""
    if not isinstance(selector, Mapping):
        return False
    match_labels = selector.get("matchLabels")
    expressions = selector.get("matchExpressions")
    if not match_labels and not expressions:
        return False  # an empty PDB selector is a mistake, not "every pod"
    if isinstance(match_labels, Mapping) and any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for expression in expressions or ():
        key, operator = expression.get("key"), expression.get("operator")
        values = list(expression.get("values") or ())
        present = key in labels
        if (
            (operator == "In" and (not present or labels[key] not in values))
            or (operator == "NotIn" and present and labels[key] in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _namespace(props: Props) -> Any:
    return _at(props, ("metadata", "namespace"))


def triton_disruption_budget(resources: Iterable[tuple[str, Props]]) -> list[str]:
    """Stack rule: every Triton workload has a PodDisruptionBudget in its namespace that selects its pods."""
    listed = list(resources)
    budgets = [props for resource_type, props in listed if resource_type == PDB]
    found: list[str] = []
    for resource_type, props in listed:
        if not is_triton_workload(resource_type, props):
            continue
        labels = pod_template_labels(resource_type, props)
        if not any(
            _namespace(pdb) == _namespace(props) and _selects(pdb.get("spec", {}).get("selector"), labels)
            for pdb in budgets
        ):
            found.append(
                f"{describe(resource_type, props)}: no policy/v1 PodDisruptionBudget in its namespace selects its "
                "pods; a node drain could evict every replica at once"
            )
    return found


# --------------------------------------------------------------------------------------------------------------
# Credentials


def _env_literals(props: Props) -> Iterator[tuple[str, str]]:
    for path, key, value in _walk(props):
        if key == "env" and isinstance(value, Sequence) and not isinstance(value, str):
            for index, item in enumerate(value):
                if isinstance(item, Mapping) and item.get("name") in AWS_KEY_NAMES and item.get("value") is not None:
                    yield f"{path}[{index}]", str(item["name"])


def static_aws_keys(resource_type: str, props: Props) -> list[str]:
    """No static AWS keys outside Kubernetes Secrets: env literals, ConfigMaps, provider arguments, anywhere."""
    if resource_type == SECRET:
        return []
    where = describe(resource_type, props)
    if resource_type == DYNAMIC_RESOURCE:
        props = {key: props[key] for key in props if key != DYNAMIC_PROVIDER_KEY}
    found = [
        f"{where}: env {name} at {path} is a literal value; read it from a Secret (valueFrom.secretKeyRef) "
        "or, on AWS, use IRSA"
        for path, name in _env_literals(props)
    ]
    if resource_type == AWS_PROVIDER and not props.get("endpoints"):
        # A provider for an S3-compatible store (custom endpoints: MinIO) has no OIDC; its keys are stack secrets.
        found += [
            f"{where}: provider argument {key} holds a static key; authenticate to AWS with OIDC / an assumed role"
            for key in ("accessKey", "secretKey", "token")
            if props.get(key)
        ]
    if resource_type == DYNAMIC_RESOURCE:
        found += [
            f"{where}: input {key} passes credentials to a dynamic provider, where they would sit in the state; "
            "let it read them from the environment of whoever runs Pulumi (AWS_* variables, a profile, IRSA)"
            for key in props
            if str(key).lower().replace("_", "").replace("-", "") in CREDENTIAL_INPUT_NAMES
        ]
    if kind_of(resource_type, props) == "ConfigMap" and resource_type.startswith("kubernetes:"):
        for section in ("data", "binaryData"):
            entries = props.get(section)
            entries = entries if isinstance(entries, Mapping) else {}
            for key, text in entries.items():
                if str(key).upper() in AWS_KEY_NAMES or AWS_SECRET_IN_TEXT_PATTERN.search(str(text)):
                    found.append(f"{where}: {section}.{key} holds AWS credentials; keys belong in a Secret")
    for path, _, value in _walk(props):
        if isinstance(value, str) and AWS_ACCESS_KEY_ID_PATTERN.search(value):
            found.append(f"{where}: {path} contains an AWS access key id; keys belong in a Secret")
    return found


# --------------------------------------------------------------------------------------------------------------
# Exposure and API versions


def no_load_balancer_services(resource_type: str, props: Props) -> list[str]:
    """Only the gateway is exposed: no Service (or chart Service we configure) of type LoadBalancer.

    Envoy's own Service is created by Envoy Gateway from an EnvoyProxy's ``envoyService``; that one is allowed.
    """
    where = describe(resource_type, props)
    is_service = resource_type.startswith("kubernetes:") and kind_of(resource_type, props) == "Service"
    if resource_type == SERVICE or is_service:
        if _at(props, ("spec", "type")) == "LoadBalancer":
            return [f"{where}: Service of type LoadBalancer; expose traffic through the Envoy gateway instead"]
        return []
    if resource_type != HELM_RELEASE:
        return []
    return [
        f"{where}: values {path} makes a chart Service of type LoadBalancer; keep it ClusterIP behind the gateway"
        for path, key, value in _walk(props.get("values") or {})
        if key == "type" and value == "LoadBalancer" and "service" in path.lower()
    ]


def removed_api_versions(resource_type: str, props: Props) -> list[str]:
    """No Kubernetes API versions the API server has stopped serving."""
    if not resource_type.startswith("kubernetes:"):
        return []
    api_version = api_version_of(resource_type, props)
    if api_version not in REMOVED_API_VERSIONS:
        return []
    removed_in, replacement = REMOVED_API_VERSIONS[api_version]
    return [
        f"{describe(resource_type, props)}: {api_version} {kind_of(resource_type, props)} was removed in "
        f"Kubernetes {removed_in}; use {replacement}"
    ]


RESOURCE_RULES: dict[str, ResourceRule] = {
    "pinned-images": pinned_images,
    "container-resources": container_resources,
    "gpu-resource-names": gpu_requests,
    "triton-probes": triton_probes,
    "no-static-aws-keys": static_aws_keys,
    "no-load-balancer-services": no_load_balancer_services,
    "no-removed-api-versions": removed_api_versions,
}


def resource_violations(resource_type: str, props: Props) -> dict[str, list[str]]:
    """Every resource rule's violations for one resource, by rule name (only rules that found something)."""
    return {name: v for name, rule in RESOURCE_RULES.items() if (v := rule(resource_type, props))}
