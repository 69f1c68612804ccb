"""LoadBalancer: CRD-valid Gateway objects, routes on Triton's named ports, policies, CRDs and network reach."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from components import versions
from components.config import ConfigError, parse_config
from components.kube import FORCE_ANNOTATION
from components.load_balancer import (
    GATEWAY_API,
    HEALTH_PATH,
    endpoints,
    gateway_address,
    gateway_spec,
    traffic_policy_spec,
)
from components.settings import LoadBalancerSettings
from offline.harness import RecordedResource, Recording
from offline.validate import custom_resource_errors

GATEWAY_KINDS = ("GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "EnvoyProxy", "BackendTrafficPolicy")
CR_TYPE = {
    "GatewayClass": f"kubernetes:{GATEWAY_API}/v1:GatewayClass",
    "Gateway": f"kubernetes:{GATEWAY_API}/v1:Gateway",
    "HTTPRoute": f"kubernetes:{GATEWAY_API}/v1:HTTPRoute",
    "GRPCRoute": f"kubernetes:{GATEWAY_API}/v1:GRPCRoute",
    "EnvoyProxy": "kubernetes:gateway.envoyproxy.io/v1alpha1:EnvoyProxy",
    "BackendTrafficPolicy": "kubernetes:gateway.envoyproxy.io/v1alpha1:BackendTrafficPolicy",
}


def _kind(stack: Recording, kind: str) -> list[RecordedResource]:
    return stack.of_type(CR_TYPE[kind])


def _one(stack: Recording, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [r.inputs for r in _kind(stack, kind) if name is None or r.metadata_name == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def _service_ports(stack: Recording) -> dict[str, dict[str, Any]]:
    service = next(r for r in stack.kubernetes_objects() if r.kind == "Service" and r.metadata_name == "triton")
    return {p["name"]: p for p in service.inputs["spec"]["ports"]}


def _policy_for(stack: Recording, kind: str) -> dict[str, Any]:
    found = [
        r.inputs for r in _kind(stack, "BackendTrafficPolicy") if r.inputs["spec"]["targetRefs"][0]["kind"] == kind
    ]
    assert len(found) == 1
    return found[0]


def test_every_gateway_object_validates_against_its_crd(stack: Recording, shared_dir: Path) -> None:
    objects = [r.inputs for kind in GATEWAY_KINDS for r in _kind(stack, kind)]
    assert sorted(o["kind"] for o in objects) == sorted((*GATEWAY_KINDS, "BackendTrafficPolicy"))  # one per route
    problems = [p for o in objects for p in custom_resource_errors(o, shared_dir / "crds")]
    assert problems == []


def test_crd_validation_catches_a_wrong_load_balancer_type(shared_dir: Path) -> None:
    policy = {
        "apiVersion": "gateway.envoyproxy.io/v1alpha1",
        "kind": "BackendTrafficPolicy",
        "metadata": {"name": "p"},
        "spec": traffic_policy_spec(LoadBalancerSettings(), "HTTPRoute", "r"),
    }
    assert custom_resource_errors(policy, shared_dir / "crds") == []
    policy["spec"]["loadBalancer"]["type"] = "LeastConnections"
    assert custom_resource_errors(policy, shared_dir / "crds") != []


def test_each_policy_targets_exactly_one_route_of_its_kind_by_targetrefs_only(stack: Recording) -> None:
    for kind, route_kind in (("HTTPRoute", "HTTPRoute"), ("GRPCRoute", "GRPCRoute")):
        policy = _policy_for(stack, route_kind)
        spec = policy["spec"]
        assert "targetRef" not in spec and "targetSelectors" not in spec, "CEL: exactly one of the target forms"
        assert spec["targetRefs"] == [
            {"group": GATEWAY_API, "kind": kind, "name": _one(stack, kind)["metadata"]["name"]}
        ]
        assert policy["metadata"]["namespace"] == _one(stack, kind)["metadata"]["namespace"], (
            "policies attach only to routes in their own namespace"
        )


def test_routes_point_at_the_triton_service_ports_named_http_and_grpc(stack: Recording) -> None:
    ports = _service_ports(stack)
    for kind, port_name in (("HTTPRoute", "http"), ("GRPCRoute", "grpc")):
        (backend,) = _one(stack, kind)["spec"]["rules"][0]["backendRefs"]
        assert backend["name"] == "triton"
        assert backend["port"] == ports[port_name]["port"]
    assert ports["grpc"]["appProtocol"] == "kubernetes.io/h2c", "Envoy must speak HTTP/2 to the gRPC port"


def test_routes_live_beside_the_service_and_attach_to_their_own_listener(stack: Recording) -> None:
    service_ns = next(
        r for r in stack.kubernetes_objects() if r.kind == "Service" and r.metadata_name == "triton"
    ).inputs["metadata"]["namespace"]
    gateway = _one(stack, "Gateway")
    listeners = {listener["name"]: listener for listener in gateway["spec"]["listeners"]}
    for kind, section in (("HTTPRoute", "http"), ("GRPCRoute", "grpc")):
        route = _one(stack, kind)
        assert route["metadata"]["namespace"] == service_ns, "a cross-namespace backendRef would need a ReferenceGrant"
        (parent,) = route["spec"]["parentRefs"]
        assert (parent["name"], parent["namespace"], parent["sectionName"]) == (
            gateway["metadata"]["name"],
            gateway["metadata"]["namespace"],
            section,
        )
        allowed = listeners[section]["allowedRoutes"]
        assert allowed["kinds"] == [{"group": GATEWAY_API, "kind": kind}]
        assert allowed["namespaces"]["selector"]["matchLabels"] == {"kubernetes.io/metadata.name": service_ns}


def test_grpc_route_serves_triton_inference_and_health(stack: Recording) -> None:
    matches = _one(stack, "GRPCRoute")["spec"]["rules"][0]["matches"]
    assert {m["method"]["service"] for m in matches} == {"inference.GRPCInferenceService", "grpc.health.v1.Health"}


def test_health_checks_match_each_protocol(stack: Recording) -> None:
    http = _policy_for(stack, "HTTPRoute")["spec"]["healthCheck"]
    grpc = _policy_for(stack, "GRPCRoute")["spec"]["healthCheck"]
    assert http["active"]["type"] == "HTTP" and http["active"]["http"]["path"] == HEALTH_PATH
    assert grpc["active"]["type"] == "GRPC" and "http" not in grpc["active"]
    for check in (http, grpc):
        assert check["passive"]["consecutive5XxErrors"] >= 1 and check["passive"]["baseEjectionTime"]


def test_policies_balance_per_request_retry_safely_and_bound_time_and_load(stack: Recording) -> None:
    spec = _policy_for(stack, "GRPCRoute")["spec"]
    assert spec["loadBalancer"]["type"] == "LeastRequest"
    triggers = set(spec["retry"]["retryOn"]["triggers"])
    assert {"connect-failure", "unavailable", "reset-before-request"} <= triggers
    assert not triggers & {"5xx", "reset", "internal"}, "never retry a request a replica may have executed"
    assert spec["timeout"]["http"]["requestTimeout"] and spec["timeout"]["tcp"]["connectTimeout"]
    assert set(spec["circuitBreaker"]) == {
        "maxConnections",
        "maxPendingRequests",
        "maxParallelRequests",
        "maxParallelRetries",
    }


def test_policy_values_come_from_config() -> None:
    settings = parse_config(
        "t",
        {
            "modelRepository": {"uri": "s3://bucket-a/x"},
            "loadBalancer": {
                "enabled": True,
                "requestTimeout": "5m",
                "retries": {"attempts": 4, "on": ["connect-failure"]},
                "healthCheck": {"interval": "2s", "maxEjectionPercent": 100},
                "circuitBreaker": {"maxPendingRequests": 64},
            },
        },
    ).load_balancer
    spec = traffic_policy_spec(settings, "HTTPRoute", "r")
    assert spec["timeout"]["http"]["requestTimeout"] == "5m"
    assert spec["retry"]["numRetries"] == 4 and spec["retry"]["retryOn"] == {"triggers": ["connect-failure"]}
    assert spec["healthCheck"]["active"]["interval"] == "2s"
    assert spec["healthCheck"]["passive"]["maxEjectionPercent"] == 100
    assert spec["circuitBreaker"]["maxPendingRequests"] == 64


def test_tls_terminates_both_listeners_with_the_configured_secret() -> None:
    settings = LoadBalancerSettings(enabled=True, tls_enabled=True, certificate_secret="triton-tls", http_port=443)
    listeners = gateway_spec(settings, "triton", "triton")["listeners"]
    assert [listener["protocol"] for listener in listeners] == ["HTTPS", "HTTPS"]
    assert all(
        listener["tls"]["certificateRefs"] == [{"group": "", "kind": "Secret", "name": "triton-tls"}]
        for listener in listeners
    )
    assert endpoints("gw.example.com", settings) == ("https://gw.example.com:443", "gw.example.com:8001")


def test_tls_without_a_certificate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"loadBalancer.tls.certificateSecret \(None\) is required"):
        parse_config(
            "t",
            {
                "modelRepository": {"uri": "s3://bucket-a/x"},
                "loadBalancer": {"enabled": True, "tls": {"enabled": True}},
            },
        )


def test_service_type_follows_the_stack(dev: Recording, prod: Recording) -> None:
    proxy = {
        s.stack: _one(s, "EnvoyProxy")["spec"]["provider"]["kubernetes"]["envoyService"]["type"] for s in (dev, prod)
    }
    assert proxy == {"dev": "NodePort", "prod": "LoadBalancer"}
    gateway_class = _one(prod, "GatewayClass")["spec"]["parametersRef"]
    proxy_name = _one(prod, "EnvoyProxy")["metadata"]["name"]
    assert (gateway_class["kind"], gateway_class["name"]) == ("EnvoyProxy", proxy_name)


def test_gateway_api_crds_are_the_standard_channel_and_the_chart_installs_none(stack: Recording) -> None:
    crds = stack.one("kubernetes:yaml/v2:ConfigFile")
    assert crds.inputs["file"] == versions.GATEWAY_API_STANDARD_CRDS
    assert "/v1.6.1/standard-install.yaml" in crds.inputs["file"]
    controller = next(r for r in stack.helm_releases() if r.inputs["chart"] == versions.ENVOY_GATEWAY.chart)
    assert controller.inputs["values"]["crds"]["enabled"] is False
    envoy_crds = stack.one("kubernetes:helm.sh/v4:Chart")
    assert envoy_crds.inputs["chart"] == versions.ENVOY_GATEWAY_CRDS.chart
    assert envoy_crds.inputs["values"]["crds"] == {"gatewayAPI": {"enabled": False}, "envoyGateway": {"enabled": True}}
    assert {crds.urn, envoy_crds.urn} <= set(controller.dependencies)


def test_gateway_objects_wait_for_the_controller_and_crds(stack: Recording) -> None:
    controller = next(r for r in stack.helm_releases() if r.inputs["chart"] == versions.ENVOY_GATEWAY.chart)
    for kind in GATEWAY_KINDS:
        for resource in _kind(stack, kind):
            assert controller.urn in resource.dependencies, f"{kind} {resource.metadata_name}"


def test_the_envoy_data_plane_namespace_reaches_triton_http_and_grpc(stack: Recording) -> None:
    controller = next(r for r in stack.helm_releases() if r.inputs["chart"] == versions.ENVOY_GATEWAY.chart)
    policy = next(
        r
        for r in stack.kubernetes_objects()
        if r.kind == "NetworkPolicy"
        and "Ingress" in r.inputs["spec"]["policyTypes"]
        and r.inputs["metadata"]["namespace"] == "triton"
    )
    serving_rules = [
        rule for rule in policy.inputs["spec"]["ingress"] if {p["port"] for p in rule["ports"]} & {8000, 8001}
    ]
    assert len(serving_rules) == 1
    sources = [s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in serving_rules[0]["from"]]
    # Envoy Gateway's default deployment mode runs the proxies in the controller's namespace; Triton's own is
    # triton.clientNamespaces' default.
    assert sources == ["triton", controller.inputs["namespace"]]


def test_outputs_give_the_address_and_client_endpoints(stack: Recording) -> None:
    address = stack.outputs["gateway_address"]
    assert address == "triton-gateway.envoy-gateway-system.svc.cluster.local"  # no status under mocks
    assert stack.outputs["gateway_http"] == f"http://{address}:80"
    assert stack.outputs["gateway_grpc"] == f"{address}:8001"


def test_gateway_address_prefers_the_published_one() -> None:
    settings = LoadBalancerSettings()
    assert gateway_address({"addresses": [{"type": "Hostname", "value": "a.elb.example"}]}, settings) == "a.elb.example"
    assert gateway_address(None, settings).startswith("triton-gateway.envoy-gateway-system.svc")


def test_only_a_cloud_load_balancer_makes_pulumi_wait_for_an_address(dev: Recording, prod: Recording) -> None:
    force = {FORCE_ANNOTATION: "true"}  # every object the platform declares (components/kube.py)
    assert _one(prod, "Gateway")["metadata"]["annotations"] == {"pulumi.com/waitFor": "condition=Programmed", **force}
    assert _one(dev, "Gateway")["metadata"]["annotations"] == force


def test_same_port_for_both_listeners_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"loadBalancer.grpcPort \(80\) must differ"):
        parse_config(
            "t", {"modelRepository": {"uri": "s3://bucket-a/x"}, "loadBalancer": {"enabled": True, "grpcPort": 80}}
        )
