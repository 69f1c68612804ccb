"""Stack configuration: every key, its default and its validation, read once into typed settings.

``load_platform_config()`` is the only place that touches ``pulumi.Config``. It reports every problem in one
:class:`ConfigError` (each naming the full key, the bad value and what is allowed) before any resource is
declared. Components receive the frozen settings below and never read config themselves.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pulumi

from components import images, versions
from components.errors import PlatformError
from components.prometheus_rules import duration_seconds
from model_pipeline.specs import DEFAULT_SPECS, SPECS_BY_ARCHITECTURE, STACK_MODEL_DEFAULTS
from model_pipeline.stack import DEFAULT_STACK_MODELS, default_build_dir

NAMESPACE = "inference-platform"
ROOT = Path(__file__).resolve().parents[1]  # the project root (Pulumi.yaml): relative config paths start here
T = TypeVar("T")

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_REGISTRY = re.compile(r"^[a-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._-]+)*$")
_INDEX_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_IMAGE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"  # registry[:port]/path
    r"(:(?P<tag>[\w][\w.-]{0,127}))?(@sha256:[a-f0-9]{64})?$"  # :tag and/or @digest
)
_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)(/(?P<prefix>.*))?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")
_ENDPOINT = re.compile(r"^https?://[0-9a-zA-Z.-]+:[0-9]{1,5}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
_OIDC_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/[A-Za-z0-9.-]+(/[A-Za-z0-9._-]+)*$")
_OIDC_ISSUER = re.compile(r"^[a-z0-9.-]+(/[A-Za-z0-9._-]+)*$")
_K8S_VERSION = re.compile(r"^v?(?P<v>[0-9]+\.[0-9]+\.[0-9]+)$")
_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d))+$")
_QUANTITY_FACTORS = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


class ConfigError(PlatformError, ValueError):
    """The stack configuration is invalid; ``problems`` lists every issue found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid stack configuration ({len(problems)} problem(s)):\n{lines}")


def quantity_value(text: str) -> float:
    """A Kubernetes quantity ("500m", "8Gi") as a number, for comparisons."""
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    # Exact decimal arithmetic first: as floats, 2300m * 0.001 and 2.3 differ, and a request would "exceed" its
    # own limit written the other way.
    return float(Decimal(match.group(1)) * _QUANTITY_FACTORS[match.group(3) or ""])


# --------------------------------------------------------------------------------------------------------------
# The reader: typed getters that record problems instead of raising, so every problem is reported at once.


