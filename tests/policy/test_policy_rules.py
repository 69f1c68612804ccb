"""The policy pack's rules (policy/rules.py) on both recorded stacks and on deliberately bad resources; and the pack
itself, run the way the Pulumi CLI runs it, answering the analyzer protocol over gRPC on 127.0.0.1."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from components import gpu_stack
from components.config import parse_config
from offline.harness import PROJECT, Recording, run_program, stack_config
from policy import rules
from tests.paths import ROOT

POLICY_PYTHON = ROOT / ".venv-policy" / "bin" / "python"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def triton_deployment(recording: Recording) -> dict[str, Any]:
    """A private copy of the stack's Triton Deployment inputs, to break on purpose."""
    return copy.deepcopy(recording.one(DEPLOYMENT, "triton-deployment").inputs)


def triton_container(props: dict[str, Any]) -> dict[str, Any]:
    return props["spec"]["template"]["spec"]["containers"][0]


def stack_resources(recording: Recording) -> list[tuple[str, dict[str, Any]]]:
    return [(r.type, r.inputs) for r in recording.resources]


# --------------------------------------------------------------------------------------------------------------
# The real stacks pass


def test_every_resource_of_the_stack_passes_every_rule(stack: Recording) -> None:
    violations = {r.urn: found for r in stack.resources if (found := rules.resource_violations(r.type, r.inputs))}
    assert violations == {}
    assert rules.triton_disruption_budget(stack_resources(stack)) == []


def test_the_rules_see_the_stacks_workloads(stack: Recording) -> None:
    """Guards the zero-violation test above against passing because the rules found nothing to look at."""
    pod_specs = [s for t, p in stack_resources(stack) if (s := rules.pod_spec(t, p)) is not None]
    assert pod_specs, "no workload with a pod spec in the stack"
    assert any(rules.is_triton_workload(t, p) for t, p in stack_resources(stack))
    triton = [p for t, p in stack_resources(stack) if rules.is_triton_workload(t, p)]
    assert all(
        rules.DEFAULT_GPU_NAMES.gpu in c["resources"]["limits"]
        for p in triton
        for c in rules.containers(rules.pod_spec(DEPLOYMENT, p) or {})
    )


def test_dev_with_static_minio_keys_keeps_them_in_a_secret() -> None:
    recording = run_program(
        "dev",
        secrets={
            f"{PROJECT}:s3AccessKeyId": "minio-platform",
            f"{PROJECT}:s3SecretAccessKey": "minio-platform-secret-key",
        },
    )
    assert recording.of_type(rules.SECRET), "the keys should be in a Secret"
    assert {r.urn: v for r in recording.resources if (v := rules.static_aws_keys(r.type, r.inputs))} == {}


def test_default_gpu_names_are_the_ones_the_gpu_stack_requests() -> None:
    names = rules.DEFAULT_GPU_NAMES
    assert (names.hami_scheduler, names.nvidia_runtime_class) == (
        gpu_stack.HAMI_SCHEDULER,
        gpu_stack.NVIDIA_RUNTIME_CLASS,
    )
    for stack in ("dev", "prod"):
        settings = parse_config(stack, {k.split(":", 1)[1]: v for k, v in stack_config(stack).items()}).gpu
        assert set(gpu_stack.gpu_placement(settings).limits) <= set(names.allowed)


# --------------------------------------------------------------------------------------------------------------
# Images


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        ("nvcr.io/nvidia/tritonserver:latest", "uses the mutable tag latest"),
        ("nvcr.io/nvidia/tritonserver", "has no tag (Kubernetes pulls latest)"),
        ("registry.local:5000/triton", "has no tag (Kubernetes pulls latest)"),
        ("nvcr.io/nvidia/tritonserver@sha256:abc", "has a malformed digest"),
    ],
)
def test_unpinned_images_are_refused(dev: Recording, image: str, problem: str) -> None:
    props = triton_deployment(dev)
    triton_container(props)["image"] = image
    assert rules.pinned_images(DEPLOYMENT, props) == [
        f"Deployment triton/triton: image {image!r} at spec.template.spec.containers[0].image {problem}; "
        "pin a release tag or a digest"
    ]


