"""Drive the real Pulumi CLI on the local stack and read the live API server (never our own records)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.paths import ROOT

STACK = "local"
BUILD_DIR = "build/local/model_repository"
SUMMARY: dict[str, Any] = {}  # filled by the tests, printed as one line at the end (conftest)


def cluster_dir() -> Path:
    return Path(os.environ["LOCAL_CLUSTER_DIR"])


def log_path(name: str) -> Path:
    folder = cluster_dir() / "pulumi-logs"
    folder.mkdir(exist_ok=True)
    return folder / f"{name}.log"


def pulumi(name: str, *args: str, timeout: float = 1200) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `pulumi <args> --stack local`; the output goes to the cluster's log folder as well."""
    started = time.monotonic()
    result = subprocess.run(
        ["pulumi", *args, "--stack", STACK, "--non-interactive"],
        cwd=ROOT,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    seconds = time.monotonic() - started
    log_path(name).write_text(f"$ pulumi {' '.join(args)}\n{result.stdout}\n{result.stderr}")
    return result, seconds


def tail(result: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


def kubectl(*args: str, timeout: float = 60, stdin: str | None = None) -> str:
    result = subprocess.run(["kubectl", *args], input=stdin, text=True, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def kube_items(*args: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", *args, "-o", "json"))["items"])


def pod_ready(pod: dict[str, Any] | None) -> bool:
    """The pod's Ready condition is True (a pod that is gone is not ready)."""
    conditions = (pod or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def build_models(epochs: int) -> str:
    """(Re)build the local stack's repository; a different epoch count trains other weights: a new digest."""
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "model_pipeline",
            "build",
            "--stack",
            "local",
            "--out",
            BUILD_DIR,
            "--epochs",
            str(epochs),
            "--quiet",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return str(json.loads((ROOT / BUILD_DIR / "manifest.json").read_text())["digest"])


def state_resources() -> list[dict[str, Any]]:
    exported = subprocess.run(
        ["pulumi", "stack", "export", "--stack", STACK], cwd=ROOT, text=True, capture_output=True, check=True
    ).stdout
    return list(json.loads(exported)["deployment"].get("resources") or [])


def cluster_scoped_names() -> dict[str, set[str]]:
    """Every cluster-scoped object a platform install could leave behind, by kind."""
    kinds = (
        "namespaces",
        "customresourcedefinitions",
        "apiservices",
        "clusterroles",
        "clusterrolebindings",
        "mutatingwebhookconfigurations",
        "validatingwebhookconfigurations",
        "runtimeclasses",
        "priorityclasses",
        "storageclasses",
        "ingressclasses",
    )
    return {kind: {item["metadata"]["name"] for item in kube_items(kind)} for kind in kinds}
