"""Shared fixtures: each stack's program run once under mocks, and paths to the shared fixtures."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from offline.fixtures import FixturesError, fixtures_root
from offline.harness import Recording, run_program
from tests._pipeline_helpers import isolate_aws_credentials, moto_s3_server
from tests._stack_repository import config_with_build_dir, stack_entries, stack_repository

STACKS = ("dev", "prod")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The fixtures root ($SHARED_DIR, ../shared or the verified download; see offline/fixtures.py)."""
    try:
        return fixtures_root()
    except FixturesError as error:
        pytest.fail(f"{error}; `make fixtures` (python -m offline.fixtures) says the same")


@pytest.fixture(scope="session", autouse=True)
def tiny_default_model_repository(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Stack runs that keep the default modelRepository.buildDir publish a tiny repository of their own models.

    Tests that run the program with their own config need no trained models; an explicit buildDir is untouched.
    """
    import components.model_repository as model_repository
    from model_pipeline.stack import default_build_dir

    real = model_repository.load_local_repository
    built: dict[tuple[Any, ...], Path] = {}

    def load(build_dir: str, models: Sequence[Any], stack: str, root: Path = model_repository.ROOT) -> Any:
        if build_dir != default_build_dir(stack):
            return real(build_dir, models, stack, root)
        entries = tuple(models)
        if entries not in built:
            built[entries] = stack_repository(tmp_path_factory.mktemp("default-models"), entries)
        return real(str(built[entries]), models, stack, root)

    patch = pytest.MonkeyPatch()
    patch.setattr(model_repository, "load_local_repository", load)
    yield
    patch.undo()


@pytest.fixture(scope="session")
def stack_repositories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny built model repository per stack, holding exactly that stack's models."""
    return {
        stack: stack_repository(tmp_path_factory.mktemp(f"{stack}-models"), stack_entries(stack)) for stack in STACKS
    }


@pytest.fixture(scope="session")
def recordings(stack_repositories: dict[str, Path]) -> dict[str, Recording]:
    """Every stack file's program, run once per test session, publishing its tiny repository."""
    return {
        stack: run_program(stack, config=config_with_build_dir(stack, stack_repositories[stack])) for stack in STACKS
    }


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


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free 127.0.0.1 port, for the duration of one test module."""
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def isolated_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Dummy keys for moto; no developer AWS profile, config or instance metadata leaks into a test."""
    isolate_aws_credentials(monkeypatch, tmp_path)