@pytest.mark.parametrize(
    "image",
    [
        "registry.local:5000/triton:26.07-py3",
        "nvcr.io/nvidia/tritonserver@sha256:" + "a" * 64,
    ],
)
def test_port_qualified_tags_and_digests_are_pinned(image: str) -> None:
    assert rules.image_problem(image) is None


def test_helm_values_cannot_pin_an_image_to_latest(prod: Recording) -> None:
    release = copy.deepcopy(prod.one(rules.HELM_RELEASE, "gpu-hami").inputs)
    release["values"]["scheduler"]["kubeScheduler"]["image"]["tag"] = "latest"
    assert rules.pinned_images(rules.HELM_RELEASE, release) == [
        "Release hami-system/hami: values values.scheduler.kubeScheduler.image.tag is 'latest'; "
        "pin the chart's image to a release tag or digest"
    ]


# --------------------------------------------------------------------------------------------------------------
# Container resources


def test_a_container_without_a_cpu_limit_is_refused(dev: Recording) -> None:
    props = triton_deployment(dev)
    del triton_container(props)["resources"]["limits"]["cpu"]
    assert rules.container_resources(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' sets no resources limits.cpu; "
        "every container needs CPU and memory requests and limits"
    ]


def test_init_containers_need_resources_too(dev: Recording) -> None:
    props = triton_deployment(dev)
    props["spec"]["template"]["spec"]["initContainers"] = [{"name": "fetch", "image": "busybox:1.36"}]
    assert rules.container_resources(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'fetch' sets no resources requests.cpu, requests.memory, limits.cpu, "
        "limits.memory; every container needs CPU and memory requests and limits"
    ]


def test_cronjob_pod_templates_are_checked() -> None:
    cronjob = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "sync", "namespace": "ops"},
        "spec": {
            "jobTemplate": {
                "spec": {"template": {"spec": {"containers": [{"name": "sync", "image": "amazon/aws-cli:2.17.0"}]}}}
            }
        },
    }
    assert rules.container_resources("kubernetes:batch/v1:CronJob", cronjob)[0].startswith(
        "CronJob ops/sync: container 'sync' sets no resources requests.cpu"
    )


# --------------------------------------------------------------------------------------------------------------
# GPU requests


def test_an_unknown_gpu_resource_name_is_refused(dev: Recording) -> None:
    props = triton_deployment(dev)
    limits = triton_container(props)["resources"]["limits"]
    limits["nvidia.com/mig-1g.5gb"] = limits.pop("nvidia.com/gpu")
    triton_container(props)["resources"]["requests"].pop("nvidia.com/gpu")
    assert rules.gpu_requests(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' requests nvidia.com/mig-1g.5gb, which no device plugin here "
        "advertises; allowed: nvidia.com/gpu, nvidia.com/gpumem, nvidia.com/gpumem-percentage, nvidia.com/gpucores",
        "Deployment triton/triton: pod is placed on GPU nodes but no container limits nvidia.com/gpu; the scheduler "
        "would not count it and the container could see every GPU on the node",
    ]


def test_gpus_only_in_requests_are_refused(dev: Recording) -> None:
    props = triton_deployment(dev)
    del triton_container(props)["resources"]["limits"]["nvidia.com/gpu"]
    assert rules.gpu_requests(DEPLOYMENT, props)[0] == (
        "Deployment triton/triton: container 'triton' sets nvidia.com/gpu only in requests; "
        "extended resources must be set in limits"
    )


def test_gpu_requests_must_equal_limits(dev: Recording) -> None:
    props = triton_deployment(dev)
    triton_container(props)["resources"]["limits"]["nvidia.com/gpu"] = "2"
    assert rules.gpu_requests(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' requests nvidia.com/gpu=1 but limits it to 2; they must match"
    ]


def test_hami_shares_without_a_gpu_are_refused(prod: Recording) -> None:
    props = triton_deployment(prod)
    for section in ("requests", "limits"):
        del triton_container(props)["resources"][section]["nvidia.com/gpu"]
    assert (
        "Deployment triton/triton: container 'triton' sets HAMi shares without nvidia.com/gpu; HAMi shares apply "
        "per requested GPU"
    ) in rules.gpu_requests(DEPLOYMENT, props)


