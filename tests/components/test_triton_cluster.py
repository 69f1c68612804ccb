"""TritonCluster: the serving contract users rely on — ports, probes, shutdown, security, placement, policies."""

from __future__ import annotations

from typing import Any

import pytest

from components.gpu_stack import gpu_placement
from components.model_repository import RepositoryAccess
from components.settings import GpuSettings, TritonSettings
from components.triton_cluster import TritonClusterArgs, deployment_spec, rollout_timeout_seconds
from offline.harness import RecordedResource, Recording, run_program, stack_config

TRITON = "inference:platform:TritonCluster"


def _deployment(stack: Recording) -> RecordedResource:
    return stack.one("kubernetes:apps/v1:Deployment", "triton-deployment")


def _pod(stack: Recording) -> dict[str, Any]:
    return _deployment(stack).inputs["spec"]["template"]["spec"]


def _container(stack: Recording) -> dict[str, Any]:
    (container,) = _pod(stack)["containers"]
    return container


def _arg(container: dict[str, Any], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in container["args"] if a.startswith(flag + "=")]
    assert len(values) == 1, f"{flag} given {len(values)} times"
    return values[0]


def test_named_ports_http_grpc_metrics(stack: Recording) -> None:
    ports = {p["name"]: p["containerPort"] for p in _container(stack)["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_grpc_service_port_declares_h2c(stack: Recording) -> None:
    service = stack.one("kubernetes:core/v1:Service", "triton-service")
    ports = {p["name"]: p for p in service.inputs["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c"
    assert {name: p["port"] for name, p in ports.items()} == {"http": 8000, "grpc": 8001, "metrics": 8002}


def test_service_selects_exactly_the_deployments_pods(stack: Recording) -> None:
    service = stack.one("kubernetes:core/v1:Service", "triton-service")
    deployment = _deployment(stack).inputs["spec"]
    assert service.inputs["spec"]["selector"] == deployment["selector"]["matchLabels"]
    assert deployment["selector"]["matchLabels"].items() <= deployment["template"]["metadata"]["labels"].items()


def test_startup_probe_budget_comes_from_config(dev: Recording, prod: Recording) -> None:
    for stack, budget in ((dev, 300), (prod, 900)):
        probe = _container(stack)["startupProbe"]
        assert probe["httpGet"]["path"] == "/v2/health/ready"
        assert probe["periodSeconds"] * probe["failureThreshold"] == budget


def test_readiness_on_ready_and_liveness_on_live(stack: Recording) -> None:
    container = _container(stack)
    assert container["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}


def test_server_flags(stack: Recording) -> None:
    container = _container(stack)
    assert container["args"][0] == "tritonserver"
    assert _arg(container, "--model-control-mode") == "none"
    assert _arg(container, "--strict-readiness") == "true"
    assert _arg(container, "--exit-timeout-secs") == "30"
    assert _arg(container, "--model-repository").startswith("s3://")


def test_dev_repository_uses_the_minio_endpoint_inside_the_uri(dev: Recording) -> None:
    assert _arg(_container(dev), "--model-repository").startswith("s3://minio.minio.svc.cluster.local:9000/models/")


def test_grace_period_outlasts_the_drain_and_tritons_exit_timeout(stack: Recording) -> None:
    container = _container(stack)
    drain = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    exit_timeout = int(_arg(container, "--exit-timeout-secs"))
    assert drain > 0
    assert _pod(stack)["terminationGracePeriodSeconds"] > drain + exit_timeout


def test_rolling_update_never_drops_below_capacity(stack: Recording) -> None:
    strategy = _deployment(stack).inputs["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_shared_memory_is_a_memory_backed_volume(stack: Recording) -> None:
    volumes = {v["name"]: v for v in _pod(stack)["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in _container(stack)["volumeMounts"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"


def test_hardened_pod_security(stack: Recording) -> None:
    pod, container = _pod(stack), _container(stack)
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] and security["runAsNonRoot"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False


def test_namespace_enforces_the_restricted_pod_security_standard(stack: Recording) -> None:
    namespace = stack.one("kubernetes:core/v1:Namespace", "triton-ns")
    assert namespace.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_requests_and_limits_include_the_gpu(dev: Recording, prod: Recording) -> None:
    assert _container(dev)["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    limits = _container(prod)["resources"]["limits"]
    assert limits["nvidia.com/gpumem"] == "11000" and limits["nvidia.com/gpucores"] == "50"
    assert _container(prod)["resources"]["requests"] == limits  # Guaranteed QoS under HAMi


def test_prod_pods_go_through_hamis_scheduler(prod: Recording) -> None:
    pod = _pod(prod)
    assert pod["schedulerName"] == "hami-scheduler"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.2xlarge", "gpu": "on"}  # node-group labels


def test_replicas_are_left_to_the_hpa_when_autoscaling(dev: Recording, prod: Recording) -> None:
    assert _deployment(dev).inputs["spec"]["replicas"] == 1
    assert "replicas" not in _deployment(prod).inputs["spec"]


def test_disruption_budget_keeps_replicas_through_drains(stack: Recording) -> None:
    pdb = stack.one("kubernetes:policy/v1:PodDisruptionBudget", "triton-pdb")
    assert pdb.inputs["spec"]["maxUnavailable"] == 1
    assert pdb.inputs["spec"]["selector"]["matchLabels"] == _deployment(stack).inputs["spec"]["selector"]["matchLabels"]


def _ingress(stack: Recording) -> list[dict[str, Any]]:
    policy = stack.one("kubernetes:networking.k8s.io/v1:NetworkPolicy", "triton-ingress")
    return policy.inputs["spec"]["ingress"]


def _namespaces(rule: dict[str, Any]) -> set[str]:
    return {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]}


def test_metrics_port_admits_only_monitoring(stack: Recording) -> None:
    rules = [r for r in _ingress(stack) if {"port": 8002, "protocol": "TCP"} in r["ports"]]
    assert len(rules) == 1 and _namespaces(rules[0]) == {"monitoring"}
    assert len(rules[0]["ports"]) == 1


GATEWAY_NS = "envoy-gateway-system"


def _inference_rules(recording: Recording) -> list[dict[str, Any]]:
    return [r for r in _ingress(recording) if {"port": 8000, "protocol": "TCP"} in r["ports"]]


def test_shipped_stacks_admit_tritons_own_namespace_and_the_gateway(stack: Recording) -> None:
    gateway = stack_config(stack.stack)["inference-platform:loadBalancer"]
    assert gateway["enabled"]  # every shipped stack fronts Triton with the gateway
    rules = _inference_rules(stack)
    assert len(rules) == 1 and _namespaces(rules[0]) == {"triton", gateway.get("namespace", GATEWAY_NS)}
    assert {p["port"] for p in rules[0]["ports"]} == {8000, 8001}
    assert stack.outputs["triton_http"] == "http://triton.triton.svc:8000"


@pytest.mark.parametrize(
    ("gateway", "clients", "admitted"),
    [
        (False, None, {"triton"}),
        (False, ["apps", "batch"], {"apps", "batch"}),
        (False, [], set()),
        (True, None, {"triton", GATEWAY_NS}),
        (True, ["apps"], {"apps", GATEWAY_NS}),
        (True, [], {GATEWAY_NS}),
    ],
    ids=[
        "no-gateway-default",
        "no-gateway-listed",
        "no-gateway-none",
        "gateway-default",
        "gateway-listed",
        "gateway-only",
    ],
)
def test_inference_ports_admit_the_client_namespaces_and_the_gateway(
    gateway: bool, clients: list[str] | None, admitted: set[str]
) -> None:
    config = dict(stack_config("dev"))
    triton = dict(config["inference-platform:triton"])
    if clients is not None:
        triton["clientNamespaces"] = clients
    config["inference-platform:triton"] = triton
    config["inference-platform:loadBalancer"] = {**config["inference-platform:loadBalancer"], "enabled": gateway}
    recording = run_program("dev", config=config)
    rules = _inference_rules(recording)
    if admitted:
        assert len(rules) == 1 and _namespaces(rules[0]) == admitted
        assert rules[0]["ports"] == [{"protocol": "TCP", "port": 8000}, {"protocol": "TCP", "port": 8001}]
    else:
        assert rules == []
    # The in-cluster URLs are exported only when a pod besides the gateway's may use them.
    direct = clients is None or bool(clients)
    assert ("triton_http" in recording.outputs, "triton_grpc" in recording.outputs) == (direct, direct)
    assert ("gateway_http" in recording.outputs) == gateway


def test_static_keys_become_a_secret_the_pod_reads_by_reference() -> None:
    recording = run_program(
        "dev",
        secrets={"inference-platform:s3AccessKeyId": "minio", "inference-platform:s3SecretAccessKey": "minio-password"},
    )
    secret = recording.one("kubernetes:core/v1:Secret", "triton-s3-credentials")
    assert secret.is_secret("stringData")
    env = {e["name"]: e for e in _container(recording)["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "AWS_SECRET_ACCESS_KEY"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert "minio-password" not in str(_deployment(recording).inputs)


def test_irsa_annotates_the_service_account_and_sets_the_region(prod: Recording) -> None:
    account = prod.one("kubernetes:core/v1:ServiceAccount", "triton-sa")
    assert account.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    env = {e["name"]: e.get("value") for e in _container(prod)["env"]}
    assert env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert "AWS_ACCESS_KEY_ID" not in env


@pytest.mark.parametrize("mode", ["explicit"])
def test_explicit_mode_loads_exactly_the_configured_models(mode: str) -> None:
    config = dict(stack_config("prod"))
    config["inference-platform:triton"] = {**config["inference-platform:triton"], "modelControlMode": mode}
    container = _container(run_program("prod", config=config))
    loads = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--load-model=")]
    assert loads == ["mnist", "resnet50"]


def test_all_children_are_parented_to_the_component(stack: Recording) -> None:
    children = stack.children_of(TRITON)
    kinds = {r.kind for r in children}
    assert {"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


def test_pulumi_waits_for_a_whole_rollout_of_slow_starting_pods(prod: Recording) -> None:
    """prod: up to 3 pods (autoscaling's maximum) replaced one by one, 900 s startup budget each."""
    deployment = next(r for r in prod.kubernetes_objects() if r.kind == "Deployment" and r.metadata_name == "triton")
    assert deployment.inputs["metadata"]["annotations"]["pulumi.com/timeoutSeconds"] == str(3 * 900 + 300)


@pytest.mark.parametrize(("surge", "unavailable", "batches"), [(1, 0, 8), (0, 1, 8), (2, 0, 4), (2, 1, 3)])
def test_the_rollout_strategy_is_the_configured_one_and_the_wait_follows_it(
    surge: int, unavailable: int, batches: int
) -> None:
    settings = TritonSettings(max_surge=surge, max_unavailable=unavailable, startup_budget_seconds=900)
    args = TritonClusterArgs(
        settings=settings,
        repository=RepositoryAccess(uri="s3://models/triton/d", region="us-east-1", models=("mnist",)),
        placement=gpu_placement(GpuSettings()),
        rollout_replicas=8,
    )
    spec = deployment_spec(args, {}, {"app.kubernetes.io/name": "triton", "app.kubernetes.io/instance": "triton"})
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": surge, "maxUnavailable": unavailable}
    assert rollout_timeout_seconds(args) == batches * 900 + 300
