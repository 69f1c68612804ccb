"""LoadBalancer: Envoy Gateway in front of Triton, balancing every request (HTTP and gRPC) over every replica.

A Kubernetes Service balances connections, so a long-lived gRPC channel stays on one pod; Envoy balances
requests (least-request), probes each replica, ejects failing ones and picks up new replicas from EndpointSlices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.kube import after, labels, namespace
from components.settings import LoadBalancerSettings, SourceSettings
from components.triton_cluster import TritonBackend

GATEWAY_API = "gateway.networking.k8s.io"
ENVOY_API = "gateway.envoyproxy.io"
CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"
GATEWAY_NAME = GATEWAY_CLASS = "triton"
PROXY_NAME = "triton-proxy"
PROXY_SERVICE = "triton-gateway"  # the Envoy data plane's Service, named so clients inside the cluster can find it
GRPC_SERVICES = ("inference.GRPCInferenceService", "grpc.health.v1.Health")
HEALTH_PATH = "/v2/health/ready"
SLOW_START = "30s"  # a new replica's share of requests ramps up over this window while its caches warm


def envoy_proxy_spec(settings: LoadBalancerSettings) -> dict[str, Any]:
    """The data plane: its Service type (LoadBalancer in prod, NodePort/ClusterIP in dev) and replicas."""
    return {
        "provider": {
            "type": "Kubernetes",
            "kubernetes": {
                "envoyService": {"type": settings.service_type, "name": PROXY_SERVICE},
                "envoyDeployment": {"replicas": settings.proxy_replicas},
            },
        }
    }


def gateway_class_spec(proxy_namespace: str, proxy_name: str) -> dict[str, Any]:
    return {
        "controllerName": CONTROLLER_NAME,
        "parametersRef": {"group": ENVOY_API, "kind": "EnvoyProxy", "name": proxy_name, "namespace": proxy_namespace},
    }


def _listener(
    name: str, port: int, route_kind: str, settings: LoadBalancerSettings, route_namespace: str
) -> dict[str, Any]:
    listener: dict[str, Any] = {
        "name": name,
        "port": port,
        "protocol": "HTTPS" if settings.tls_enabled else "HTTP",  # plain HTTP listeners carry gRPC as h2c
        "allowedRoutes": {
            "namespaces": {
                "from": "Selector",
                "selector": {"matchLabels": {"kubernetes.io/metadata.name": route_namespace}},
            },
            "kinds": [{"group": GATEWAY_API, "kind": route_kind}],
        },
    }
    if settings.tls_enabled:
        listener["tls"] = {
            "mode": "Terminate",
            "certificateRefs": [{"group": "", "kind": "Secret", "name": settings.certificate_secret}],
        }
    return listener


def gateway_spec(settings: LoadBalancerSettings, class_name: str, route_namespace: str) -> dict[str, Any]:
    """One listener per protocol, each accepting only its route kind from Triton's namespace."""
    return {
        "gatewayClassName": class_name,
        "listeners": [
            _listener("http", settings.http_port, "HTTPRoute", settings, route_namespace),
            _listener("grpc", settings.grpc_port, "GRPCRoute", settings, route_namespace),
        ],
    }


def _parent(gateway_namespace: str, section: str) -> dict[str, Any]:
    return {
        "group": GATEWAY_API,
        "kind": "Gateway",
        "name": GATEWAY_NAME,
        "namespace": gateway_namespace,
        "sectionName": section,
    }


def http_route_spec(settings: LoadBalancerSettings, gateway_namespace: str, service: str, port: int) -> dict[str, Any]:
    """Triton's HTTP/REST API (everything under /v2) to the Service port named http."""
    spec: dict[str, Any] = {
        "parentRefs": [_parent(gateway_namespace, "http")],
        "rules": [
            {
                "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
                "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": port}],
            }
        ],
    }
    if settings.hostnames:
        spec["hostnames"] = list(settings.hostnames)
    return spec


def grpc_route_spec(settings: LoadBalancerSettings, gateway_namespace: str, service: str, port: int) -> dict[str, Any]:
    """Triton's inference and health gRPC services to the Service port named grpc."""
    spec: dict[str, Any] = {
        "parentRefs": [_parent(gateway_namespace, "grpc")],
        "rules": [
            {
                "matches": [{"method": {"type": "Exact", "service": s}} for s in GRPC_SERVICES],
                "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": port}],
            }
        ],
    }
    if settings.hostnames:
        spec["hostnames"] = list(settings.hostnames)
    return spec


def _active_check(settings: LoadBalancerSettings, protocol: str) -> dict[str, Any]:
    h = settings.health
    check: dict[str, Any] = {
        "type": protocol,
        "interval": h.interval,
        "timeout": h.timeout,
        "unhealthyThreshold": h.unhealthy_threshold,
        "healthyThreshold": h.healthy_threshold,
    }
    if protocol == "HTTP":
        check["http"] = {"path": HEALTH_PATH, "method": "GET", "expectedStatuses": [200]}
    return check  # GRPC: grpc.health.v1 Check for the whole server, which Triton answers SERVING once ready


