"""The whole local loop as one context manager: generated repository, Triton, Prometheus with the rules."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from local_serving.prometheus import PrometheusClient, PrometheusServer, ScrapeSettings
from local_serving.rules import platform_rule_groups
from local_serving.triton import TritonPorts, TritonServer
from local_serving.wrappers import SourceModel, discover_models, write_serving_repository, write_sleeping_model


@dataclass(frozen=True)
class RunSettings:
    """What to serve and where; every address is 127.0.0.1, intervals are short in tests."""

    repository: Path
    triton_ports: TritonPorts = field(default_factory=TritonPorts)
    prometheus_port: int = 9090
    scrape: ScrapeSettings = field(default_factory=ScrapeSettings)
    rule_window: str = "1m"
    alert_settings: Any = None
    unbatched_variants: bool = False
    sleeping_models: dict[str, float] = field(default_factory=dict)  # name -> milliseconds per execution
    work_dir: Path | None = None
    rule_groups: list[dict[str, Any]] | None = None  # None: the platform's own rules, rendered by the program


class LocalStack:
    """Triton serving the wrapped repository plus Prometheus scraping it with the platform's rules."""

    def __init__(self, settings: RunSettings):
        self.settings = settings
        self.source_models: list[SourceModel] = []
        self.served_models: list[str] = []
        self.triton: TritonServer | None = None
        self.prometheus: PrometheusServer | None = None
        self._temp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def client(self) -> PrometheusClient:
        """Prometheus HTTP API client."""
        assert self.prometheus is not None, "LocalStack is not started"
        return self.prometheus.client()

    def start(self) -> LocalStack:
        """Generate the serving repository, start Triton, then Prometheus; stop both if anything fails."""
        settings = self.settings
        self.source_models = discover_models(settings.repository)
        work = settings.work_dir or Path(self._make_temp())
        serving = work / "serving_repository"
        self.served_models = write_serving_repository(settings.repository, serving, settings.unbatched_variants)
        for name, sleep_ms in settings.sleeping_models.items():
            write_sleeping_model(serving, name, sleep_ms)
            self.served_models.append(name)
        try:
            self.triton = TritonServer(serving, work / "triton", settings.triton_ports).start()
            rules = settings.rule_groups
            if rules is None:
                rules = platform_rule_groups(
                    settings.rule_window, settings.scrape.evaluation_interval, settings.alert_settings
                )
            self.prometheus = PrometheusServer(
                work / "prometheus", settings.triton_ports.metrics, rules, settings.prometheus_port, settings.scrape
            ).start()
            self.client.wait_for("Prometheus to scrape Triton", self.client.targets_up, timeout_s=60)
        except BaseException:
            self.stop()
            raise
        return self

    def _make_temp(self) -> str:
        self._temp = tempfile.TemporaryDirectory(prefix="local-serving-")
        return self._temp.name

    def stop(self) -> None:
        """Stop Prometheus and Triton and remove the temporary work directory."""
        for server in (self.prometheus, self.triton):
            if server is not None:
                server.stop()
        if self._temp is not None:
            shutil.rmtree(self._temp.name, ignore_errors=True)
            self._temp = None

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
