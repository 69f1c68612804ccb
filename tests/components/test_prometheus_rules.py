"""The platform's recording rules and alerts, checked and unit-tested by promtool against synthetic series.

The rule file under test is rendered by the same builders the program uses; the cases live in
tests/components/data/monitoring/*.yaml. promtool comes from the Debian package `prometheus` (`make setup`
installs it).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components import prometheus_rules as rules
from components.prometheus_rules import AlertSettings, RuleSettingsError
from model_pipeline.syntax import duration_seconds
from tests.paths import ROOT

DATA = ROOT / "tests" / "components" / "data" / "monitoring"
RECORDING_CASES = yaml.safe_load((DATA / "recording_cases.yaml").read_text())
ALERT_CASES = yaml.safe_load((DATA / "alert_cases.yaml").read_text())


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (Debian package `prometheus`: apt-get install -y prometheus)")
    return found


def write_rule_file(directory: Path, *groups: dict[str, Any]) -> Path:
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump(rules.rule_file(*groups), sort_keys=False, allow_unicode=True))
    return path


def run_promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, check=False)


def promtool_test(promtool: str, directory: Path, rule_path: Path, tests: list[dict[str, Any]]) -> None:
    """Run ``promtool test rules`` on ``tests``; fail with promtool's own report."""
    test_path = directory / f"{rule_path.stem}_test.yml"
    document = {"rule_files": [rule_path.name], "evaluation_interval": "15s", "tests": tests}
    test_path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    result = run_promtool(promtool, "test", "rules", str(test_path))
    assert result.returncode == 0, result.stdout + result.stderr


def with_runbooks(tests: list[dict[str, Any]], settings: AlertSettings) -> list[dict[str, Any]]:
    """Every expected alert also carries its runbook link, exactly as the builder derives it."""
    tests = [dict(t) for t in tests]
    for test in tests:
        for check in test.get("alert_rule_test", []):
            for alert in check.get("exp_alerts", []):
                alert["exp_annotations"] = {
                    **alert["exp_annotations"],
                    "runbook_url": settings.runbook(check["alertname"]),
                }
    return tests


def test_every_rendered_group_passes_promtool_check(promtool, tmp_path):
    for mig in (False, True):
        path = write_rule_file(tmp_path, rules.recording_rule_group(), rules.alert_rule_group(AlertSettings(mig=mig)))
        result = run_promtool(promtool, "check", "rules", str(path))
        assert result.returncode == 0, result.stdout + result.stderr


def test_recording_rules_give_exact_per_request_averages(promtool, tmp_path):
    path = write_rule_file(tmp_path, rules.recording_rule_group(window="1m", interval="15s"))
    promtool_test(promtool, tmp_path, path, RECORDING_CASES)


@pytest.mark.parametrize("block", ALERT_CASES, ids=lambda b: "settings=" + str(b["settings"] or "default"))
def test_alerts_fire_exactly_in_their_cases(promtool, tmp_path, block):
    settings = AlertSettings(**block["settings"])
    path = write_rule_file(tmp_path, rules.alert_rule_group(settings))
    promtool_test(promtool, tmp_path, path, with_runbooks(block["tests"], settings))


def _cases(alertname: str) -> list[dict[str, Any]]:
    return [
        check
        for block in ALERT_CASES
        for test in block["tests"]
        for check in test.get("alert_rule_test", [])
        if check["alertname"] == alertname
    ]


def test_every_alert_has_a_firing_and_a_silent_case():
    for alert in rules.alert_rule_group(AlertSettings())["rules"]:
        cases = _cases(alert["alert"])
        assert any(c["exp_alerts"] for c in cases), f"{alert['alert']} has no case where it fires"
        assert any(not c["exp_alerts"] for c in cases), f"{alert['alert']} has no case where it must stay silent"


def test_every_record_has_an_exact_expected_value():
    tested = {check["expr"] for case in RECORDING_CASES for check in case["promql_expr_test"]}
    records = {rule["record"] for rule in rules.recording_rule_group()["rules"]}
    assert records == tested


def test_record_names_match_the_contract():
    names = [rule["record"] for rule in rules.recording_rule_group()["rules"]]
    assert sorted(names) == sorted(
        f"{level}:triton_{kind}_time_us:per_request"
        for level in ("pod", "pod_model")
        for kind in ("queue", "compute", "request")
    )


def test_recording_window_and_interval_come_from_the_arguments():
    group = rules.recording_rule_group(window="10s", interval="1s")
    assert group["interval"] == "1s"
    assert all("[10s]" in rule["expr"] and "[1m]" not in rule["expr"] for rule in group["rules"])


def test_every_alert_carries_severity_summary_description_and_runbook():
    settings = AlertSettings(runbook_base_url="https://example.org/platform/README.md")
    for alert in rules.alert_rule_group(settings)["rules"]:
        assert alert["labels"]["severity"] in ("critical", "warning")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        assert alert["annotations"]["runbook_url"] == f"https://example.org/platform/README.md#{alert['alert'].lower()}"


def test_thresholds_come_from_the_settings():
    settings = AlertSettings(
        queue_time_slo_ms=250,
        failure_ratio=0.2,
        gpu_utilisation=0.75,
        gpu_memory_ratio=0.8,
        restarts=5,
        window="10m",
        namespace="serving",
        deployment="tritonserver",
    )
    by_name = {r["alert"]: r for r in rules.alert_rule_group(settings)["rules"]}
    assert ") > 250000\n" in by_name["TritonQueueTimeAboveSlo"]["expr"]
    assert ") > 0.2\n" in by_name["TritonFailureRatioHigh"]["expr"]
    assert "[10m]" in by_name["TritonFailureRatioHigh"]["expr"]
    assert by_name["GpuUtilisationHigh"]["expr"].endswith(") > 0.75")
    assert by_name["GpuMemoryNearHamiLimit"]["expr"].endswith("> 0.8")
    assert by_name["TritonPodRestarting"]["expr"].endswith(">= 5")
    assert 'namespace="serving", deployment="tritonserver"' in by_name["TritonNoReadyReplicas"]["expr"]


def test_gpu_utilisation_uses_engine_activity_only_on_mig():
    assert "DCGM_FI_DEV_GPU_UTIL" not in rules.gpu_utilisation_expr(mig=True)
    assert "DCGM_FI_DEV_GPU_UTIL" in rules.gpu_utilisation_expr(mig=False)


@pytest.mark.parametrize(
    "change",
    [
        {"failure_ratio": 0},
        {"gpu_utilisation": 1.5},
        {"gpu_memory_ratio": -0.1},
        {"queue_time_slo_ms": 0},
        {"restarts": 0},
        {"window": "5 minutes"},
        {"queue_time_for": "soon"},
    ],
)
def test_invalid_settings_are_refused_with_the_field_named(change):
    with pytest.raises(RuleSettingsError, match=next(iter(change)).split("_")[0]):
        dataclasses.replace(AlertSettings(), **change)


def test_duration_seconds_reads_prometheus_durations():
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("250ms") == 0.25
    assert duration_seconds("2w") == 14 * 86400
    with pytest.raises(ValueError, match="'90'"):
        duration_seconds("90")


def test_a_duration_the_rules_cannot_use_is_refused_by_name():
    with pytest.raises(RuleSettingsError, match=r"window \('5 minutes'\)"):
        rules.recording_rule_group(window="5 minutes")
