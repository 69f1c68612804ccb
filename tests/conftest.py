"""Shared fixtures: each stack's program run once under mocks, and paths to the shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from offline.harness import Recording, run_program

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
STACKS = ("dev", "prod")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared fixtures not found at {SHARED}; set SHARED_DIR")
    return SHARED


@pytest.fixture(scope="session")
def recordings() -> dict[str, Recording]:
    """Every stack file's program, run once per test session."""
    return {stack: run_program(stack) for stack in STACKS}


@pytest.fixture(scope="session")
def dev(recordings: dict[str, Recording]) -> Recording:
    return recordings["dev"]


@pytest.fixture(scope="session")
def prod(recordings: dict[str, Recording]) -> Recording:
    return recordings["prod"]


@pytest.fixture(scope="session", params=STACKS)
def stack(request: pytest.FixtureRequest, recordings: dict[str, Recording]) -> Recording:
    """Parametrises a test over both stacks."""
    return recordings[request.param]