def test_hami_pods_need_a_gpu_memory_share(prod: Recording) -> None:
    props = triton_deployment(prod)
    for section in ("requests", "limits"):
        del triton_container(props)["resources"][section]["nvidia.com/gpumem"]
    assert rules.gpu_requests(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' shares GPUs through HAMi without a memory share "
        "(nvidia.com/gpumem or nvidia.com/gpumem-percentage); it would be allowed the whole GPU memory"
    ]


def test_hami_pods_need_guaranteed_qos(prod: Recording) -> None:
    props = triton_deployment(prod)
    triton_container(props)["resources"]["limits"]["cpu"] = "8"
    assert rules.gpu_requests(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' under HAMi needs Guaranteed QoS: requests must equal limits "
        "for cpu (nvidia-smi fails in the pod otherwise, HAMi#1704)"
    ]


def test_configured_names_replace_the_defaults(dev: Recording) -> None:
    names = rules.GpuResourceNames(gpu="example.com/accelerator")
    assert "container 'triton' requests nvidia.com/gpu, which no device plugin here advertises" in " ".join(
        rules.gpu_requests(DEPLOYMENT, triton_deployment(dev), names)
    )


# --------------------------------------------------------------------------------------------------------------
# Triton probes and disruption budget


def test_triton_without_a_startup_probe_is_refused(dev: Recording) -> None:
    props = triton_deployment(dev)
    del triton_container(props)["startupProbe"]
    assert rules.triton_probes(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' has no startupProbe; Triton needs startup, readiness and "
        "liveness probes"
    ]


def test_liveness_on_readiness_is_refused(dev: Recording) -> None:
    props = triton_deployment(dev)
    triton_container(props)["livenessProbe"]["httpGet"]["path"] = "/v2/health/ready"
    assert rules.triton_probes(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' livenessProbe asks /v2/health/ready; a pod still loading "
        "models would be restarted in a loop - use /v2/health/live for liveness"
    ]


def test_readiness_must_ask_triton_readiness(dev: Recording) -> None:
    props = triton_deployment(dev)
    triton_container(props)["readinessProbe"]["httpGet"]["path"] = "/v2/health/live"
    assert rules.triton_probes(DEPLOYMENT, props) == [
        "Deployment triton/triton: container 'triton' readinessProbe asks /v2/health/live; use /v2/health/ready"
    ]


def _without_pdb(recording: Recording) -> list[tuple[str, dict[str, Any]]]:
    return [(t, copy.deepcopy(p)) for t, p in stack_resources(recording) if t != rules.PDB]


NO_PDB = (
    "Deployment triton/triton: no policy/v1 PodDisruptionBudget in its namespace selects its pods; "
    "a node drain could evict every replica at once"
)


def test_triton_without_a_disruption_budget_is_refused(prod: Recording) -> None:
    assert rules.triton_disruption_budget(_without_pdb(prod)) == [NO_PDB]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"metadata": {"namespace": "default"}}, [NO_PDB]),
        ({"spec": {"selector": {"matchLabels": {"app.kubernetes.io/name": "other"}}}}, [NO_PDB]),
        ({"spec": {"selector": {}}}, [NO_PDB]),
        (
            {
                "spec": {
                    "selector": {
                        "matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": ["triton"]}]
                    }
                }
            },
            [],
        ),
        (
            {
                "spec": {
                    "selector": {
                        "matchExpressions": [
                            {"key": "app.kubernetes.io/name", "operator": "NotIn", "values": ["triton"]}
                        ]
                    }
                }
            },
            [NO_PDB],
        ),
    ],
)
def test_the_budget_must_be_in_the_namespace_and_select_the_pods(
    prod: Recording, change: dict[str, Any], expected: list[str]
) -> None:
    pdb = copy.deepcopy(prod.one(rules.PDB).inputs)
    for section, values in change.items():
        pdb[section] = {**pdb[section], **values}
    assert rules.triton_disruption_budget([*_without_pdb(prod), (rules.PDB, pdb)]) == expected


# --------------------------------------------------------------------------------------------------------------
# Credentials