def traffic_policy_spec(settings: LoadBalancerSettings, route_kind: str, route_name: str) -> dict[str, Any]:
    """Least-request balancing, active + passive health checks, safe retries, timeouts and circuit breaking."""
    h, r, c = settings.health, settings.retries, settings.circuit_breaker
    retry_on: dict[str, Any] = {"triggers": list(r.on)}
    if "retriable-status-codes" in r.on:
        retry_on["httpStatusCodes"] = list(r.status_codes)
    return {
        "targetRefs": [{"group": GATEWAY_API, "kind": route_kind, "name": route_name}],
        "loadBalancer": {"type": "LeastRequest", "slowStart": {"window": SLOW_START}},
        "healthCheck": {
            "active": _active_check(settings, "GRPC" if route_kind == "GRPCRoute" else "HTTP"),
            "passive": {
                "consecutive5XxErrors": h.consecutive_5xx,
                "consecutiveGatewayErrors": h.consecutive_gateway_errors,
                "interval": h.outlier_interval,
                "baseEjectionTime": h.base_ejection_time,
                "maxEjectionPercent": h.max_ejection_percent,
            },
        },
        "retry": {
            "numRetries": r.attempts,
            "retryOn": retry_on,
            "perRetry": {
                "timeout": r.per_try_timeout,
                "backOff": {"baseInterval": r.backoff_base, "maxInterval": r.backoff_max},
            },
        },
        "timeout": {
            "tcp": {"connectTimeout": settings.connect_timeout},
            "http": {"requestTimeout": settings.request_timeout},
        },
        "circuitBreaker": {
            "maxConnections": c.max_connections,
            "maxPendingRequests": c.max_pending_requests,
            "maxParallelRequests": c.max_parallel_requests,
            "maxParallelRetries": c.max_parallel_retries,
        },
    }


def gateway_address(status: Any, settings: LoadBalancerSettings) -> str:
    """The Gateway's published address, or the data plane Service's cluster DNS name until it has one."""
    addresses = (status or {}).get("addresses") or []
    if addresses and addresses[0].get("value"):
        return str(addresses[0]["value"])
    return f"{PROXY_SERVICE}.{settings.data_plane_namespace}.svc.cluster.local"


def endpoints(address: str, settings: LoadBalancerSettings) -> tuple[str, str]:
    """(HTTP base URL, gRPC target) a tritonclient uses."""
    scheme = "https" if settings.tls_enabled else "http"
    return f"{scheme}://{address}:{settings.http_port}", f"{address}:{settings.grpc_port}"


