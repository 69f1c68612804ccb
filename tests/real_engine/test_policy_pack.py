"""The policy pack under the real engine: CLI 3.274 starts the Python pack through the language host built from
v3.259.0's source (toolchain/build.py). The platform's own stack passes it; a stack that breaks mandatory rules
fails its preview, each violation named with its rule and resource."""

from __future__ import annotations

import subprocess

from tests.paths import ROOT
from tests.real_engine._engine import SUMMARY, log_path, pulumi, tail

VIOLATING = ROOT / "tests" / "real_engine" / "violating_stack"


def test_the_platform_passes_its_own_policy_pack() -> None:
    result, _ = pulumi("preview-policy", "preview", "--policy-pack", "policy")
    assert result.returncode == 0, tail(result)
    assert "Policy Violations" not in result.stdout
    SUMMARY["policy"] = "platform passes"


def _in_violating_project(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["pulumi", *args, "--non-interactive"], cwd=VIOLATING, text=True, capture_output=True, timeout=600
    )
    log_path(f"violating-{args[0]}").write_text(f"$ pulumi {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result


def test_a_stack_that_breaks_mandatory_rules_fails_its_preview_naming_rule_and_resource() -> None:
    _in_violating_project("stack", "init", "violating")
    try:
        result = _in_violating_project("preview", "--stack", "violating", "--policy-pack", str(ROOT / "policy"))
    finally:  # also removes the stack's Pulumi.violating.yaml from the project folder
        _in_violating_project("stack", "rm", "violating", "--yes", "--force")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "mandatory" in output
    for rule in ("pinned-images", "container-resources"):
        assert rule in output, output[-3000:]
    assert "unpinned-web" in output and "'nginx'" in output
    SUMMARY["policy"] = SUMMARY.get("policy", "platform FAILED") + ", violating stack refused (2 rules)"