class _Section:
    """One config object (``triton``, ``gpu.hami``); getters validate and remember which keys were used."""

    def __init__(self, key: str, raw: Any, problems: list[str]) -> None:
        self.key, self.problems = key, problems
        self._used: set[str] = set()
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            self.problem("", raw, "must be an object")
            raw = {}
        self.raw: dict[str, Any] = raw

    def full(self, name: str) -> str:
        return f"{self.key}.{name}" if name else self.key

    def problem(self, name: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{self.full(name)} ({value!r}) {allowed}")

    def _get(self, name: str) -> Any:
        self._used.add(name)
        return self.raw.get(name)

    def raw_value(self, name: str) -> Any:
        """The value as written, unvalidated (for keys checked by hand)."""
        return self._get(name)

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def string(
        self,
        name: str,
        default: T,
        *,
        choices: tuple[str, ...] = (),
        pattern: re.Pattern[str] | None = None,
        allowed: str = "",
    ) -> str | T:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, str):
            self.problem(name, value, "must be a string" + (f": one of {', '.join(choices)}" if choices else ""))
        elif choices and value not in choices:
            self.problem(name, value, f"must be one of {', '.join(choices)}")
        elif pattern is not None and not pattern.match(value):
            self.problem(name, value, f"must be {allowed or 'of the form ' + pattern.pattern}")
        else:
            return value
        return default

    def integer(self, name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(name, value, "must be an integer")
            return default
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(name, value, f"must be {bounds}")
            return default
        return value

    def number(self, name: str, default: T, *, low: float, high: float) -> float | T:
        """A decimal number in [low, high] (e.g. milliseconds); integers are accepted as numbers."""
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and re.fullmatch(r"-?[0-9]+(\.[0-9]*)?", value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.problem(name, value, "must be a number")
            return default
        if not low <= value <= high:
            self.problem(name, value, f"must be between {low:g} and {high:g}")
            return default
        return float(value)

    def boolean(self, name: str, default: bool) -> bool:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.problem(name, value, "must be true or false")
            return default
        return value

    def quantity(self, name: str, default: str) -> str:
        value = self._get(name)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _QUANTITY.match(value):
            self.problem(name, value, "must be a Kubernetes quantity such as 500m, 2, 512Mi or 8Gi")
            return default
        return value

    def duration(self, name: str, default: str) -> str:
        return self.string(name, default, pattern=_DURATION, allowed="a Prometheus duration such as 30s, 5m or 1h")

    def str_map(self, name: str, default: Mapping[str, str]) -> dict[str, str]:
        value = self._get(name)
        if value is None:
            return dict(default)
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            self.problem(name, value, "must be an object of string values")
            return dict(default)
        return dict(value)

    def str_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self._get(name)
        if value is None:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(name, value, "must be a list of non-empty strings")
            return default
        return tuple(value)

    def object_list(self, name: str) -> list[Any]:
        value = self._get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(name, value, "must be a list")
            return []
        return value

    def section(self, name: str) -> _Section:
        return _Section(self.full(name), self._get(name), self.problems)

    def finish(self) -> None:
        """Report keys nobody asked for: usually typos, so suggest the closest allowed key."""
        for unknown in sorted(set(self.raw) - self._used):
            close = difflib.get_close_matches(unknown, sorted(self._used), n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'?" if close else f"allowed keys: {', '.join(sorted(self._used))}"
            self.problems.append(f"{self.full(unknown)} is not a known key; {hint}")


# --------------------------------------------------------------------------------------------------------------
# Settings, one frozen dataclass per section.


@dataclass(frozen=True)
class SourceSettings:
    """Where the Helm charts and the Gateway API CRD manifest come from: upstream unless the stack names a mirror.

    Each component that installs a chart carries a copy in its settings and turns a pin into Release arguments
    with ``release_args(pin, values)``.
    """

    charts: str | None = None  # None: each chart's upstream; else an absolute folder of archives or a repo URL
    gateway_api_crds: str = versions.GATEWAY_API_STANDARD_CRDS  # an http(s) URL or an absolute file path
    image_registry: str | None = None  # a mirror serving every image under <mirror>/<upstream registry>/<path>
    python_index: str | None = None  # a PyPI mirror for the engine Job's install (modelRepository.engineImage: none)

    @property
    def local_charts(self) -> bool:
        """Charts are taken from archives in a local folder."""
        return self.charts is not None and not versions.is_http_url(self.charts)

    def release_args(self, pin: versions.ChartPin, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The chart, version and repository_opts arguments that install ``pin`` from these sources, and with
        ``values`` its values, every image of the chart pulled through the image mirror if there is one."""
        args = pin.release_args(self.charts)
        if values is not None:
            args["values"] = images.chart_values(pin, values, self.image_registry)
        return args


@dataclass(frozen=True)
class KubernetesSettings:
    """Which cluster to talk to, and its control-plane version (HAMi's scheduler must match it)."""

    context: str | None = None
    kubeconfig: str | None = None
    version: str = "1.31.0"


@dataclass(frozen=True)
class HamiSettings:
    """GPU sharing with HAMi: what one Triton pod gets of a physical GPU."""

    namespace: str = "hami-system"
    gpu_memory_mib: int | None = None
    gpu_memory_percent: int | None = None
    gpu_cores_percent: int | None = None
    split_count: int = 10


HAMI_NODE_LABEL = ("gpu", "on")  # HAMi's device plugin selects nodes with it (its chart's default)


@dataclass(frozen=True)
class GpuSettings:
    """The GPU stack: operator features, sharing mode and where GPU workloads run."""

    sharing: str = "whole"  # "whole": nvidia.com/gpu per pod; "hami": HAMi vGPU slices
    mig_strategy: str = "none"
    driver: bool = True
    toolkit: bool = True
    operator_namespace: str = "gpu-operator"
    gpus_per_pod: int = 1
    # GPU nodes are found by a label every node of the group carries, never by name: EKS names change on
    # every node replacement, and a server-side apply patch to a missing name creates a phantom Node.
    node_selector: Mapping[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    tolerations: tuple[Mapping[str, str], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    dcgm_interval: str = "15s"
    hami: HamiSettings = HamiSettings()
    sources: SourceSettings = SourceSettings()  # from the top-level `sources` section

    @property
    def uses_hami(self) -> bool:
        return self.sharing == "hami"

    @property
    def uses_mig(self) -> bool:
        """GPUs are partitioned into MIG devices (Triton cannot read its own GPU metrics on them)."""
        return self.mig_strategy != "none"


@dataclass(frozen=True)
class TritonSettings:
    """The Triton Deployment: image, size, probes and shutdown behaviour."""

    namespace: str = "triton"
    image: str = versions.TRITON_IMAGE
    replicas: int = 1
    cpu_request: str = "2"
    cpu_limit: str = "4"
    memory_request: str = "8Gi"
    memory_limit: str = "8Gi"
    shm_size: str = "1Gi"
    model_cache_size: str = "20Gi"
    startup_budget_seconds: int = 600
    # Rolling updates: extra pods a rollout may add, and pods it may take down. The default never lowers
    # capacity but needs room for one more Triton pod; a GPU node group with no spare slot needs 0 / 1.
    max_surge: int = 1
    max_unavailable: int = 0
    model_control_mode: str = "none"
    exit_timeout_seconds: int = 30
    drain_seconds: int = 10
    log_verbose: int = 0


@dataclass(frozen=True)
class ModelSettings:
    """One served model: what the pipeline builds and Triton loads."""

    name: str
    architecture: str
    backend: str = "onnxruntime"
    precision: str = "fp16"
    batch_min: int = 1
    batch_opt: int = 4
    batch_max: int = 8
    max_queue_delay_us: int = 100
    instances: int = 1


@dataclass(frozen=True)
class ModelRepositorySettings:
    """Where Triton reads its models and with which credentials."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None  # S3-compatible endpoint (MinIO) as Triton and the Jobs reach it: http(s)://host:port
    # The same store as the machine running `pulumi up` reaches it (a cluster-local name does not resolve there).
    publish_endpoint: str | None = None
    region: str = "us-east-1"
    irsa_role_arn: str | None = None
    access_key_id: pulumi.Output[str] | None = None
    secret_access_key: pulumi.Output[str] | None = None
    create_bucket: bool = False  # create the bucket (AWS only); otherwise it must exist
    # What `pulumi destroy` does with a created bucket: "retain" it (and its lifecycle rules, so replaced
    # versions still expire), or "delete" it with every object version in it.
    bucket_on_destroy: str = "retain"
    build_dir: str = "build/model_repository"  # the pipeline's output; parse_config defaults it per stack
    expire_after_days: int = 30  # replaced (noncurrent) object versions are deleted after this many days
    oidc_provider_arn: str | None = None  # the EKS cluster's IAM OIDC provider: IRSA roles are created
    oidc_provider_url: str | None = None  # its issuer without https://, e.g. oidc.eks.<region>.amazonaws.com/id/X
    build_namespace: str = "model-build"  # where engine-build Jobs run
    engine_timeout_seconds: int = 3600  # activeDeadlineSeconds of one engine build
    engine_ttl_seconds: int = 86400  # finished Jobs are removed after this long
    # One engine build: Guaranteed CPU/memory, and scratch disk that fits beside the images on a node's default
    # 20 GiB root volume (ONNX, plan, timing cache and the few wheels the TensorRT image lacks).
    engine_cpu: str = "4"
    engine_memory: str = "16Gi"
    engine_ephemeral_storage: str = "6Gi"
    # An image with the engine Job's packages preinstalled (model_pipeline/engine.Dockerfile); None: the TensorRT
    # container of Triton's release, which installs them at start.
    engine_image: str | None = None
    sources: SourceSettings = SourceSettings()  # from the top-level `sources` section

    @property
    def creates_roles(self) -> bool:
        """IRSA roles for Triton and the engine builds are created from the cluster's OIDC provider."""
        return self.oidc_provider_arn is not None

    @property
    def uses_static_keys(self) -> bool:
        return self.access_key_id is not None

    @property
    def triton_uri(self) -> str:
        """The repository in Triton's own syntax (custom endpoints go inside the URI)."""
        path = "/".join(p for p in (self.bucket, self.prefix) if p)
        if self.endpoint is None:
            return f"s3://{path}"
        scheme, host = self.endpoint.split("://", 1)
        return f"s3://{host}/{path}" if scheme == "http" else f"s3://https://{host}/{path}"


@dataclass(frozen=True)
class AlertThresholds:
    """What the platform's alerts compare against (see components/prometheus_rules.py)."""

    queue_time_slo_ms: float = 100.0
    failure_ratio: float = 0.05
    min_request_rate: float = 0.1  # req/s per model below which ratios are noise
    restarts: int = 2  # container restarts within 30 minutes
    gpu_utilisation: float = 0.9
    gpu_memory_ratio: float = 0.9  # used / HAMi limit


@dataclass(frozen=True)
class MonitoringSettings:
    """kube-prometheus-stack: scraping, rule evaluation, storage, Grafana and alert routing."""

    namespace: str = "monitoring"
    release_name: str = "monitoring"
    scrape_interval: str = "15s"
    rule_interval: str = "15s"
    recording_window: str = "1m"  # window of the per-request latency records the HPA reads
    alert_window: str = "5m"
    retention: str = "15d"
    retention_size: str | None = None  # e.g. 45GB; Prometheus deletes oldest blocks beyond it
    storage_size: str = "50Gi"
    storage_class: str | None = None  # None: the cluster's default class (EKS >= 1.30 has none)
    create_storage_class: bool = False  # create storage_class as an encrypted EBS gp3 class (EBS CSI driver)
    grafana_storage_size: str | None = None
    slack_channel: str = "#inference-alerts"
    runbook_base_url: str = "README.md"
    alerts: AlertThresholds = AlertThresholds()
    # Secrets (Outputs); each alert URL that is set adds its receiver, none routes everything to 'null'.
    grafana_admin_password: pulumi.Output[str] | None = None
    alert_webhook_url: pulumi.Output[str] | None = None
    alert_slack_webhook_url: pulumi.Output[str] | None = None
    sources: SourceSettings = SourceSettings()  # from the top-level `sources` section

    @property
    def receivers(self) -> tuple[str, ...]:
        """Alertmanager receivers that have a URL: webhook and/or slack."""
        urls = (("webhook", self.alert_webhook_url), ("slack", self.alert_slack_webhook_url))
        return tuple(name for name, url in urls if url is not None)


@dataclass(frozen=True)
class ScalingPolicy:
    """One HPA scaling policy: change by ``value`` pods or percent per ``period_seconds``."""

    type: str  # "Pods" | "Percent"
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    """One direction of the HPA's ``behavior``."""

    stabilization_window_seconds: int
    select_policy: str  # "Max" | "Min" | "Disabled"
    policies: tuple[ScalingPolicy, ...]


# Scale up fast (double, or +4 pods, every 15 s, no stabilisation); scale down slowly (1 pod a minute, after the
# queue time has been low for 5 minutes), so a short lull does not throw away warm GPU replicas.
DEFAULT_SCALE_UP = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)))
DEFAULT_SCALE_DOWN = ScalingRules(300, "Max", (ScalingPolicy("Pods", 1, 60),))


@dataclass(frozen=True)
class AutoscalingSettings:
    """prometheus-adapter and the HPA on Triton's average queue time per request."""

    enabled: bool = False
    min_replicas: int = 1
    max_replicas: int = 1
    target_queue_time_ms: float = 50.0
    pending_requests_target: float | None = None  # second HPA metric: queued requests per pod
    adapter_relist_interval: str = "30s"
    adapter_replicas: int = 1
    scale_up: ScalingRules = DEFAULT_SCALE_UP
    scale_down: ScalingRules = DEFAULT_SCALE_DOWN
    sources: SourceSettings = SourceSettings()  # from the top-level `sources` section


@dataclass(frozen=True)
class RetrySettings:
    """Gateway retries: only for failures where the request cannot have been served twice by design."""

    attempts: int = 2
    on: tuple[str, ...] = (
        "connect-failure",
        "refused-stream",
        "reset-before-request",
        "unavailable",
        "retriable-status-codes",
    )
    status_codes: tuple[int, ...] = (503,)
    per_try_timeout: str = "30s"
    backoff_base: str = "100ms"
    backoff_max: str = "1s"


@dataclass(frozen=True)
class HealthCheckSettings:
    """Active health checks (Envoy probes each replica) and passive outlier detection (real traffic)."""

    interval: str = "5s"
    timeout: str = "1s"
    unhealthy_threshold: int = 2
    healthy_threshold: int = 1
    consecutive_5xx: int = 5
    consecutive_gateway_errors: int = 3
    outlier_interval: str = "5s"
    base_ejection_time: str = "30s"
    max_ejection_percent: int = 50


@dataclass(frozen=True)
class CircuitBreakerSettings:
    """Per-cluster limits Envoy enforces before it sheds load with 503."""

    max_connections: int = 1024
    max_pending_requests: int = 1024
    max_parallel_requests: int = 1024
    max_parallel_retries: int = 16


@dataclass(frozen=True)
class LoadBalancerSettings:
    """Envoy Gateway in front of Triton: per-request balancing over every replica, HTTP and gRPC."""

    enabled: bool = False
    namespace: str = "envoy-gateway-system"
    service_type: str = "LoadBalancer"
    http_port: int = 80
    grpc_port: int = 8001
    tls_enabled: bool = False
    certificate_secret: str | None = None  # kubernetes.io/tls Secret in `namespace`
    hostnames: tuple[str, ...] = ()
    proxy_replicas: int = 1
    request_timeout: str = "60s"
    connect_timeout: str = "5s"
    retries: RetrySettings = RetrySettings()
    health: HealthCheckSettings = HealthCheckSettings()
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()
    sources: SourceSettings = SourceSettings()  # from the top-level `sources` section

    @property
    def data_plane_namespace(self) -> str:
        """Where the Envoy pods run: Envoy Gateway's default puts them in the controller's namespace."""
        return self.namespace


@dataclass(frozen=True)
class PlatformConfig:
    """The whole validated stack configuration."""

    stack: str
    kubernetes: KubernetesSettings
    gpu: GpuSettings
    triton: TritonSettings
    models: tuple[ModelSettings, ...]
    model_repository: ModelRepositorySettings
    monitoring: MonitoringSettings
    autoscaling: AutoscalingSettings
    load_balancer: LoadBalancerSettings
    sources: SourceSettings = SourceSettings()

    @property
    def triton_clients(self) -> tuple[str, ...]:
        """Namespaces whose pods may reach Triton's HTTP and gRPC ports: the gateway's data plane, if any."""
        return (self.load_balancer.data_plane_namespace,) if self.load_balancer.enabled else ()

    @property
    def rollout_replicas(self) -> int:
        """The most Triton pods one rollout replaces: the HPA's maximum when it scales, else the fixed count."""
        return self.autoscaling.max_replicas if self.autoscaling.enabled else self.triton.replicas

    @property
    def charts(self) -> tuple[versions.ChartPin, ...]:
        """Every chart this stack installs, in the order the components declare them."""
        pins = [versions.KUBE_PROMETHEUS_STACK, versions.GPU_OPERATOR]
        if self.gpu.uses_hami:
            pins.append(versions.HAMI)
        if self.autoscaling.enabled:
            pins.append(versions.PROMETHEUS_ADAPTER)
        if self.load_balancer.enabled:
            pins += [versions.ENVOY_GATEWAY_CRDS, versions.ENVOY_GATEWAY]
        return tuple(pins)


# --------------------------------------------------------------------------------------------------------------
# Section parsers: one per top-level key.


def _kubernetes(s: _Section) -> KubernetesSettings:
    version = s.string(
        "version", KubernetesSettings.version, pattern=_K8S_VERSION, allowed="the control plane's version, e.g. 1.31.4"
    )
    return KubernetesSettings(
        context=s.string("context", None),
        kubeconfig=s.string("kubeconfig", None),
        version=version.lstrip("v"),
    )


def _hami(s: _Section) -> HamiSettings:
    settings = HamiSettings(
        namespace=s.string("namespace", HamiSettings.namespace, pattern=_DNS_LABEL, allowed="a DNS label"),
        gpu_memory_mib=s.integer("gpuMemoryMiB", 0, low=256, high=262144) or None,
        gpu_memory_percent=s.integer("gpuMemoryPercent", 0, low=1, high=100) or None,
        gpu_cores_percent=s.integer("gpuCoresPercent", 0, low=1, high=100) or None,
        split_count=s.integer("splitCount", HamiSettings.split_count, low=1, high=64),
    )
    if settings.gpu_memory_mib and settings.gpu_memory_percent:
        s.problem("gpuMemoryPercent", settings.gpu_memory_percent, "cannot be set together with gpuMemoryMiB")
    return settings


def _tolerations(s: _Section) -> tuple[Mapping[str, str], ...] | None:
    allowed_keys = {"key", "operator", "value", "effect", "tolerationSeconds"}
    raw = s.object_list("tolerations")
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not set(item) <= allowed_keys:
            s.problem(f"tolerations[{index}]", item, f"must be an object with keys among {sorted(allowed_keys)}")
            return None
        if item.get("operator", "Equal") not in ("Equal", "Exists"):
            s.problem(f"tolerations[{index}].operator", item["operator"], "must be Equal or Exists")
            return None
    return tuple(raw) if s.has("tolerations") else None


def _or_default(value: T | None, default: T) -> T:
    return default if value is None else value


def _gpu(s: _Section) -> GpuSettings:
    defaults = GpuSettings()
    sharing = s.string("sharing", defaults.sharing, choices=("whole", "hami"))
    hami = _hami(s.section("hami"))
    settings = GpuSettings(
        sharing=sharing,
        mig_strategy=s.string("migStrategy", defaults.mig_strategy, choices=("none", "single", "mixed")),
        driver=s.boolean("driver", defaults.driver),
        toolkit=s.boolean("toolkit", defaults.toolkit),
        operator_namespace=s.string(
            "operatorNamespace", defaults.operator_namespace, pattern=_DNS_LABEL, allowed="a DNS label"
        ),
        gpus_per_pod=s.integer("gpusPerPod", defaults.gpus_per_pod, low=1, high=8),
        # HAMi's own convention: GPU nodes labelled gpu=on (the whole-GPU default is GPU Feature Discovery's).
        node_selector=s.str_map(
            "nodeSelector", dict([HAMI_NODE_LABEL]) if sharing == "hami" else defaults.node_selector
        ),
        tolerations=_or_default(_tolerations(s), defaults.tolerations),
        dcgm_interval=s.duration("dcgmInterval", defaults.dcgm_interval),
        hami=hami,
    )
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
    if not settings.uses_hami and (hami.gpu_memory_mib or hami.gpu_memory_percent or hami.gpu_cores_percent):
        s.problems.append("gpu.hami: GPU memory/core shares only apply when gpu.sharing is hami")
    return settings


def _triton(s: _Section) -> TritonSettings:
    d = TritonSettings()
    image = s.string("image", d.image, pattern=_IMAGE, allowed="an image reference with an explicit tag or digest")
    match = _IMAGE.match(image)
    if match and not match.group("tag") and "@sha256:" not in image:
        s.problem("image", image, "must carry an explicit version tag or digest")
    elif match and match.group("tag") == "latest":
        s.problem("image", image, f"must not use the 'latest' tag: pin a release such as {versions.TRITON_IMAGE}")
    settings = TritonSettings(
        namespace=s.string("namespace", d.namespace, pattern=_DNS_LABEL, allowed="a DNS label"),
        image=image,
        replicas=s.integer("replicas", d.replicas, low=1, high=64),
        cpu_request=s.quantity("cpuRequest", d.cpu_request),
        cpu_limit=s.quantity("cpuLimit", d.cpu_limit),
        memory_request=s.quantity("memoryRequest", d.memory_request),
        memory_limit=s.quantity("memoryLimit", d.memory_limit),
        shm_size=s.quantity("shmSize", d.shm_size),
        model_cache_size=s.quantity("modelCacheSize", d.model_cache_size),
        startup_budget_seconds=s.integer("startupBudgetSeconds", d.startup_budget_seconds, low=30, high=7200),
        max_surge=s.integer("maxSurge", d.max_surge, low=0, high=64),
        max_unavailable=s.integer("maxUnavailable", d.max_unavailable, low=0, high=64),
        model_control_mode=s.string("modelControlMode", d.model_control_mode, choices=("none", "explicit")),
        exit_timeout_seconds=s.integer("exitTimeoutSeconds", d.exit_timeout_seconds, low=1, high=600),
        drain_seconds=s.integer("drainSeconds", d.drain_seconds, low=0, high=120),
        log_verbose=s.integer("logVerbose", d.log_verbose, low=0, high=3),
    )
    if settings.max_surge == settings.max_unavailable == 0:
        s.problem("maxUnavailable", 0, "must be at least 1 when triton.maxSurge is 0, or no rollout can progress")
    for what, request, limit in (
        ("cpu", settings.cpu_request, settings.cpu_limit),
        ("memory", settings.memory_request, settings.memory_limit),
    ):
        if quantity_value(request) > quantity_value(limit):
            s.problem(f"{what}Request", request, f"must not exceed triton.{what}Limit ({limit})")
    return settings


# Defaults per architecture come from the pipeline's own specs, so config and build cannot drift apart.
_SPECS_BY_ARCHITECTURE = SPECS_BY_ARCHITECTURE
_ARCHITECTURES = {name: spec.architecture for name, spec in DEFAULT_SPECS.items()}


def _model(s: _Section) -> ModelSettings | None:
    name = s.string("name", "", pattern=_MODEL_NAME, allowed="a lower-case model name (letters, digits, - and _)")
    if not s.has("name"):
        s.problem("name", None, "is required")
    architectures = tuple(_SPECS_BY_ARCHITECTURE)
    architecture = s.string("architecture", _ARCHITECTURES.get(name, ""), choices=architectures)
    if not architecture:
        s.problem("architecture", None, f"is required for model {name!r}: one of {', '.join(architectures)}")
        return None
    spec = _SPECS_BY_ARCHITECTURE[architecture]
    low, opt, high = spec.profile.min, spec.profile.opt, spec.profile.max
    queue_delay = spec.dynamic_batching.max_queue_delay_us if spec.dynamic_batching else 0
    batch = s.section("batch")
    settings = ModelSettings(
        name=name,
        architecture=architecture,
        backend=s.string("backend", STACK_MODEL_DEFAULTS["backend"], choices=("onnxruntime", "tensorrt")),
        precision=s.string("precision", STACK_MODEL_DEFAULTS["precision"], choices=("fp16", "fp32")),
        batch_min=batch.integer("min", low, low=1, high=1024),
        batch_opt=batch.integer("opt", opt, low=1, high=1024),
        batch_max=batch.integer("max", high, low=1, high=1024),
        max_queue_delay_us=s.integer("maxQueueDelayUs", queue_delay, low=0, high=1_000_000),
        instances=s.integer("instances", STACK_MODEL_DEFAULTS["instances"], low=1, high=16),
    )
    batch.finish()
    if not settings.batch_min <= settings.batch_opt <= settings.batch_max:
        profile = [settings.batch_min, settings.batch_opt, settings.batch_max]
        batch.problem("", profile, "must satisfy min <= opt <= max")
    return settings


def _models(raw: Any, problems: list[str]) -> tuple[ModelSettings, ...]:
    if raw is None:
        raw = [dict(m) for m in DEFAULT_STACK_MODELS]
    if not isinstance(raw, list) or not raw:
        problems.append(f"models ({raw!r}) must be a non-empty list of models")
        return ()
    models: list[ModelSettings] = []
    for index, item in enumerate(raw):
        section = _Section(f"models[{index}]", item, problems)
        model = _model(section)
        section.finish()
        if model is not None:
            models.append(model)
    names = [m.name for m in models]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"models ({duplicate!r}) is listed more than once; model names must be unique")
    return tuple(models)


def _model_repository(
    s: _Section, secrets: Mapping[str, pulumi.Output[str] | None], stack: str
) -> ModelRepositorySettings:
    uri = s.string("uri", "", pattern=_S3_URI, allowed="an S3 URI: s3://bucket/prefix")
    if not s.has("uri"):
        s.problem("uri", None, "is required: the S3 location of the model repository, s3://bucket/prefix")
    match = _S3_URI.match(uri)
    bucket, prefix = (match.group("bucket"), (match.group("prefix") or "").strip("/")) if match else ("", "")
    if match and not _BUCKET.match(bucket):
        s.problem("uri", uri, "must name a valid bucket: 3-63 lower-case letters, digits, dots and hyphens")
    if match and not _PREFIX.match(prefix):
        s.problem("uri", uri, "must have a prefix of S3-safe characters (letters, digits, !_.*'()/-)")
    settings = ModelRepositorySettings(
        bucket=bucket,
        prefix=prefix,
        endpoint=s.string(
            "endpoint", None, pattern=_ENDPOINT, allowed="http(s)://host:port (an S3-compatible endpoint)"
        ),
        publish_endpoint=s.string(
            "publishEndpoint",
            None,
            pattern=_ENDPOINT,
            allowed="http(s)://host:port (the endpoint as `pulumi up` reaches it)",
        ),
        region=s.string("region", "us-east-1", pattern=_REGION, allowed="an AWS region such as eu-west-1"),
        irsa_role_arn=s.string("irsaRoleArn", None, pattern=_ROLE_ARN, allowed="an IAM role ARN"),
        access_key_id=secrets.get("s3AccessKeyId"),
        secret_access_key=secrets.get("s3SecretAccessKey"),
        create_bucket=s.boolean("createBucket", False),
        bucket_on_destroy=s.string(
            "bucketOnDestroy", ModelRepositorySettings.bucket_on_destroy, choices=("retain", "delete")
        ),
        build_dir=s.string("buildDir", default_build_dir(stack)),
        expire_after_days=s.integer("expireAfterDays", ModelRepositorySettings.expire_after_days, low=1, high=3650),
        oidc_provider_arn=s.string("oidcProviderArn", None, pattern=_OIDC_ARN, allowed="an IAM OIDC provider ARN"),
        oidc_provider_url=s.string(
            "oidcProviderUrl",
            None,
            pattern=_OIDC_ISSUER,
            allowed="the issuer without https://: oidc.eks.<region>.amazonaws.com/id/<ID>",
        ),
        build_namespace=s.string(
            "buildNamespace", ModelRepositorySettings.build_namespace, pattern=_DNS_LABEL, allowed="a DNS label"
        ),
        engine_timeout_seconds=s.integer(
            "engineTimeoutSeconds", ModelRepositorySettings.engine_timeout_seconds, low=300, high=86400
        ),
        engine_ttl_seconds=s.integer(
            "engineTtlSeconds", ModelRepositorySettings.engine_ttl_seconds, low=60, high=30 * 86400
        ),
        engine_cpu=s.quantity("engineCpu", ModelRepositorySettings.engine_cpu),
        engine_memory=s.quantity("engineMemory", ModelRepositorySettings.engine_memory),
        engine_ephemeral_storage=s.quantity("engineEphemeralStorage", ModelRepositorySettings.engine_ephemeral_storage),
        engine_image=s.string(
            "engineImage", None, pattern=_IMAGE, allowed="an image reference with an explicit tag or digest"
        ),
    )
    engine = _IMAGE.match(settings.engine_image or "")
    if engine and not (engine.group("tag") or "@sha256:" in (settings.engine_image or "")):
        s.problem("engineImage", settings.engine_image, "must carry an explicit version tag or digest")
    _check_repository_access(s, settings)
    if (settings.access_key_id is None) != (settings.secret_access_key is None):
        s.problems.append("s3AccessKeyId and s3SecretAccessKey must be set together (as secrets)")
    if settings.uses_static_keys and settings.irsa_role_arn:
        s.problem(
            "irsaRoleArn",
            settings.irsa_role_arn,
            "cannot be combined with static S3 keys: Triton would silently prefer the keys",
        )
    return settings


_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")  # Prometheus sizes are base 2
_RETENTION_SIZE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>B|KB|MB|GB|TB|PB)$")


def _alert_thresholds(s: _Section) -> AlertThresholds:
    d = AlertThresholds()
    thresholds = AlertThresholds(
        queue_time_slo_ms=s.number("queueTimeSloMs", d.queue_time_slo_ms, low=0.001, high=600_000),
        failure_ratio=s.number("failureRatio", d.failure_ratio, low=0.0001, high=1),
        min_request_rate=s.number("minRequestRate", d.min_request_rate, low=0, high=100_000),
        restarts=s.integer("restarts", d.restarts, low=1, high=100),
        gpu_utilisation=s.number("gpuUtilisation", d.gpu_utilisation, low=0.01, high=1),
        gpu_memory_ratio=s.number("gpuMemoryRatio", d.gpu_memory_ratio, low=0.01, high=1),
    )
    s.finish()
    return thresholds


def _cluster_local(endpoint: str) -> bool:
    host = endpoint.split("://", 1)[1].rsplit(":", 1)[0]
    return host.endswith((".svc", ".cluster.local")) or ("." not in host and host != "localhost")


def _check_repository_access(s: _Section, settings: ModelRepositorySettings) -> None:
    """Bucket and IAM are only created on AWS; IRSA roles come either from config or from the OIDC provider."""
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


def _monitoring(s: _Section) -> MonitoringSettings:
    d = MonitoringSettings()
    settings = MonitoringSettings(
        namespace=s.string("namespace", d.namespace, pattern=_DNS_LABEL, allowed="a DNS label"),
        release_name=s.string("releaseName", d.release_name, pattern=_DNS_LABEL, allowed="a DNS label"),
        scrape_interval=s.duration("scrapeInterval", d.scrape_interval),
        rule_interval=s.duration("ruleInterval", d.rule_interval),
        recording_window=s.duration("recordingWindow", d.recording_window),
        alert_window=s.duration("alertWindow", d.alert_window),
        retention=s.duration("retention", d.retention),
        retention_size=s.string("retentionSize", None, pattern=_RETENTION_SIZE, allowed="a size such as 45GB"),
        storage_size=s.quantity("storageSize", d.storage_size),
        storage_class=s.string("storageClass", None, pattern=_DNS_LABEL, allowed="a StorageClass name"),
        create_storage_class=s.boolean("createStorageClass", d.create_storage_class),
        grafana_storage_size=s.string("grafanaStorageSize", None, pattern=_QUANTITY, allowed="a quantity like 10Gi"),
        slack_channel=s.string(
            "slackChannel",
            d.slack_channel,
            pattern=re.compile(r"^[#@][\w.-]{1,80}$"),
            allowed="a Slack channel such as #inference-alerts",
        ),
        runbook_base_url=s.string(
            "runbookBaseUrl",
            d.runbook_base_url,
            pattern=re.compile(r"^\S+$"),
            allowed="a URL of the README that holds the runbooks",
        ),
        alerts=_alert_thresholds(s.section("alerts")),
    )
    for window, key in ((settings.recording_window, "recordingWindow"), (settings.alert_window, "alertWindow")):
        # rate()/increase() need several samples in the window; Prometheus' guidance is 4 scrape intervals.
        if duration_seconds(window) < 4 * duration_seconds(settings.scrape_interval):
            s.problem(key, window, f"must be at least 4 x monitoring.scrapeInterval ({settings.scrape_interval})")
    if settings.create_storage_class and not settings.storage_class:
        s.problem("createStorageClass", True, "needs monitoring.storageClass: the name of the class to create")
    size = _RETENTION_SIZE.match(settings.retention_size or "")
    if size and int(size["n"]) * 1024 ** _SIZE_UNITS.index(size["unit"]) >= quantity_value(settings.storage_size):
        s.problem(
            "retentionSize",
            settings.retention_size,
            f"must be smaller than monitoring.storageSize ({settings.storage_size}) or Prometheus fills its disk",
        )
    return settings


def _with_monitoring_secrets(
    settings: MonitoringSettings, secrets: Mapping[str, pulumi.Output[str] | None]
) -> MonitoringSettings:
    """Grafana's admin password and the alert receiver URLs come only from secrets."""
    return dataclasses.replace(
        settings,
        grafana_admin_password=secrets.get("grafanaAdminPassword"),
        alert_webhook_url=secrets.get("alertWebhookUrl"),
        alert_slack_webhook_url=secrets.get("alertSlackWebhookUrl"),
    )


def _scaling_policy(s: _Section, index: int, item: Any) -> ScalingPolicy | None:
    policy = _Section(s.full(f"policies[{index}]"), item, s.problems)
    kind = policy.string("type", "", choices=("Pods", "Percent"))
    if not policy.has("type"):
        policy.problem("type", None, "is required: Pods or Percent")
    result = ScalingPolicy(
        type=kind,
        value=policy.integer("value", 0, low=1, high=1000),
        period_seconds=policy.integer("periodSeconds", 0, low=1, high=1800),
    )
    for key in ("value", "periodSeconds"):
        if not policy.has(key):
            policy.problem(key, None, "is required")
    policy.finish()
    return result if kind and result.value and result.period_seconds else None


def _scaling_rules(s: _Section, default: ScalingRules) -> ScalingRules:
    select = s.string("selectPolicy", default.select_policy, choices=("Max", "Min", "Disabled"))
    policies = tuple(p for i, item in enumerate(s.object_list("policies")) if (p := _scaling_policy(s, i, item)))
    if s.has("policies") and not policies and select != "Disabled":
        s.problem("policies", s.raw.get("policies"), "must list at least one policy unless selectPolicy is Disabled")
    return ScalingRules(
        stabilization_window_seconds=s.integer(
            "stabilizationWindowSeconds", default.stabilization_window_seconds, low=0, high=3600
        ),
        select_policy=select,
        policies=policies if s.has("policies") else default.policies,
    )


def _autoscaling(s: _Section) -> AutoscalingSettings:
    d = AutoscalingSettings()
    scale_up, scale_down = s.section("scaleUp"), s.section("scaleDown")
    settings = AutoscalingSettings(
        enabled=s.boolean("enabled", d.enabled),
        min_replicas=s.integer("minReplicas", d.min_replicas, low=1, high=64),
        max_replicas=s.integer("maxReplicas", d.max_replicas, low=1, high=64),
        target_queue_time_ms=s.number("targetQueueTimeMs", d.target_queue_time_ms, low=0.001, high=600_000),
        pending_requests_target=s.number("pendingRequestsTarget", None, low=0.001, high=100_000),
        adapter_relist_interval=s.duration("adapterRelistInterval", d.adapter_relist_interval),
        adapter_replicas=s.integer("adapterReplicas", d.adapter_replicas, low=1, high=5),
        scale_up=_scaling_rules(scale_up, d.scale_up),
        scale_down=_scaling_rules(scale_down, d.scale_down),
    )
    scale_up.finish()
    scale_down.finish()
    if settings.max_replicas < settings.min_replicas:
        s.problem("maxReplicas", settings.max_replicas, f"must be >= autoscaling.minReplicas ({settings.min_replicas})")
    return settings


_RETRY_TRIGGERS = (
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
)
# Envoy Gateway's duration syntax (no days), as its CRDs validate it.
_ENVOY_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")


def _envoy_duration(s: _Section, name: str, default: str) -> str:
    return s.string(name, default, pattern=_ENVOY_DURATION, allowed="a duration such as 500ms, 5s or 1m (no days)")


def _retries(s: _Section) -> RetrySettings:
    d = RetrySettings()
    on = s.str_list("on", d.on)
    unknown = [t for t in on if t not in _RETRY_TRIGGERS]
    if unknown:
        s.problem("on", list(on), f"may only contain {', '.join(_RETRY_TRIGGERS)}")
    codes = s.object_list("statusCodes") if s.has("statusCodes") else list(d.status_codes)
    if not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        s.problem("statusCodes", codes, "must be a list of HTTP status codes (100-599)")
        codes = list(d.status_codes)
    return RetrySettings(
        attempts=s.integer("attempts", d.attempts, low=0, high=10),
        on=d.on if unknown else on,
        status_codes=tuple(codes),
        per_try_timeout=_envoy_duration(s, "perTryTimeout", d.per_try_timeout),
        backoff_base=_envoy_duration(s, "backoffBase", d.backoff_base),
        backoff_max=_envoy_duration(s, "backoffMax", d.backoff_max),
    )


def _health(s: _Section) -> HealthCheckSettings:
    d = HealthCheckSettings()
    return HealthCheckSettings(
        interval=_envoy_duration(s, "interval", d.interval),
        timeout=_envoy_duration(s, "timeout", d.timeout),
        unhealthy_threshold=s.integer("unhealthyThreshold", d.unhealthy_threshold, low=1, high=100),
        healthy_threshold=s.integer("healthyThreshold", d.healthy_threshold, low=1, high=100),
        consecutive_5xx=s.integer("consecutive5xx", d.consecutive_5xx, low=1, high=1000),
        consecutive_gateway_errors=s.integer(
            "consecutiveGatewayErrors", d.consecutive_gateway_errors, low=1, high=1000
        ),
        outlier_interval=_envoy_duration(s, "outlierInterval", d.outlier_interval),
        base_ejection_time=_envoy_duration(s, "baseEjectionTime", d.base_ejection_time),
        max_ejection_percent=s.integer("maxEjectionPercent", d.max_ejection_percent, low=1, high=100),
    )


def _circuit_breaker(s: _Section) -> CircuitBreakerSettings:
    d = CircuitBreakerSettings()
    return CircuitBreakerSettings(
        max_connections=s.integer("maxConnections", d.max_connections, low=1, high=1_000_000),
        max_pending_requests=s.integer("maxPendingRequests", d.max_pending_requests, low=1, high=1_000_000),
        max_parallel_requests=s.integer("maxParallelRequests", d.max_parallel_requests, low=1, high=1_000_000),
        max_parallel_retries=s.integer("maxParallelRetries", d.max_parallel_retries, low=1, high=1_000_000),
    )


def _load_balancer(s: _Section) -> LoadBalancerSettings:
    d = LoadBalancerSettings()
    tls, retries, health, breaker = (
        s.section("tls"),
        s.section("retries"),
        s.section("healthCheck"),
        s.section("circuitBreaker"),
    )
    settings = LoadBalancerSettings(
        enabled=s.boolean("enabled", d.enabled),
        namespace=s.string("namespace", d.namespace, pattern=_DNS_LABEL, allowed="a DNS label"),
        service_type=s.string("serviceType", d.service_type, choices=("LoadBalancer", "NodePort", "ClusterIP")),
        http_port=s.integer("httpPort", d.http_port, low=1, high=65535),
        grpc_port=s.integer("grpcPort", d.grpc_port, low=1, high=65535),
        tls_enabled=tls.boolean("enabled", d.tls_enabled),
        certificate_secret=tls.string("certificateSecret", None, pattern=_DNS_LABEL, allowed="a Secret name"),
        hostnames=s.str_list("hostnames"),
        proxy_replicas=s.integer("proxyReplicas", d.proxy_replicas, low=1, high=32),
        request_timeout=_envoy_duration(s, "requestTimeout", d.request_timeout),
        connect_timeout=_envoy_duration(s, "connectTimeout", d.connect_timeout),
        retries=_retries(retries),
        health=_health(health),
        circuit_breaker=_circuit_breaker(breaker),
    )
    for section in (tls, retries, health, breaker):
        section.finish()
    if settings.tls_enabled and not settings.certificate_secret:
        tls.problem(
            "certificateSecret",
            None,
            "is required when loadBalancer.tls.enabled is true: a kubernetes.io/tls Secret in loadBalancer.namespace",
        )
    if settings.http_port == settings.grpc_port:
        s.problem("grpcPort", settings.grpc_port, "must differ from loadBalancer.httpPort: each has its own listener")
    return settings


_CHARTS_ALLOWED = (
    "a folder holding the pinned chart archives (<chart>-<version>.tgz, relative to the project "
    "root) or the http(s):// URL of a Helm chart repository"
)
_CRDS_ALLOWED = (
    "a local file (relative to the project root) or an http(s):// URL of the Gateway API standard-install manifest"
)


def _url_problem(text: str) -> str | None:
    """Why ``text`` is not a usable http(s) URL, or None."""
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return "has an invalid port"
    if parts.scheme not in ("http", "https"):
        return "must use http:// or https://"
    if not parts.hostname or re.search(r"\s", text):
        return "must name a host and contain no spaces"
    return None


def _source_path(s: _Section, name: str, value: str, root: Path, *, folder: bool, allowed: str) -> str | None:
    """A local source as an absolute path, or None (with a problem) when it is missing or of the wrong kind."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    path = path.resolve()
    kind_ok = path.is_dir() if folder else path.is_file()
    if not kind_ok:
        what = "an existing folder" if folder else "an existing file"
        s.problem(name, value, f"must be {allowed}: {path} is not {what}")
        return None
    return str(path)


def _sources(s: _Section, root: Path) -> SourceSettings:
    d = SourceSettings()
    charts = s.string("charts", None)
    crds = s.string("gatewayApiCrds", None)
    resolved_charts, resolved_crds = None, d.gateway_api_crds
    for name, value in (("charts", charts), ("gatewayApiCrds", crds)):
        if value is not None and not value.strip():
            s.problem(name, value, "must not be empty; leave it unset for the upstream source")
    if charts is not None and charts.strip():
        if "://" in charts:
            why = _url_problem(charts)
            if why is None and charts.rstrip("/").endswith("index.yaml"):
                why = "must be the repository's URL, without /index.yaml"
            if why:
                s.problem("charts", charts, f"{why}: {_CHARTS_ALLOWED}")
            else:
                resolved_charts = charts
        else:
            resolved_charts = _source_path(s, "charts", charts, root, folder=True, allowed=_CHARTS_ALLOWED)
    if crds is not None and crds.strip():
        if "://" in crds:
            why = _url_problem(crds) or (None if urlsplit(crds).path.strip("/") else "must name the manifest's path")
            if why:
                s.problem("gatewayApiCrds", crds, f"{why}: {_CRDS_ALLOWED}")
            else:
                resolved_crds = crds
        else:
            resolved_crds = (
                _source_path(s, "gatewayApiCrds", crds, root, folder=False, allowed=_CRDS_ALLOWED) or d.gateway_api_crds
            )
    return SourceSettings(
        charts=resolved_charts,
        gateway_api_crds=resolved_crds,
        image_registry=s.string(
            "imageRegistry",
            None,
            pattern=_REGISTRY,
            allowed="a registry host and optional path, without scheme: harbor.example.com/mirror",
        ),
        python_index=s.string(
            "pythonIndex",
            None,
            pattern=_INDEX_URL,
            allowed="the http(s) URL of a PyPI simple index: https://pypi.example.com/simple",
        ),
    )


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


def _with_sources(cfg: PlatformConfig) -> PlatformConfig:
    """Every component that installs a chart or runs an image gets the stack's sources in its settings; the
    default Triton image comes through the image mirror (an image the stack names itself is taken as it is)."""
    triton_image = cfg.triton.image
    if triton_image == TritonSettings.image:
        triton_image = images.mirrored(triton_image, cfg.sources.image_registry)
    return dataclasses.replace(
        cfg,
        triton=dataclasses.replace(cfg.triton, image=triton_image),
        model_repository=dataclasses.replace(cfg.model_repository, sources=cfg.sources),
        gpu=dataclasses.replace(cfg.gpu, sources=cfg.sources),
        monitoring=dataclasses.replace(cfg.monitoring, sources=cfg.sources),
        autoscaling=dataclasses.replace(cfg.autoscaling, sources=cfg.sources),
        load_balancer=dataclasses.replace(cfg.load_balancer, sources=cfg.sources),
    )


# Top-level keys: parser per object key, plus the keys that may only be set as secrets.
_SECTIONS: dict[str, Callable[[_Section], Any]] = {
    "kubernetes": _kubernetes,
    "gpu": _gpu,
    "triton": _triton,
    "monitoring": _monitoring,
    "autoscaling": _autoscaling,
    "loadBalancer": _load_balancer,
}
SECRET_KEYS = ("s3AccessKeyId", "s3SecretAccessKey", "grafanaAdminPassword", "alertWebhookUrl", "alertSlackWebhookUrl")
_OTHER_KEYS = ("models", "modelRepository", "sources")


def _cross_checks(cfg: PlatformConfig, problems: list[str]) -> None:
    """Rules that span sections."""
    if cfg.gpu.uses_hami:
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


def parse_config(
    stack: str,
    values: Mapping[str, Any],
    secrets: Mapping[str, pulumi.Output[str] | None] | None = None,
    *,
    root: Path = ROOT,
) -> PlatformConfig:
    """Validate raw config values (top-level key -> decoded value) into :class:`PlatformConfig`.

    Relative paths in the config are taken from ``root``. Raises :class:`ConfigError` listing every problem found.
    """
    problems: list[str] = []
    secrets = secrets or {}
    for key in sorted(set(values) - set(_SECTIONS) - set(_OTHER_KEYS) - set(SECRET_KEYS)):
        close = difflib.get_close_matches(key, [*_SECTIONS, *_OTHER_KEYS, *SECRET_KEYS], n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        problems.append(f"{NAMESPACE}:{key} is not a known configuration key{hint}")
    for key in SECRET_KEYS:
        if key in values:
            problems.append(f"{key} must be set as a secret: pulumi config set --secret {key} <value>")

    parsed: dict[str, Any] = {}
    for key, parser in _SECTIONS.items():
        section = _Section(key, values.get(key), problems)
        parsed[key] = parser(section)
        section.finish()
    repository = _Section("modelRepository", values.get("modelRepository"), problems)
    model_repository = _model_repository(repository, secrets, stack)
    repository.finish()
    source_section = _Section("sources", values.get("sources"), problems)
    sources = _sources(source_section, root)
    source_section.finish()

    cfg = PlatformConfig(
        stack=stack,
        kubernetes=parsed["kubernetes"],
        gpu=parsed["gpu"],
        triton=parsed["triton"],
        models=_models(values.get("models"), problems),
        model_repository=model_repository,
        monitoring=_with_monitoring_secrets(parsed["monitoring"], secrets),
        autoscaling=parsed["autoscaling"],
        load_balancer=parsed["loadBalancer"],
        sources=sources,
    )
    _cross_checks(cfg, problems)
    _check_chart_archives(cfg, source_section.raw.get("charts"), problems)
    if problems:
        raise ConfigError(problems)
    return _with_sources(cfg)


def load_platform_config() -> PlatformConfig:
    """Read this stack's configuration once from the Pulumi runtime and validate it."""
    import json

    from pulumi.runtime.config import CONFIG, get_config_env, is_config_secret

    prefix = f"{NAMESPACE}:"
    raw = {**get_config_env(), **CONFIG.get()}
    config = pulumi.Config(NAMESPACE)
    values: dict[str, Any] = {}
    for full_key in raw:
        key = full_key.removeprefix(prefix)
        if not full_key.startswith(prefix) or (key in SECRET_KEYS and is_config_secret(full_key)):
            continue
        text = config.get(key)
        try:
            values[key] = json.loads(text) if text is not None else None
        except json.JSONDecodeError:
            values[key] = text
    secrets = {key: config.get_secret(key) for key in SECRET_KEYS}
    return parse_config(pulumi.get_stack(), values, secrets)
