"""The real engine, measured: the toolchain build (warm, and cold with --cold) and the local stack's lifecycle
on the simulated cluster (preview, up, no-op preview, model rollout, destroy), with the ratios of one run.

    .venv/bin/python benchmarks/real_engine.py            # warm toolchain + one lifecycle (about 5 minutes)
    .venv/bin/python benchmarks/real_engine.py --cold     # also a cold toolchain build in empty Go caches
                                                          # (tens of minutes on 2 cores, ~10 GB of downloads)

Resources per stack: local from the live run's state, dev and prod from the program under mocks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")


def toolchain_build(env: dict[str, str]) -> dict:
    report = Path(tempfile.mkstemp(suffix=".json")[1])
    started = time.monotonic()
    subprocess.run([PY, "-m", "toolchain.build", "--report", str(report)], cwd=ROOT, env=env, check=True)
    result = json.loads(report.read_text())
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    return result


def cold_env(scratch: Path) -> dict[str, str]:
    """Empty module, build and tool caches: what a fresh machine starts from."""
    return {
        **os.environ,
        "GOMODCACHE": str(scratch / "mod"),
        "GOCACHE": str(scratch / "build"),
        "XDG_CACHE_HOME": str(scratch / "xdg"),
    }


def lifecycle() -> dict:
    subprocess.run(
        [
            PY,
            "-m",
            "local_cluster",
            "run",
            "--stack",
            "local",
            "--",
            PY,
            "-m",
            "pytest",
            "tests/real_engine",
            "-q",
            "-p",
            "no:cacheprovider",
        ],
        cwd=ROOT,
        check=False,
    )
    return dict(json.loads((ROOT / ".cache" / "real-engine.json").read_text()))


def mock_resource_counts() -> dict[str, int]:
    sys.path.insert(0, str(ROOT))
    from offline.harness import run_program
    from tests._stack_repository import config_with_build_dir, stack_entries, stack_repository

    counts = {}
    for stack in ("dev", "prod"):
        repository = stack_repository(Path(tempfile.mkdtemp()), stack_entries(stack))
        counts[stack] = len(run_program(stack, config=config_with_build_dir(stack, repository)).resources)
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also build the toolchain from empty caches")
    args = parser.parse_args()
    results: dict = {}
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="toolchain-cold-") as scratch:
            results["toolchain_cold"] = toolchain_build(cold_env(Path(scratch)))
            subprocess.run(["go", "clean", "-modcache"], env=cold_env(Path(scratch)), check=False)
    results["toolchain_warm"] = toolchain_build(dict(os.environ))
    results["lifecycle"] = lifecycle()
    results["resources"] = {"local": results["lifecycle"].get("resources"), **mock_resource_counts()}
    run = results["lifecycle"]
    print(json.dumps(results, indent=2))
    print(
        f"toolchain warm {results['toolchain_warm']['wall_seconds']} s"
        + (
            f", cold {results['toolchain_cold']['wall_seconds']} s, warm/cold "
            f"{results['toolchain_warm']['wall_seconds'] / results['toolchain_cold']['wall_seconds']:.4f}"
            if "toolchain_cold" in results
            else ""
        )
    )
    if {"up_s", "noop_s", "destroy_s", "preview_s"} <= set(run):
        print(
            f"local stack: preview {run['preview_s']} s, up {run['up_s']} s, no-op preview {run['noop_s']} s, "
            f"destroy {run['destroy_s']} s; no-op/up {run['noop_s'] / run['up_s']:.2f}, "
            f"destroy/up {run['destroy_s'] / run['up_s']:.2f}; resources {results['resources']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
