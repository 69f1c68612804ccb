"""The stack's settings, one frozen dataclass per config object, each key declared once on its field.

Components import these types and nothing else of the configuration: no parsing happens here. Each declared
field states its key, kind, default, bounds or choices and one line of doc (``model_pipeline/schema.py``);
the reader, the checks that span keys and the ``config:`` block of Pulumi.yaml all follow from them. The keys of
each `models` entry are the pipeline's (``model_pipeline/entry.py``): it builds what they describe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from components import images, versions
from model_pipeline import syntax
from model_pipeline.entry import ModelEntry
from model_pipeline.schema import (
    boolean,
    choice,
    custom,
    dns_label,
    duration,
    envoy_duration,
    integer,
    labels,
    names,
    number,
    quantity,
    secret,
    section,
    text,
)

if TYPE_CHECKING:
    import pulumi

NAMESPACE = "inference-platform"  # the project's name: every key is <NAMESPACE>:<key>

IMAGE = re.compile(
    r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+"  # registry[:port]/path
    r"(:(?P<tag>[\w][\w.-]{0,127}))?(@sha256:[a-f0-9]{64})?$"  # :tag and/or @digest
)
S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)(/(?P<prefix>.*))?$")
ENDPOINT = re.compile(r"^https?://[0-9a-zA-Z.-]+:[0-9]{1,5}$")
RETENTION_SIZE = re.compile(r"^(?P<n>[0-9]+)(?P<unit>B|KB|MB|GB|TB|PB)$")
_REGISTRY = re.compile(r"^[a-z0-9.-]+(:[0-9]{1,5})?(/[a-z0-9._-]+)*$")
_INDEX_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-[0-9]$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[\w+=,.@/-]{1,512}$")
_OIDC_ARN = re.compile(r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/[A-Za-z0-9.-]+(/[A-Za-z0-9._-]+)*$")
_OIDC_ISSUER = re.compile(r"^[a-z0-9.-]+(/[A-Za-z0-9._-]+)*$")
IMAGE_RULE = "an image reference with an explicit tag or digest"
HAMI_NODE_LABEL = ("gpu", "on")  # HAMi's device plugin selects nodes with it (its chart's default)
RETRY_TRIGGERS = (
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


def _image(key: str, default: str | None, doc: str) -> Any:
    """An image reference pinned by tag or digest (not latest)."""
    return custom(key, default, doc, "image")


@dataclass(frozen=True)
class SourceSettings:
    """Where charts, images, packages and the Gateway API CRDs come from (air-gapped clusters, the simulated
    cluster). Relative paths start at the project root.

    Each component that installs a chart carries a copy in its settings and turns a pin into Release arguments
    with ``release_args(pin, values)``.
    """

    image_registry: str | None = text(
        "imageRegistry",
        None,
        "a mirror serving every image the platform and its charts run, under <mirror>/<upstream registry>/<path> "
        "(e.g. harbor.example.com/mirror); unset = each image's upstream",
        pattern=_REGISTRY,
        allowed="a registry host and optional path, without scheme: harbor.example.com/mirror",
    )
    python_index: str | None = text(
        "pythonIndex",
        None,
        "a PyPI simple index for the engine Job's install (or set modelRepository.engineImage: it installs nothing)",
        pattern=_INDEX_URL,
        allowed="the http(s) URL of a PyPI simple index: https://pypi.example.com/simple",
    )
    charts: str | None = custom(
        "charts",
        None,
        "a folder holding the pinned archives <chart>-<version>.tgz (it must hold every archive the stack "
        "installs), or the http(s):// URL of a Helm chart repository; unset = each chart's upstream",
        "chart_source",
    )
    gateway_api_crds: str = custom(
        "gatewayApiCrds",
        versions.GATEWAY_API_STANDARD_CRDS,
        "a file or http(s):// URL of the Gateway API standard-install manifest",
        "crd_source",
        default_doc="the upstream release URL",
    )

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
    """Cluster access, and the control plane's version (HAMi's kube-scheduler image follows it)."""

    context: str | None = text("context", None, "kubeconfig context", default_doc="the current one")
    kubeconfig: str | None = text("kubeconfig", None, "path of the kubeconfig", default_doc="the usual lookup")
    version: str = custom("version", "1.31.0", "the control plane's version, e.g. 1.31.4", "kubernetes_version")


@dataclass(frozen=True)
class HamiSettings:
    """GPU sharing with HAMi: what one Triton pod gets of a physical GPU."""

    namespace: str = dns_label("namespace", "hami-system", "HAMi's namespace")
    gpu_memory_mib: int | None = integer("gpuMemoryMiB", None, 256, 262144, "GPU memory per pod, in MiB")
    gpu_memory_percent: int | None = integer("gpuMemoryPercent", None, 1, 100, "or GPU memory per pod, in percent")
    gpu_cores_percent: int | None = integer("gpuCoresPercent", None, 1, 100, "share of the GPU's cores per pod")
    split_count: int = integer("splitCount", 10, 1, 64, "pods that may share one GPU")


@dataclass(frozen=True)
class GpuSettings:
    """The GPU stack: operator features, sharing mode and where GPU workloads run."""

    sharing: str = choice("sharing", "whole", ("whole", "hami"), "whole: nvidia.com/gpu per pod; hami: vGPU slices")
    mig_strategy: str = choice("migStrategy", "none", ("none", "single", "mixed"), "MIG strategy of the operator")
    driver: bool = boolean("driver", True, "install the driver with the GPU Operator (false: the node image has it)")
    toolkit: bool = boolean("toolkit", True, "install the container toolkit (false: the node image has it)")
    operator_namespace: str = dns_label("operatorNamespace", "gpu-operator", "the GPU Operator's namespace")
    gpus_per_pod: int = integer("gpusPerPod", 1, 1, 8, "whole GPUs per Triton pod")
    # GPU nodes are found by a label every node of the group carries, never by name: EKS names change on
    # every node replacement, and a server-side apply patch to a missing name creates a phantom Node.
    node_selector: Mapping[str, str] = labels(
        "nodeSelector",
        {"nvidia.com/gpu.present": "true"},
        "labels every GPU node of the group carries, never node names; with hami it must include gpu: on",
        default_doc="nvidia.com/gpu.present: true; with hami gpu: on",
    )
    tolerations: tuple[Mapping[str, str], ...] = custom(
        "tolerations",
        ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
        "tolerations of GPU pods",
        "tolerations",
        default_doc="the nvidia.com/gpu NoSchedule taint",
    )
    dcgm_interval: str = duration(
        "dcgmInterval", "15s", "how often dcgm-exporter collects GPU metrics and Prometheus scrapes them"
    )
    hami: HamiSettings = section("hami", HamiSettings(), "HAMi GPU sharing")
    sources: SourceSettings = SourceSettings()  # the top-level `sources`, filled in by the reader

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

    namespace: str = dns_label("namespace", "triton", "Triton's namespace")
    image: str = _image("image", versions.TRITON_IMAGE, "the Triton image, pinned by tag or digest")
    replicas: int = integer("replicas", 1, 1, 64, "Triton pods; ignored when autoscaling is on")
    cpu_request: str = quantity("cpuRequest", "2", "CPU request of a Triton pod")
    cpu_limit: str = quantity("cpuLimit", "4", "CPU limit")
    memory_request: str = quantity("memoryRequest", "8Gi", "memory request")
    memory_limit: str = quantity("memoryLimit", "8Gi", "memory limit")
    shm_size: str = quantity("shmSize", "1Gi", "shared memory (/dev/shm)")
    model_cache_size: str = quantity("modelCacheSize", "20Gi", "the pod's local copy of the S3 repository")
    startup_budget_seconds: int = integer("startupBudgetSeconds", 600, 30, 7200, "time to load every model")
    # Rolling updates: extra pods a rollout may add, and pods it may take down. The default never lowers
    # capacity but needs room for one more Triton pod; a GPU node group with no spare slot needs 0 / 1.
    max_surge: int = integer("maxSurge", 1, 0, 64, "extra pods a rollout adds (needs room for them)")
    max_unavailable: int = integer("maxUnavailable", 0, 0, 64, "pods a rollout may take down; >= 1 when maxSurge is 0")
    model_control_mode: str = choice("modelControlMode", "none", ("none", "explicit"), "Triton's model control")
    exit_timeout_seconds: int = integer("exitTimeoutSeconds", 30, 1, 600, "Triton's exit timeout")
    drain_seconds: int = integer("drainSeconds", 10, 0, 120, "preStop pause while endpoints drain")
    log_verbose: int = integer("logVerbose", 0, 0, 3, "Triton's log verbosity")
    # Unset (None): Triton's own namespace, see direct_clients; [] says "only the gateway".
    client_namespaces: tuple[str, ...] | None = custom(
        "clientNamespaces",
        None,
        "namespaces whose pods may call Triton's HTTP and gRPC ports, besides the gateway's when it is on; "
        "[] = only the gateway",
        "namespaces",
        default_doc="[triton.namespace]",
    )

    @property
    def direct_clients(self) -> tuple[str, ...]:
        """Namespaces whose pods may call Triton's HTTP and gRPC ports directly, the gateway's aside."""
        return (self.namespace,) if self.client_namespaces is None else self.client_namespaces


@dataclass(frozen=True)
class ModelRepositorySettings:
    """Where Triton reads its models and with which credentials. Static keys only as the secrets
    s3AccessKeyId and s3SecretAccessKey, never together with IRSA."""

    uri: str = text(
        "uri",
        "",
        "the S3 location; each build is published under <prefix>/<digest>/",
        pattern=S3_URI,
        allowed="an S3 URI: s3://bucket/prefix",
        required="the S3 location of the model repository, s3://bucket/prefix",
    )
    endpoint: str | None = text(
        "endpoint",
        None,
        "an S3-compatible endpoint (MinIO) as Triton and the Jobs reach it; the bucket must exist there",
        pattern=ENDPOINT,
        allowed="http(s)://host:port (an S3-compatible endpoint)",
    )
    publish_endpoint: str | None = text(
        "publishEndpoint",
        None,
        "the same store as the machine running pulumi up reaches it; required when endpoint is cluster-local",
        pattern=ENDPOINT,
        allowed="http(s)://host:port (the endpoint as `pulumi up` reaches it)",
    )
    region: str = text(
        "region", "us-east-1", "the bucket's region", pattern=_REGION, allowed="an AWS region such as eu-west-1"
    )
    irsa_role_arn: str | None = text(
        "irsaRoleArn",
        None,
        "an existing role for Triton's ServiceAccount",
        pattern=_ROLE_ARN,
        allowed="an IAM role ARN",
    )
    access_key_id: pulumi.Output[str] | None = secret("s3AccessKeyId", "static S3 access key id (MinIO, dev)")
    secret_access_key: pulumi.Output[str] | None = secret("s3SecretAccessKey", "static S3 secret access key")
    create_bucket: bool = boolean("createBucket", False, "create the bucket, versioned, encrypted, private (AWS only)")
    # What `pulumi destroy` does with a created bucket: "retain" it (and its lifecycle rules, so replaced
    # versions still expire), or "delete" it with every object version in it.
    bucket_on_destroy: str = choice(
        "bucketOnDestroy", "retain", ("retain", "delete"), "what destroy does with a created bucket"
    )
    build_dir: str = text(
        "buildDir", "build/model_repository", "the pipeline's output", default_doc="build/<stack>/model_repository"
    )
    expire_after_days: int = integer("expireAfterDays", 30, 1, 3650, "replaced object versions are deleted after")
    oidc_provider_arn: str | None = text(
        "oidcProviderArn",
        None,
        "the EKS cluster's IAM OIDC provider: IRSA roles are created for Triton and the engine builds",
        pattern=_OIDC_ARN,
        allowed="an IAM OIDC provider ARN",
    )
    oidc_provider_url: str | None = text(
        "oidcProviderUrl",
        None,
        "its issuer without https://, with oidcProviderArn",
        pattern=_OIDC_ISSUER,
        allowed="the issuer without https://: oidc.eks.<region>.amazonaws.com/id/<ID>",
    )
    build_namespace: str = dns_label("buildNamespace", "model-build", "where engine-build Jobs run")
    engine_timeout_seconds: int = integer("engineTimeoutSeconds", 3600, 300, 86400, "deadline of one engine build")
    engine_ttl_seconds: int = integer("engineTtlSeconds", 86400, 60, 30 * 86400, "finished Jobs are kept this long")
    # One engine build: Guaranteed CPU/memory, and scratch disk that fits beside the images on a node's default
    # 20 GiB root volume (ONNX, plan, timing cache and the few wheels the TensorRT image lacks).
    engine_cpu: str = quantity("engineCpu", "4", "CPU of one engine build (Guaranteed QoS)")
    engine_memory: str = quantity("engineMemory", "16Gi", "memory of one engine build")
    engine_ephemeral_storage: str = quantity("engineEphemeralStorage", "6Gi", "its whole scratch disk")
    engine_image: str | None = _image(
        "engineImage",
        None,
        "an image with the engine Job's packages preinstalled (model_pipeline/engine.Dockerfile)",
    )
    sources: SourceSettings = SourceSettings()  # the top-level `sources`, filled in by the reader

    @property
    def bucket(self) -> str:
        match = S3_URI.match(self.uri)
        return match.group("bucket") if match else ""

    @property
    def prefix(self) -> str:
        match = S3_URI.match(self.uri)
        return (match.group("prefix") or "").strip("/") if match else ""

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
    """What the platform's alerts compare against (components/prometheus_rules.py)."""

    queue_time_slo_ms: float = number("queueTimeSloMs", 100.0, 0.001, 600_000, "queue time per request, in ms")
    failure_ratio: float = number("failureRatio", 0.05, 0.0001, 1, "failed / all requests")
    min_request_rate: float = number(
        "minRequestRate", 0.1, 0, 100_000, "req/s per model below which latency and failure alerts stay quiet"
    )
    restarts: int = integer("restarts", 2, 1, 100, "container restarts within 30 minutes")
    gpu_utilisation: float = number("gpuUtilisation", 0.9, 0.01, 1, "GPU utilisation")
    gpu_memory_ratio: float = number("gpuMemoryRatio", 0.9, 0.01, 1, "used / HAMi limit")
    # How long a condition must hold before its alert fires (Prometheus's `for`).
    no_replicas_for: str = duration("noReplicasFor", "2m", "`for` of TritonNoReadyReplicas")
    target_down_for: str = duration("targetDownFor", "5m", "`for` of TritonTargetDown and TritonMetricsMissing")
    queue_time_for: str = duration("queueTimeFor", "5m", "`for` of TritonQueueTimeAboveSlo")
    failure_ratio_for: str = duration("failureRatioFor", "5m", "`for` of TritonFailureRatioHigh")
    hpa_max_for: str = duration("hpaMaxFor", "15m", "`for` of TritonHpaAtMaxReplicas")
    hpa_metric_for: str = duration("hpaMetricFor", "10m", "`for` of TritonHpaMetricUnavailable")
    gpu_utilisation_for: str = duration("gpuUtilisationFor", "15m", "`for` of GpuUtilisationHigh")
    gpu_memory_for: str = duration("gpuMemoryFor", "10m", "`for` of GpuMemoryNearHamiLimit")


