"""Run tritonserver (from the nvidia-pytriton wheel) on 127.0.0.1 and stop it again."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from local_serving.errors import LocalServingError, ModelLoadError
from local_serving.installation import TritonInstallation, find_triton
from local_serving.ports import LOOPBACK, ensure_free
from local_serving.processes import start_server, stop_process_group

# Lines of Triton's log that explain a failed start: load failures and server errors.
_ERROR_LINE = re.compile(r"^E\d{4} |^error: ", re.IGNORECASE)
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (.*?)\"?$")
# Printed by every CPU-only start; not the reason anything failed.
_CPU_ONLY_NOISE = ("CudaDriverHelper has not been initialized",)


def explain_failure(log: str) -> str:
    """Triton's own words for why it did not start: per-model load errors first, else its error lines."""
    failures = [
        f"model '{m.group(1)}': {m.group(2)}".replace("\\n", "\n    ")
        for m in map(_LOAD_FAILURE.search, log.splitlines())
        if m
    ]
    if failures:
        return "\n  ".join(failures)
    errors = [
        line
        for line in log.splitlines()
        if _ERROR_LINE.search(line) and not any(noise in line for noise in _CPU_ONLY_NOISE)
    ]
    return "\n  ".join(errors[-10:]) or "(Triton logged no error line)"


@dataclass(frozen=True)
class TritonPorts:
    """HTTP, gRPC and metrics ports, all bound on 127.0.0.1."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def check_free(self) -> None:
        """Raise PortInUseError naming the first busy port."""
        ensure_free(self.http, "Triton HTTP", "--http-port")
        ensure_free(self.grpc, "Triton gRPC", "--grpc-port")
        ensure_free(self.metrics, "Triton metrics", "--metrics-port")


class TritonServer:
    """A tritonserver process serving ``model_repository``; a context manager that always stops it."""

    def __init__(
        self,
        model_repository: Path | str,
        work_dir: Path,
        ports: TritonPorts | None = None,
        installation: TritonInstallation | None = None,
        startup_timeout_s: float = 120.0,
        environment: Mapping[str, str] | None = None,
    ):
        self.model_repository = model_repository  # a folder, or a URI Triton reads itself (s3://...)
        self.work_dir = work_dir
        self.ports = ports or TritonPorts()
        self.installation = installation or find_triton()
        self.startup_timeout_s = startup_timeout_s
        self.environment = dict(environment or {})  # added to the installation's (e.g. S3 credentials)
        self.log_path = work_dir / "tritonserver.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        """The tritonserver command line: every endpoint on loopback, CPU metrics on, fail on any load error."""
        backends = self.installation.make_backend_directory(self.work_dir / "backends")
        return [
            str(self.installation.server_binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.ports.metrics}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--disable-auto-complete-config",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
        ]

    def start(self) -> TritonServer:
        """Start Triton and wait until every model is ready; raise with Triton's own errors if it is not."""
        self.ports.check_free()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._process = start_server(
                self.command(), log, env={**self.installation.server_environment(), **self.environment}
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ModelLoadError(self._failure_message(f"exited with code {self._process.returncode}"))
            if self._ready():
                return
            time.sleep(0.2)
        raise ModelLoadError(self._failure_message(f"was not ready after {self.startup_timeout_s:.0f}s"))

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _failure_message(self, what: str) -> str:
        return f"Triton {what} while loading the models of {self.model_repository}:\n  {explain_failure(self.log())}"

    def log(self) -> str:
        """Everything Triton wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def model_config(self, name: str) -> dict:
        """The config Triton actually loaded for ``name`` (HTTP model-config API)."""
        url = f"http://{self.http_url}/v2/models/{name}/config"
        with urllib.request.urlopen(url, timeout=5) as response:
            return dict(json.load(response))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of the whole process group (Triton and its stubs); idempotent."""
        process, self._process = self._process, None
        stop_process_group(process)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def read_metrics(metrics_url: str) -> str:
    """The raw Prometheus text Triton exposes."""
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        return str(response.read().decode())


def counter_values(metrics_text: str, metric: str, model: str) -> float:
    """Sum of one Triton counter for one model across versions, from /metrics text."""
    pattern = re.compile(rf'^{re.escape(metric)}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)$', re.MULTILINE)
    return sum(float(value) for value in pattern.findall(metrics_text))


__all__ = ["LocalServingError", "TritonPorts", "TritonServer", "counter_values", "read_metrics"]