def test_a_literal_aws_secret_key_in_env_is_refused(dev: Recording) -> None:
    props = triton_deployment(dev)
    triton_container(props)["env"].append({"name": "AWS_SECRET_ACCESS_KEY", "value": "not-in-a-secret"})
    index = len(triton_container(props)["env"]) - 1
    assert rules.static_aws_keys(DEPLOYMENT, props) == [
        f"Deployment triton/triton: env AWS_SECRET_ACCESS_KEY at spec.template.spec.containers[0].env[{index}] is a "
        "literal value; read it from a Secret (valueFrom.secretKeyRef) or, on AWS, use IRSA"
    ]


def test_keys_in_a_config_map_are_refused() -> None:
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "aws", "namespace": "triton"},
        "data": {"credentials": "[default]\naws_secret_access_key = abc\n"},
    }
    assert rules.static_aws_keys("kubernetes:core/v1:ConfigMap", config_map) == [
        "ConfigMap triton/aws: data.credentials holds AWS credentials; keys belong in a Secret"
    ]


def test_an_access_key_id_anywhere_outside_a_secret_is_refused() -> None:
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "x", "annotations": {"note": "key AKIAIOSFODNN7EXAMPLE"}},
    }
    assert rules.static_aws_keys("kubernetes:core/v1:ServiceAccount", service_account) == [
        "ServiceAccount x: metadata.annotations.note contains an AWS access key id; keys belong in a Secret"
    ]
    secret = {"apiVersion": "v1", "kind": "Secret", "stringData": {"AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE"}}
    assert rules.static_aws_keys(rules.SECRET, secret) == []


def test_an_aws_provider_with_static_keys_is_refused() -> None:
    assert rules.static_aws_keys(rules.AWS_PROVIDER, {"region": "eu-west-1", "secretKey": "abc"}) == [
        "pulumi:providers:aws: provider argument secretKey holds a static key; authenticate to AWS with OIDC / an "
        "assumed role"
    ]


def test_a_dynamic_provider_given_credentials_as_inputs_is_refused() -> None:
    props = {"bucket": "models", "digest": "d" * 64, "aws_secret_access_key": "abc", "accessKey": "minio"}
    found = rules.static_aws_keys(rules.DYNAMIC_RESOURCE, props)
    assert [m.split(": input ")[1].split(" ")[0] for m in found] == ["aws_secret_access_key", "accessKey"]
    assert all("environment of whoever runs Pulumi" in m for m in found)


def test_the_pickled_provider_of_a_dynamic_resource_is_code_not_configuration() -> None:
    # A base64 pickle may contain anything that looks like a key id; it is the provider, not a value we set.
    props = {rules.DYNAMIC_PROVIDER_KEY: "gASV+AKIAIOSFODNN7EXAMPLE+lAAAA", "bucket": "models"}
    assert rules.static_aws_keys(rules.DYNAMIC_RESOURCE, props) == []
    assert rules.static_aws_keys(rules.DYNAMIC_RESOURCE, {**props, "note": "AKIAIOSFODNN7EXAMPLE"})


def test_the_stacks_dynamic_resources_are_checked_and_pass(stack: Recording) -> None:
    dynamic = stack.dynamic_resources()
    assert {r.dynamic_provider for r in dynamic} == {
        "components.s3_publication.S3PublicationProvider",
        "components.generated_secret.GeneratedSecretProvider",
    }
    assert all(rules.resource_violations(r.type, r.inputs) == {} for r in dynamic)


def test_a_provider_for_an_s3_compatible_store_may_use_its_keys() -> None:
    minio = {
        "region": "us-east-1",
        "accessKey": "minioadmin",
        "secretKey": "minio-secret",
        "endpoints": '[{"s3": "http://minio.minio.svc.cluster.local:9000"}]',
    }
    assert rules.static_aws_keys(rules.AWS_PROVIDER, minio) == []


# --------------------------------------------------------------------------------------------------------------
# Exposure


def test_a_load_balancer_service_is_refused(dev: Recording) -> None:
    service = copy.deepcopy(dev.one(rules.SERVICE, "triton-service").inputs)
    assert rules.no_load_balancer_services(rules.SERVICE, service) == []
    service["spec"]["type"] = "LoadBalancer"
    assert rules.no_load_balancer_services(rules.SERVICE, service) == [
        "Service triton/triton: Service of type LoadBalancer; expose traffic through the Envoy gateway instead"
    ]