@dataclass(frozen=True)
class MonitoringSettings:
    """kube-prometheus-stack: scraping, rule evaluation, storage, Grafana and alert routing. Each alert URL
    secret that is set adds its receiver; none routes everything to 'null'."""

    namespace: str = dns_label("namespace", "monitoring", "the stack's namespace")
    release_name: str = dns_label("releaseName", "monitoring", "the Helm release")
    scrape_interval: str = duration("scrapeInterval", "15s", "Triton PodMonitor and Prometheus default")
    rule_interval: str = duration("ruleInterval", "15s", "rule evaluation")
    recording_window: str = duration(
        "recordingWindow", "1m", "window of the per-request latency records the HPA reads; >= 4 x scrapeInterval"
    )
    alert_window: str = duration("alertWindow", "5m", "window of the traffic alerts; >= 4 x scrapeInterval")
    retention: str = duration("retention", "15d", "how long Prometheus keeps samples")
    retention_size: str | None = text(
        "retentionSize",
        None,
        "Prometheus deletes oldest blocks beyond it; below storageSize",
        pattern=RETENTION_SIZE,
        allowed="a size such as 45GB",
    )
    storage_size: str = quantity("storageSize", "50Gi", "Prometheus PVC")
    storage_class: str | None = dns_label(
        "storageClass",
        None,
        "of every PVC; unset: the cluster's default (EKS >= 1.30 has none)",
        allowed="a StorageClass name",
    )
    create_storage_class: bool = boolean(
        "createStorageClass", False, "create storageClass as an encrypted EBS gp3 class (EBS CSI driver)"
    )
    grafana_storage_size: str | None = text(
        "grafanaStorageSize",
        None,
        "Grafana PVC; unset: no persistence",
        pattern=syntax.QUANTITY,
        allowed="a quantity like 10Gi",
    )
    slack_channel: str = text(
        "slackChannel",
        "#inference-alerts",
        "channel of the Slack receiver",
        pattern=re.compile(r"^[#@][\w.-]{1,80}$"),
        allowed="a Slack channel such as #inference-alerts",
    )
    runbook_base_url: str = text(
        "runbookBaseUrl",
        "README.md",
        "the README URL the alerts' runbook links point into",
        pattern=re.compile(r"^\S+$"),
        allowed="a URL of the README that holds the runbooks",
    )
    alerts: AlertThresholds = section("alerts", AlertThresholds(), "alert thresholds")
    grafana_admin_password: pulumi.Output[str] | None = secret(
        "grafanaAdminPassword", "Grafana's admin password; unset: a random one, kept in state"
    )
    alert_webhook_url: pulumi.Output[str] | None = secret(
        "alertWebhookUrl", "webhook receiver URL for warning and critical alerts"
    )
    alert_slack_webhook_url: pulumi.Output[str] | None = secret(
        "alertSlackWebhookUrl", "Slack incoming-webhook URL (channel from monitoring.slackChannel)"
    )
    sources: SourceSettings = SourceSettings()  # the top-level `sources`, filled in by the reader

    @property
    def receivers(self) -> tuple[str, ...]:
        """Alertmanager receivers that have a URL: webhook and/or slack."""
        urls = (("webhook", self.alert_webhook_url), ("slack", self.alert_slack_webhook_url))
        return tuple(name for name, url in urls if url is not None)


