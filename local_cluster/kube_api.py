"""The few Kubernetes API calls the pod runner and its stand-in programs make: over HTTPS, with a kubeconfig's
client certificate (the runner) or a pod's service-account token (``KubeApi.in_cluster``)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml


class ApiError(RuntimeError):
    """The API server refused a request; ``status`` is its HTTP status (404: the object is gone)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeApi:
    """A client of one API server, authenticated by a client certificate or a bearer token."""

    def __init__(self, server: str, context: ssl.SSLContext, token: str | None = None) -> None:
        self.server, self._context, self._token = server.rstrip("/"), context, token

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path) -> KubeApi:
        """A kubeconfig's current cluster and user (certificate files only)."""
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        context.load_cert_chain(user["client-certificate"], user["client-key"])
        return cls(cluster["server"], context)

    @classmethod
    def in_cluster(cls) -> KubeApi:
        """What a pod's program uses: the kubernetes Service from its env, its projected token and CA."""
        server = f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ['KUBERNETES_SERVICE_PORT']}"
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
        return cls(server, context, (SERVICE_ACCOUNT / "token").read_text().strip())

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json", timeout: float = 10
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, context=self._context, timeout=timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            raise ApiError(error.code, error.read().decode(errors="replace")[:500]) from error

    def get(self, path: str, **query: str) -> Any:
        return self.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Write a pod's status as a kubelet does (conditions merge by type)."""
        self.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            {"status": status},
            "application/strategic-merge-patch+json",
        )

    def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        """Remove a pod whose containers have stopped: what the kubelet does once termination is done."""
        options = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        self.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", options)

    def service_account_token(self, namespace: str, account: str, audiences: list[str], seconds: int) -> str:
        """A projected token from the TokenRequest API, as the kubelet asks for one."""
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
        request["spec"] = {"audiences": audiences, "expirationSeconds": seconds}  # type: ignore[assignment]
        path = f"/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"
        return str(self.request("POST", path, request)["status"]["token"])


def poll_until_terminated(name: str, tick: Callable[[], None], interval: float = 1.0) -> NoReturn:
    """The loop of a controller: ``tick`` every ``interval`` seconds until SIGTERM; an API or network error is
    logged and the next tick tries again."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        try:
            tick()
        except (ApiError, urllib.error.URLError, OSError) as error:
            print(f"{name}: {error}", flush=True)
        time.sleep(interval)