def test_the_gateways_envoy_proxy_may_ask_for_a_load_balancer() -> None:
    envoy_proxy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "EnvoyProxy",
        "metadata": {"name": "gateway", "namespace": "envoy-gateway-system"},
        "spec": {"provider": {"type": "Kubernetes", "kubernetes": {"envoyService": {"type": "LoadBalancer"}}}},
    }
    assert rules.resource_violations(rules.ENVOY_PROXY, envoy_proxy) == {}


def test_chart_values_cannot_expose_a_load_balancer(prod: Recording) -> None:
    release = copy.deepcopy(prod.one(rules.HELM_RELEASE, "gpu-hami").inputs)
    release["values"]["scheduler"]["service"]["type"] = "LoadBalancer"
    assert rules.no_load_balancer_services(rules.HELM_RELEASE, release) == [
        "Release hami-system/hami: values scheduler.service.type makes a chart Service of type LoadBalancer; "
        "keep it ClusterIP behind the gateway"
    ]


# --------------------------------------------------------------------------------------------------------------
# Removed API versions


@pytest.mark.parametrize(
    ("resource_type", "expected"),
    [
        (
            "kubernetes:autoscaling/v2beta2:HorizontalPodAutoscaler",
            "autoscaling/v2beta2 HorizontalPodAutoscaler was removed in Kubernetes 1.26; use autoscaling/v2",
        ),
        (
            "kubernetes:autoscaling/v2beta1:HorizontalPodAutoscaler",
            "autoscaling/v2beta1 HorizontalPodAutoscaler was removed in Kubernetes 1.25; use autoscaling/v2",
        ),
        (
            "kubernetes:policy/v1beta1:PodDisruptionBudget",
            "policy/v1beta1 PodDisruptionBudget was removed in Kubernetes 1.25; use policy/v1 PodDisruptionBudget "
            "(PodSecurityPolicy: Pod Security Admission)",
        ),
        (
            "kubernetes:extensions/v1beta1:Ingress",
            "extensions/v1beta1 Ingress was removed in Kubernetes 1.22; use apps/v1 workloads, networking.k8s.io/v1 "
            "Ingress and NetworkPolicy",
        ),
        (
            "kubernetes:networking.k8s.io/v1beta1:Ingress",
            "networking.k8s.io/v1beta1 Ingress was removed in Kubernetes 1.22; use networking.k8s.io/v1",
        ),
        ("kubernetes:batch/v1beta1:CronJob", "batch/v1beta1 CronJob was removed in Kubernetes 1.25; use batch/v1"),
    ],
)
def test_removed_api_versions_are_refused(resource_type: str, expected: str) -> None:
    assert rules.removed_api_versions(resource_type, {"metadata": {"name": "x"}}) == [
        f"{resource_type.rsplit(':', 1)[1]} x: {expected}"
    ]