@dataclass(frozen=True)
class ScalingPolicy:
    """One HPA scaling policy: change by ``value`` pods or percent per ``period_seconds``."""

    type: str = choice("type", "", ("Pods", "Percent"), "Pods or Percent", required="Pods or Percent")
    value: int = integer("value", 0, 1, 1000, "pods or percent", required="")
    period_seconds: int = integer("periodSeconds", 0, 1, 1800, "per this many seconds", required="")


@dataclass(frozen=True)
class ScalingRules:
    """One direction of the HPA's ``behavior``."""

    stabilization_window_seconds: int = integer("stabilizationWindowSeconds", 0, 0, 3600, "stabilisation window")
    select_policy: str = choice("selectPolicy", "Max", ("Max", "Min", "Disabled"), "which policy wins")
    policies: tuple[ScalingPolicy, ...] = custom("policies", (), "[{type, value, periodSeconds}]", "scaling_policies")


# Scale up fast (double, or +4 pods, every 15 s, no stabilisation); scale down slowly (1 pod a minute, after the
# queue time has been low for 5 minutes), so a short lull does not throw away warm GPU replicas.
DEFAULT_SCALE_UP = ScalingRules(0, "Max", (ScalingPolicy("Percent", 100, 15), ScalingPolicy("Pods", 4, 15)))
DEFAULT_SCALE_DOWN = ScalingRules(300, "Max", (ScalingPolicy("Pods", 1, 60),))


