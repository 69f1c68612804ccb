"""A user's mistake through the real CLI: `pulumi preview` prints our message alone (no traceback) and fails.

Each mistake is made in a copy of the local stack's file (`--config-file`), so the stack itself is never changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import versions
from model_pipeline.digest import content_digest
from tests.paths import ROOT
from tests.real_engine._engine import STACK, SUMMARY, pulumi, tail

PROJECT = "inference-platform"


def _config_error(config: dict[str, Any], tmp_path: Path) -> list[str]:
    config[f"{PROJECT}:triton"]["replicass"] = 3  # what `pulumi config set --path triton.replicass 3` writes
    return ["triton.replicass is not a known key; did you mean 'replicas'?"]


def _stale_model_build(config: dict[str, Any], tmp_path: Path) -> list[str]:
    """A build made before the stack's models changed: it holds none of them."""
    build = tmp_path / "models"
    build.mkdir()
    manifest = {"format": 1, "digest": content_digest({}), "files": {}, "models": {}}
    (build / "manifest.json").write_text(json.dumps(manifest))
    config[f"{PROJECT}:modelRepository"]["buildDir"] = str(build)
    return ["is stale: it holds models [] but the stack serves ['mnist']", "run `python -m model_pipeline build"]


def _missing_chart_archive(config: dict[str, Any], tmp_path: Path) -> list[str]:
    """The stack's chart folder without HAMi's archive."""
    sources = config[f"{PROJECT}:sources"]
    charts = tmp_path / "charts"
    charts.mkdir()
    for archive in (ROOT / sources["charts"]).glob("*.tgz"):
        if archive.name != versions.HAMI.archive:
            (charts / archive.name).symlink_to(archive.resolve())
    sources["charts"] = str(charts)
    return [f"must hold {versions.HAMI.archive}"]


MISTAKES = {
    "config error": _config_error,
    "stale model build": _stale_model_build,
    "missing chart archive": _missing_chart_archive,
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_a_users_mistake_is_one_clean_message(mistake: str, tmp_path: Path) -> None:
    document = yaml.safe_load((ROOT / f"Pulumi.{STACK}.yaml").read_text())
    expected = MISTAKES[mistake](document["config"], tmp_path)
    config_file = tmp_path / f"Pulumi.{STACK}.yaml"
    config_file.write_text(yaml.safe_dump(document))

    result, _ = pulumi(f"user-error-{mistake.replace(' ', '-')}", "preview", "--config-file", str(config_file))
    output = result.stdout + result.stderr
    assert result.returncode != 0, tail(result)
    for message in expected:
        assert message in output, tail(result)
    assert "Traceback" not in output and "unhandled exception" not in output, tail(result)
    SUMMARY.setdefault("user_errors", []).append(mistake)
