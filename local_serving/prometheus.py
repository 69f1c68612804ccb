"""Run Prometheus on 127.0.0.1 with a scrape config for Triton and the platform's rules, and query it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from local_serving.errors import LocalServingError
from local_serving.installation import find_prometheus
from local_serving.ports import LOOPBACK, ensure_free
from local_serving.processes import start_server, stop_process_group

# What a PodMonitor adds in the cluster; the recording rules group by these, the adapter matches on them.
LOCAL_NAMESPACE = "local"
LOCAL_POD = "triton-local-0"


@dataclass(frozen=True)
class ScrapeSettings:
    """How often Prometheus scrapes Triton and evaluates rules (short in tests, e.g. 1s)."""

    scrape_interval: str = "5s"
    evaluation_interval: str = "5s"
    pod_labels: dict[str, str] = field(default_factory=lambda: {"namespace": LOCAL_NAMESPACE, "pod": LOCAL_POD})


def scrape_config(metrics_port: int, settings: ScrapeSettings, rule_files: list[str]) -> dict[str, Any]:
    """prometheus.yml: one job scraping Triton's /metrics on loopback, labelled like the PodMonitor would."""
    return {
        "global": {
            "scrape_interval": settings.scrape_interval,
            "evaluation_interval": settings.evaluation_interval,
        },
        "rule_files": rule_files,
        "scrape_configs": [
            {
                "job_name": "triton",
                "metrics_path": "/metrics",
                "scrape_interval": settings.scrape_interval,
                "static_configs": [{"targets": [f"{LOOPBACK}:{metrics_port}"], "labels": dict(settings.pod_labels)}],
            }
        ],
    }


def check_with_promtool(promtool: Path, kind: str, path: Path) -> None:
    """Run ``promtool check rules|config``; raise with promtool's own output when it rejects the file."""
    result = subprocess.run(
        [str(promtool), "check", kind, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise LocalServingError(f"promtool rejected {path}:\n{result.stdout}{result.stderr}".rstrip())


class PrometheusServer:
    """A Prometheus process on 127.0.0.1 with its own config and a throwaway data directory."""

    def __init__(
        self,
        work_dir: Path,
        metrics_port: int,
        rule_groups: list[dict[str, Any]],
        port: int = 9090,
        settings: ScrapeSettings | None = None,
        startup_timeout_s: float = 30.0,
    ):
        self.work_dir = work_dir
        self.metrics_port = metrics_port
        self.rule_groups = rule_groups
        self.port = port
        self.settings = settings or ScrapeSettings()
        self.startup_timeout_s = startup_timeout_s
        self.prometheus, self.promtool = find_prometheus()
        self.log_path = work_dir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def write_files(self) -> Path:
        """Write rules.yml and prometheus.yml, both checked by promtool; return the config path."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        rules_path = self.work_dir / "rules.yml"
        rules_path.write_text(yaml.safe_dump({"groups": self.rule_groups}, sort_keys=False))
        check_with_promtool(self.promtool, "rules", rules_path)
        config_path = self.work_dir / "prometheus.yml"
        config = scrape_config(self.metrics_port, self.settings, [str(rules_path)])
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        check_with_promtool(self.promtool, "config", config_path)
        return config_path

    def start(self) -> PrometheusServer:
        """Start Prometheus and wait for /-/ready."""
        ensure_free(self.port, "Prometheus", "--prometheus-port")
        config_path = self.write_files()
        command = [
            str(self.prometheus),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            "--storage.tsdb.retention.time=2h",
            "--log.level=warn",
        ]
        with self.log_path.open("wb") as log:
            self._process = start_server(command, log)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise LocalServingError(f"Prometheus exited while starting:\n{self._log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        raise LocalServingError(f"Prometheus was not ready after {self.startup_timeout_s:.0f}s:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-10:])

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL the group if it hangs. Idempotent."""
        process, self._process = self._process, None
        stop_process_group(process)

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def client(self) -> PrometheusClient:
        """An HTTP API client for this server."""
        return PrometheusClient(self.url)


class PrometheusClient:
    """The few Prometheus HTTP API calls the runner and its report need."""

    def __init__(self, url: str):
        self.url = url

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.loads(error.read() or b"{}")
            raise LocalServingError(f"Prometheus {path} failed: {body.get('error', error)}") from error
        if body.get("status") != "success":
            raise LocalServingError(f"Prometheus {path} failed: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; the vector result (``[{"metric": {...}, "value": [ts, "v"]}, ...]``)."""
        data = self._get("/api/v1/query", {"query": expr})
        return list(data["result"])

    def query_value(self, expr: str, labels: dict[str, str] | None = None) -> float | None:
        """The value of the one series matching ``labels`` (all series when None); None when there is none."""
        matching = [
            sample
            for sample in self.query(expr)
            if all(sample["metric"].get(k) == v for k, v in (labels or {}).items())
        ]
        if len(matching) > 1:
            raise LocalServingError(f"{expr} returned {len(matching)} series for {labels}; expected one")
        return float(matching[0]["value"][1]) if matching else None

    def alerts(self) -> list[dict[str, Any]]:
        """Active (pending or firing) alerts."""
        return list(self._get("/api/v1/alerts")["alerts"])

    def alerting_rules(self) -> list[dict[str, Any]]:
        """Every alerting rule with its state (inactive, pending, firing)."""
        groups = self._get("/api/v1/rules", {"type": "alert"})["groups"]
        return [rule for group in groups for rule in group["rules"]]

    def targets_up(self) -> bool:
        """True when every active scrape target reports health "up"."""
        targets = self._get("/api/v1/targets")["activeTargets"]
        return bool(targets) and all(target["health"] == "up" for target in targets)

    def wait_for(self, condition_name: str, check: Any, timeout_s: float, poll_s: float = 0.25) -> Any:
        """Poll ``check()`` until it returns something truthy; raise naming the condition on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise LocalServingError(f"timed out after {timeout_s:.0f}s waiting for {condition_name}")
            time.sleep(poll_s)