@dataclass(frozen=True)
class AutoscalingSettings:
    """prometheus-adapter and the HPA on Triton's average queue time per request per pod."""

    enabled: bool = boolean("enabled", False, "scale Triton on queue time")
    min_replicas: int = integer("minReplicas", 1, 1, 64, "fewest Triton pods")
    max_replicas: int = integer("maxReplicas", 1, 1, 64, "most Triton pods; >= minReplicas")
    target_queue_time_ms: float = number(
        "targetQueueTimeMs", 50.0, 0.001, 600_000, "HPA target: queue time per request, in ms"
    )
    pending_requests_target: float | None = number(
        "pendingRequestsTarget", None, 0.001, 100_000, "optional second metric: queued requests per pod"
    )
    adapter_relist_interval: str = duration(
        "adapterRelistInterval", "30s", "how often the adapter finds new pods' series; >= the rule interval"
    )
    adapter_replicas: int = integer("adapterReplicas", 1, 1, 5, "prometheus-adapter pods")
    scale_up: ScalingRules = section("scaleUp", DEFAULT_SCALE_UP, "0 s window, max of +100 % and +4 pods per 15 s")
    scale_down: ScalingRules = section("scaleDown", DEFAULT_SCALE_DOWN, "300 s window, 1 pod per 60 s")
    sources: SourceSettings = SourceSettings()  # the top-level `sources`, filled in by the reader


