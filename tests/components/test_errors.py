"""A user's mistake reaches the language host as a ``pulumi.RunError`` (its message alone, a failed run); a bug of
ours stays any other exception, whose traceback the host prints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components import versions
from offline.harness import PROJECT, run_program
from tests._stack_repository import config_with_build_dir, stack_repository


def _dev(tmp_path: Path, **sections: Any) -> dict[str, Any]:
    """dev's stack file with its models built, and ``sections`` merged into their keys."""
    config = config_with_build_dir("dev", stack_repository(tmp_path / "built", ("mnist",)))
    for key, value in sections.items():
        config[f"{PROJECT}:{key}"] = {**config.get(f"{PROJECT}:{key}", {}), **value}
    return config


def _config_error(tmp_path: Path) -> tuple[dict[str, Any], str]:
    config = _dev(tmp_path, triton={"replicass": 3})
    return config, "triton.replicass is not a known key; did you mean 'replicas'?"


def _stale_build(tmp_path: Path) -> tuple[dict[str, Any], str]:
    config = _dev(tmp_path)
    build_dir = Path(config[f"{PROJECT}:modelRepository"]["buildDir"])
    manifest = json.loads((build_dir / "manifest.json").read_text())
    (build_dir / next(iter(manifest["files"]))).write_bytes(b"edited after the build")
    return config, "is stale: "


def _missing_chart_archive(tmp_path: Path) -> tuple[dict[str, Any], str]:
    charts = tmp_path / "charts"
    charts.mkdir()
    config = _dev(tmp_path, sources={"charts": str(charts)})
    return config, f"must hold {versions.KUBE_PROMETHEUS_STACK.archive}"


def _unfetchable_chart(tmp_path: Path) -> tuple[dict[str, Any], str]:
    """A chart repository that does not answer, nothing cached: raised while the program declares resources."""
    config = _dev(tmp_path, sources={"charts": "http://127.0.0.1:9/charts"})
    return config, "cannot fetch it from http://127.0.0.1:9"


MISTAKES: dict[str, Callable[[Path], tuple[dict[str, Any], str]]] = {
    "config error": _config_error,
    "stale model build": _stale_build,
    "missing chart archive": _missing_chart_archive,
    "unfetchable chart archive": _unfetchable_chart,
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_users_mistake_reaches_the_language_host_as_a_run_error(
    mistake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host prints a RunError's message without a traceback and fails the run (pulumi-language-python-exec)."""
    if mistake == "unfetchable chart archive":
        monkeypatch.setenv("INFERENCE_PLATFORM_CHART_CACHE", str(tmp_path / "empty-chart-cache"))
    config, message = MISTAKES[mistake](tmp_path)
    with pytest.raises(pulumi.RunError) as raised:
        run_program("dev", config=config)
    assert message in str(raised.value)
    if mistake == "stale model build":
        assert "python -m model_pipeline build --stack dev" in str(raised.value)


def test_a_bug_is_not_a_run_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Anything but our own errors keeps its traceback: the host treats it as an unhandled exception."""
    from components import monitoring

    def broken(*_: Any, **__: Any) -> Any:
        raise KeyError("a bug")

    monkeypatch.setattr(monitoring.MonitoringStack, "__init__", broken)
    with pytest.raises(KeyError) as raised:
        run_program("dev", config=_dev(tmp_path))
    assert not isinstance(raised.value, pulumi.RunError)
