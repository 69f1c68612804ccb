"""The few Kubernetes API calls the pod runner makes, over HTTPS with a kubeconfig's client certificate."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml


class ApiError(RuntimeError):
    """The API server refused a request; ``status`` is its HTTP status (404: the object is gone)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KubeApi:
    """A client for one kubeconfig (its current cluster and user, certificate files only)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        self.server = cluster["server"].rstrip("/")
        self._context = ssl.create_default_context(cafile=cluster["certificate-authority"])
        self._context.load_cert_chain(user["client-certificate"], user["client-key"])

    def request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json", timeout: float = 10
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Accept", "application/json")
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