@dataclass(frozen=True)
class RetrySettings:
    """Gateway retries: only for failures where the request cannot have been served twice by design."""

    attempts: int = integer("attempts", 2, 0, 10, "retries per request")
    on: tuple[str, ...] = names(
        "on",
        ("connect-failure", "refused-stream", "reset-before-request", "unavailable", "retriable-status-codes"),
        "Envoy retry triggers",
        choices=RETRY_TRIGGERS,
    )
    status_codes: tuple[int, ...] = custom("statusCodes", (503,), "HTTP codes retried", "status_codes")
    per_try_timeout: str = envoy_duration("perTryTimeout", "30s", "timeout of one try")
    backoff_base: str = envoy_duration("backoffBase", "100ms", "first backoff")
    backoff_max: str = envoy_duration("backoffMax", "1s", "longest backoff")


@dataclass(frozen=True)
class HealthCheckSettings:
    """Active health checks (Envoy probes each replica) and passive outlier detection (real traffic)."""

    interval: str = envoy_duration("interval", "5s", "probe interval")
    timeout: str = envoy_duration("timeout", "1s", "probe timeout")
    unhealthy_threshold: int = integer("unhealthyThreshold", 2, 1, 100, "failed probes before ejection")
    healthy_threshold: int = integer("healthyThreshold", 1, 1, 100, "good probes before return")
    consecutive_5xx: int = integer("consecutive5xx", 5, 1, 1000, "5xx in a row before ejection")
    consecutive_gateway_errors: int = integer("consecutiveGatewayErrors", 3, 1, 1000, "gateway errors in a row")
    outlier_interval: str = envoy_duration("outlierInterval", "5s", "outlier detection interval")
    base_ejection_time: str = envoy_duration("baseEjectionTime", "30s", "first ejection's length")
    max_ejection_percent: int = integer("maxEjectionPercent", 50, 1, 100, "most replicas ejected at once")


