"""A bounded load on Triton for the autoscaling loop: fixed clients and duration, sent to an address inside the
cluster's own network namespace (a Service's ClusterIP), stopping by itself; and Triton's own request counters."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from components.triton_cluster import METRICS_PORT


@dataclass
class Load:
    """``clients`` threads, each sending one inference after another to ``url`` for ``duration_s``."""

    url: str
    inputs: np.ndarray
    clients: int
    duration_s: float
    sent: int = 0
    failed: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Load:
        tensor = {"name": "input", "shape": list(self.inputs.shape), "datatype": "FP32"}
        body = json.dumps({"inputs": [{**tensor, "data": self.inputs.ravel().tolist()}]}).encode()
        deadline = time.monotonic() + self.duration_s
        self._threads = [
            threading.Thread(target=self._client, args=(body, deadline), daemon=True) for _ in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _client(self, body: bytes, deadline: float) -> None:
        while time.monotonic() < deadline:
            request = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})
            try:  # a new connection per request: kube-proxy spreads them over every ready pod
                with urllib.request.urlopen(request, timeout=30) as response:
                    response.read()
                ok = True
            except (urllib.error.URLError, OSError):
                ok = False
            with self._lock:
                self.sent += ok
                self.failed += not ok

    def wait(self) -> None:
        for thread in self._threads:
            thread.join()


def requests_served(pod_ip: str) -> float:
    """Successful requests a Triton pod has served, from its own metrics endpoint."""
    with urllib.request.urlopen(f"http://{pod_ip}:{METRICS_PORT}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("nv_inference_request_success{"))
