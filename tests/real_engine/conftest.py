"""The real engine against the simulated cluster: run only through `make real-engine`, which starts the cluster
(python -m local_cluster run -- pytest tests/real_engine) and gives these tests its environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get("LOCAL_CLUSTER_NETNS") != "1":
        skip = pytest.mark.skip(reason="needs the simulated cluster: make real-engine")
        here = Path(__file__).parent
        for item in items:
            if here in Path(item.path).parents:
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.paths import ROOT
    from tests.real_engine._engine import SUMMARY

    if not SUMMARY:
        return
    s = SUMMARY
    preview = f"ok in {s['preview_s']} s" if "preview_s" in s else "FAILED"
    line = (
        f"real engine (local): preview {preview}; "
        f"up {s.get('resources', '?')} resources in {s.get('up_s', '?')} s; "
        f"{s.get('triton_pods', 'no')} Triton pods serving (Ready in {s.get('triton_ready_s', '?')} s), scraped, "
        f"on the custom metrics API {s.get('custom_metrics', 'FAILED')}; "
        f"gateway: {s.get('gateway', 'FAILED')}; "
        f"no-op preview {'0 changes' if 'noop_s' in s else 'FAILED'}; "
        f"drift: {s.get('drift', 'FAILED')}; "
        f"rollout {s.get('rollout', 'FAILED')} (min ready {s.get('min_ready', '?')}); "
        f"killed up: recovery {s.get('recovery', 'FAILED')}; "
        f"dev preview {s.get('dev_preview', 'FAILED')}; prod preview {s.get('prod_preview', 'FAILED')}; "
        f"user errors: {len(s.get('user_errors', []))}/3 one clean message; "
        f"destroy: {s.get('left', '?')} objects left; "
        f"policy pack: {s.get('policy', 'FAILED')}"
    )
    terminalreporter.write_line(line)
    terminalreporter.write_line(f"autoscaling loop (local): {s.get('autoscaling', 'FAILED')}")
    (ROOT / ".cache" / "real-engine.json").write_text(__import__("json").dumps(s, indent=2))