@dataclass(frozen=True)
class CircuitBreakerSettings:
    """Per-cluster limits Envoy enforces before it sheds load with 503."""

    max_connections: int = integer("maxConnections", 1024, 1, 1_000_000, "connections")
    max_pending_requests: int = integer("maxPendingRequests", 1024, 1, 1_000_000, "queued requests")
    max_parallel_requests: int = integer("maxParallelRequests", 1024, 1, 1_000_000, "requests in flight")
    max_parallel_retries: int = integer("maxParallelRetries", 16, 1, 1_000_000, "retries in flight")


@dataclass(frozen=True)
class LoadBalancerSettings:
    """Envoy Gateway in front of Triton: per-request balancing over every replica, HTTP and gRPC."""

    enabled: bool = boolean("enabled", False, "deploy the gateway")
    namespace: str = dns_label("namespace", "envoy-gateway-system", "controller and Envoy data plane")
    service_type: str = choice(
        "serviceType", "LoadBalancer", ("LoadBalancer", "NodePort", "ClusterIP"), "the Envoy Service's type"
    )
    http_port: int = integer("httpPort", 80, 1, 65535, "HTTP listener port")
    grpc_port: int = integer("grpcPort", 8001, 1, 65535, "gRPC listener port")
    tls_enabled: bool = boolean("tls.enabled", False, "terminate TLS at the gateway")
    certificate_secret: str | None = dns_label(
        "tls.certificateSecret",
        None,
        "kubernetes.io/tls Secret in namespace; required with TLS",
        allowed="a Secret name",
    )
    hostnames: tuple[str, ...] = names(
        "hostnames",
        (),
        "hostnames served",
    )
    proxy_replicas: int = integer("proxyReplicas", 1, 1, 32, "Envoy pods")
    request_timeout: str = envoy_duration("requestTimeout", "60s", "request timeout; also bounds gRPC streams")
    connect_timeout: str = envoy_duration("connectTimeout", "5s", "connect timeout to a Triton pod")
    retries: RetrySettings = section("retries", RetrySettings(), "retries")
    health: HealthCheckSettings = section("healthCheck", HealthCheckSettings(), "active and passive health checks")
    circuit_breaker: CircuitBreakerSettings = section("circuitBreaker", CircuitBreakerSettings(), "load shedding")
    sources: SourceSettings = SourceSettings()  # the top-level `sources`, filled in by the reader

    @property
    def data_plane_namespace(self) -> str:
        """Where the Envoy pods run: Envoy Gateway's default puts them in the controller's namespace."""
        return self.namespace