def test_the_api_version_in_the_object_wins_over_the_type_token() -> None:
    """A CustomResource or ConfigGroup object carries its own apiVersion."""
    hpa = {"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "x"}}
    assert rules.removed_api_versions("kubernetes:yaml/v2:ConfigGroup", hpa) != []
    assert rules.removed_api_versions("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", {}) == []
    assert rules.removed_api_versions("kubernetes:core/v1:Service", {}) == []


# --------------------------------------------------------------------------------------------------------------
# The pack itself, as the CLI runs it


@pytest.fixture(scope="module")
def analyzer() -> Iterator[Any]:
    """The policy pack served by its own environment (.venv-policy), the way `pulumi preview` starts it."""
    if not POLICY_PYTHON.exists():
        pytest.skip(
            "the policy pack's environment .venv-policy is missing; create it with: python3.11 -m venv "
            ".venv-policy && .venv-policy/bin/pip install -r policy/requirements.txt"
        )
    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    process = subprocess.Popen(
        [str(POLICY_PYTHON), "-u", "-m", "pulumi.policy", "127.0.0.1:0", str(ROOT / "policy")],
        cwd=ROOT / "policy",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        if not port.isdigit():
            pytest.fail(f"the policy pack did not start: {port!r} {process.stderr.read() if process.stderr else ''}")
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=20)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _struct(props: dict[str, Any]) -> Any:
    from google.protobuf import struct_pb2

    value = struct_pb2.Struct()
    value.update(json.loads(json.dumps(props)))
    return value


def _analyze(analyzer: Any, resource_type: str, props: dict[str, Any], name: str = "x") -> list[tuple[str, str]]:
    from pulumi.runtime.proto import analyzer_pb2

    request = analyzer_pb2.AnalyzeRequest(type=resource_type, properties=_struct(props), urn=f"urn:{name}", name=name)
    return [(d.policyName, _rule_message(d)) for d in analyzer.Analyze(request, timeout=30).diagnostics]


def _analyze_stack(analyzer: Any, resources: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    from pulumi.runtime.proto import analyzer_pb2

    request = analyzer_pb2.AnalyzeStackRequest(
        resources=[
            analyzer_pb2.AnalyzerResource(type=t, properties=_struct(p), urn=f"urn:{i}", name=str(i))
            for i, (t, p) in enumerate(resources)
        ]
    )
    return [(d.policyName, _rule_message(d)) for d in analyzer.AnalyzeStack(request, timeout=30).diagnostics]


def _rule_message(diagnostic: Any) -> str:
    """CrossGuard prints the policy's description, a newline, then what the rule reported."""
    description, _, message = diagnostic.message.partition("\n")
    assert description == diagnostic.description
    return message


def test_the_pack_declares_every_rule_as_mandatory(analyzer: Any) -> None:
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2

    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty(), timeout=30)
    assert info.name == "inference-platform-guardrails"
    assert {p.name for p in info.policies} == {*rules.RESOURCE_RULES, "triton-disruption-budget"}
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_the_pack_passes_both_stacks(analyzer: Any, recordings: dict[str, Recording]) -> None:
    for recording in recordings.values():
        for resource in recording.resources:
            assert _analyze(analyzer, resource.type, resource.inputs, resource.name) == [], resource.urn
        assert _analyze_stack(analyzer, stack_resources(recording)) == []


def test_the_pack_reports_a_rules_message(analyzer: Any, dev: Recording) -> None:
    props = triton_deployment(dev)
    triton_container(props)["image"] = "nvcr.io/nvidia/tritonserver:latest"
    assert _analyze(analyzer, DEPLOYMENT, props) == [("pinned-images", rules.pinned_images(DEPLOYMENT, props)[0])]


def test_the_pack_runs_the_stack_rule(analyzer: Any, prod: Recording) -> None:
    assert _analyze_stack(analyzer, _without_pdb(prod)) == [("triton-disruption-budget", NO_PDB)]


def test_the_pack_reads_gpu_names_from_its_config(analyzer: Any, dev: Recording) -> None:
    from pulumi.runtime.proto import analyzer_pb2

    def configure(names: dict[str, Any]) -> None:
        analyzer.Configure(
            analyzer_pb2.ConfigureAnalyzerRequest(
                policyConfig={
                    "gpu-resource-names": analyzer_pb2.PolicyConfig(
                        enforcementLevel=analyzer_pb2.MANDATORY, properties=_struct(names)
                    ),
                }
            ),
            timeout=30,
        )

    props = triton_deployment(dev)
    configure({"gpu": "example.com/accelerator"})
    try:
        found = _analyze(analyzer, DEPLOYMENT, props)
    finally:
        configure({})
    expected = rules.gpu_requests(DEPLOYMENT, props, rules.GpuResourceNames(gpu="example.com/accelerator"))
    assert "container 'triton' requests nvidia.com/gpu, which no device plugin here advertises" in expected[0]
    assert found == [("gpu-resource-names", message) for message in expected]
    assert _analyze(analyzer, DEPLOYMENT, props) == []


def test_the_rules_module_imports_no_pulumi() -> None:
    """The rules stay plain functions: importable and testable without the Pulumi SDK or the policy SDK."""
    code = "import sys, policy.rules; sys.exit(any(m.startswith('pulumi') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