class _Gateway(pulumi.CustomResource):
    """A Gateway whose live ``status`` (its addresses) is readable, unlike the generic CustomResource's."""

    status: pulumi.Output[Any]

    def __init__(self, name: str, obj: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(f"kubernetes:{GATEWAY_API}/v1:Gateway", name, {**obj, "status": None}, opts)


@dataclass(frozen=True)
class LoadBalancerArgs:
    """Inputs of :class:`LoadBalancer`: the settings and Triton's Service (its ports by name)."""

    settings: LoadBalancerSettings
    backend: TritonBackend  # TritonCluster.backend, as it is


class LoadBalancer(pulumi.ComponentResource):
    """Gateway API CRDs, Envoy Gateway, and the Gateway, routes and traffic policies in front of Triton."""

    address: pulumi.Output[str]
    http_endpoint: pulumi.Output[str]
    grpc_endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("inference:platform:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        # baseline, not restricted: Envoy Gateway does not promise that its proxy and certgen pods meet restricted.
        ns = namespace(f"{name}-ns", s.data_plane_namespace, "baseline", child)
        controller = _controller(name, ns, s.sources, child)
        on_controller = after(child, controller)
        meta = {"namespace": ns.metadata.name, "labels": labels("gateway", name)}
        # Custom resources expose metadata as a plain map, so the fixed names link them; depends_on orders them.
        proxy = k8s.apiextensions.CustomResource(
            f"{name}-envoy-proxy",
            api_version=f"{ENVOY_API}/v1alpha1",
            kind="EnvoyProxy",
            metadata={**meta, "name": PROXY_NAME},
            spec=envoy_proxy_spec(s),
            opts=on_controller,
        )
        gateway_class = k8s.apiextensions.CustomResource(
            f"{name}-gateway-class",
            api_version=f"{GATEWAY_API}/v1",
            kind="GatewayClass",
            metadata={"name": GATEWAY_CLASS, "labels": labels("gateway", name)},
            spec=ns.metadata.name.apply(lambda proxy_ns: gateway_class_spec(proxy_ns, PROXY_NAME)),
            opts=after(on_controller, [proxy]),
        )
        # Wait for an address only where one is handed out (a cloud load balancer); dev Services have none.
        # An empty annotations map is dropped by the API server and then diffed on every preview: omit it.
        cloud = s.service_type == "LoadBalancer"
        wait = {"annotations": {"pulumi.com/waitFor": "condition=Programmed"}} if cloud else {}
        gateway = _Gateway(
            f"{name}-gateway",
            {
                "apiVersion": f"{GATEWAY_API}/v1",
                "kind": "Gateway",
                "metadata": {**meta, "name": GATEWAY_NAME, **wait},
                "spec": args.backend.namespace.apply(lambda route_ns: gateway_spec(s, GATEWAY_CLASS, route_ns)),
            },
            after(on_controller, [gateway_class]),
        )
        _routes(name, args, ns.metadata.name, gateway, on_controller)

        self.address = gateway.status.apply(lambda st: gateway_address(st, s))
        self.http_endpoint = self.address.apply(lambda a: endpoints(a, s)[0])
        self.grpc_endpoint = self.address.apply(lambda a: endpoints(a, s)[1])
        self.register_outputs(
            {"address": self.address, "http_endpoint": self.http_endpoint, "grpc_endpoint": self.grpc_endpoint}
        )


def _controller(
    name: str, ns: k8s.core.v1.Namespace, sources: SourceSettings, child: pulumi.ResourceOptions
) -> list[pulumi.Resource]:
    """Standard-channel Gateway API CRDs and Envoy Gateway's own CRDs (both server-side), then the controller."""
    gateway_api = k8s.yaml.v2.ConfigFile(f"{name}-gateway-api-crds", file=sources.gateway_api_crds, opts=child)
    envoy_crds = k8s.helm.v4.Chart(
        f"{name}-envoy-gateway-crds",
        **sources.release_args(
            versions.ENVOY_GATEWAY_CRDS,
            {"crds": {"gatewayAPI": {"enabled": False}, "envoyGateway": {"enabled": True}}},
        ),
        namespace=ns.metadata.name,
        opts=child,
    )
    controller = k8s.helm.v3.Release(
        f"{name}-envoy-gateway",
        name="envoy-gateway",
        # Its bundled Gateway API CRDs are the experimental channel: installing them over ours would be refused.
        # The topology injector (zone labels for zone-aware routing, which we do not use) is installed as Helm
        # hooks - a MutatingWebhookConfiguration, a ClusterRole and its binding - that uninstall leaves behind.
        **sources.release_args(
            versions.ENVOY_GATEWAY,
            {
                "crds": {"enabled": False},
                "topologyInjector": {"enabled": False},
                "global": {
                    "images": {
                        "envoyGateway": {"image": versions.ENVOY_GATEWAY_IMAGE},
                        "ratelimit": {"image": versions.ENVOY_RATELIMIT_IMAGE},
                        "envoyProxy": {"image": versions.ENVOY_PROXY_IMAGE},
                    }
                },
            },
        ),
        namespace=ns.metadata.name,
        opts=after(child, [gateway_api, envoy_crds]),
    )
    return [gateway_api, envoy_crds, controller]


def _routes(
    name: str,
    args: LoadBalancerArgs,
    gateway_ns: pulumi.Input[str],
    gateway: pulumi.Resource,
    opts: pulumi.ResourceOptions,
) -> None:
    """HTTPRoute and GRPCRoute beside Triton's Service, each with its own traffic policy."""
    s = args.settings
    after_gateway = after(opts, [gateway])
    target, ports = pulumi.Output.all(gateway_ns, args.backend.service), args.backend.ports
    routes: dict[str, tuple[str, pulumi.Output[dict[str, Any]]]] = {
        "http": ("HTTPRoute", target.apply(lambda v: http_route_spec(s, v[0], v[1], ports.http))),
        "grpc": ("GRPCRoute", target.apply(lambda v: grpc_route_spec(s, v[0], v[1], ports.grpc))),
    }
    for role, (kind, spec) in routes.items():
        route_name = f"triton-{role}"
        meta: dict[str, Any] = {
            "name": route_name,
            "namespace": args.backend.namespace,
            "labels": labels("gateway", name),
        }
        route = k8s.apiextensions.CustomResource(
            f"{name}-{role}-route",
            api_version=f"{GATEWAY_API}/v1",
            kind=kind,
            metadata=meta,
            spec=spec,
            opts=after_gateway,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-{role}-policy",
            api_version=f"{ENVOY_API}/v1alpha1",
            kind="BackendTrafficPolicy",
            metadata=meta,
            spec=traffic_policy_spec(s, kind, route_name),
            opts=after(after_gateway, [route]),
        )