@dataclass(frozen=True)
class PlatformConfig:
    """The whole validated stack configuration."""

    stack: str
    kubernetes: KubernetesSettings = section("kubernetes", KubernetesSettings(), "")
    gpu: GpuSettings = section("gpu", GpuSettings(), "")
    triton: TritonSettings = section("triton", TritonSettings(), "")
    models: tuple[ModelEntry, ...] = custom("models", (), "", "models", default_doc="[{name: mnist}]")
    model_repository: ModelRepositorySettings = section("modelRepository", ModelRepositorySettings(), "")
    monitoring: MonitoringSettings = section("monitoring", MonitoringSettings(), "")
    autoscaling: AutoscalingSettings = section("autoscaling", AutoscalingSettings(), "")
    load_balancer: LoadBalancerSettings = section("loadBalancer", LoadBalancerSettings(), "")
    sources: SourceSettings = section("sources", SourceSettings(), "")

    @property
    def triton_clients(self) -> tuple[str, ...]:
        """Namespaces whose pods may reach Triton's HTTP and gRPC ports: triton.clientNamespaces, and the
        gateway's data plane when it is on."""
        gateway = (self.load_balancer.data_plane_namespace,) if self.load_balancer.enabled else ()
        return tuple(dict.fromkeys(self.triton.direct_clients + gateway))

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
