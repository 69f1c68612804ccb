"""Build orchestration: the step cache, TensorRT skip handling, stated weights, and one real MNIST build."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from model_pipeline import build as build_module
from model_pipeline.build import BuildSettings, StepCache, TrainSettings, _Builder, build_repository, cache_key
from model_pipeline.entry import ModelEntry
from model_pipeline.errors import ModelWeightsError
from tests._pipeline_helpers import tiny_spec

MNIST, RESNET = ModelEntry(name="mnist"), ModelEntry(name="resnet50", backend="tensorrt")


def _counting_producer(calls: list[Path], payload: str = "x") -> Any:
    def produce(directory: Path) -> dict[str, Any]:
        calls.append(directory)
        (directory / "out.txt").write_text(payload)
        return {"payload": payload}

    return produce


def test_step_runs_once_and_is_then_served_from_the_cache(tmp_path: Path) -> None:
    cache, calls = StepCache(tmp_path), []
    first, meta = cache.run("m", "export", {"a": 1}, _counting_producer(calls))
    second, again = cache.run("m", "export", {"a": 1}, _counting_producer(calls))
    assert len(calls) == 1
    assert first == second and meta == again == {"payload": "x"}
    assert (second / "out.txt").read_text() == "x"
    assert [r.cached for r in cache.records] == [False, True]


def test_changed_input_runs_the_step_again(tmp_path: Path) -> None:
    cache, calls = StepCache(tmp_path), []
    cache.run("m", "export", {"code": "v1"}, _counting_producer(calls))
    cache.run("m", "export", {"code": "v2"}, _counting_producer(calls))
    assert len(calls) == 2


def test_failed_step_leaves_no_cache_entry(tmp_path: Path) -> None:
    cache, calls = StepCache(tmp_path), []

    def crash(directory: Path) -> dict[str, Any]:
        (directory / "half-written.onnx").write_bytes(b"partial")
        raise RuntimeError("killed mid-way")

    with pytest.raises(RuntimeError):
        cache.run("m", "export", {"a": 1}, crash)
    cache.run("m", "export", {"a": 1}, _counting_producer(calls))
    assert len(calls) == 1
    assert [p.name for p in (tmp_path / "export").iterdir()] == [cache_key({"step": "export", "a": 1})]


def test_disabled_cache_always_runs(tmp_path: Path) -> None:
    calls: list[Path] = []
    StepCache(tmp_path).run("m", "s", {}, _counting_producer(calls))
    StepCache(tmp_path, enabled=False).run("m", "s", {}, _counting_producer(calls))
    assert len(calls) == 2


def test_cache_key_is_independent_of_key_order() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})


def _builder(tmp_path: Path, **changes: Any) -> tuple[_Builder, list[str]]:
    said: list[str] = []
    settings = BuildSettings(models=(RESNET,), cache_dir=tmp_path / "cache", **changes)
    return _Builder(settings, said.append), said


def test_random_resnet_weights_are_announced(tmp_path: Path) -> None:
    builder, said = _builder(tmp_path)
    weights = builder.resnet_weights(RESNET)
    assert weights.identity == {"random_seed": 0}
    assert any("RANDOM weights" in line and "--resnet50-weights" in line for line in said)


def test_weights_file_hash_identifies_the_weights(tmp_path: Path) -> None:
    weights_file = tmp_path / "resnet50.pth"
    weights_file.write_bytes(b"pretend state dict")
    builder, said = _builder(tmp_path, resnet50_weights=weights_file)
    first = builder.resnet_weights(RESNET).identity
    weights_file.write_bytes(b"other weights")
    assert builder.resnet_weights(RESNET).identity != first
    assert not any("RANDOM" in line for line in said)


def test_missing_weights_file_fails_before_any_work(tmp_path: Path) -> None:
    builder, _ = _builder(tmp_path, resnet50_weights=tmp_path / "absent.pth")
    with pytest.raises(ModelWeightsError, match=r"absent\.pth does not exist"):
        builder.source(RESNET)
    assert not (tmp_path / "cache").exists()


def test_tensorrt_requested_but_unavailable_is_skipped_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_pipeline import tensorrt_build

    monkeypatch.setattr(tensorrt_build, "tensorrt_unavailable_reason", lambda: "no CUDA GPU: test says so")
    builder, said = _builder(tmp_path)
    spec = dataclasses.replace(tiny_spec(), backend="tensorrt", precision="fp16")
    status, plan = builder.engine(spec, tmp_path / "m.onnx", tmp_path / "g.npz")
    assert (status.status, status.reason, plan) == ("skipped", "no CUDA GPU: test says so", None)
    assert any("serving model.onnx with ONNX Runtime" in line for line in said)


def test_onnxruntime_backend_never_asks_for_tensorrt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model_pipeline import tensorrt_build

    def must_not_be_called() -> str:
        raise AssertionError("TensorRT availability checked for an onnxruntime model")

    monkeypatch.setattr(tensorrt_build, "tensorrt_unavailable_reason", must_not_be_called)
    builder, _ = _builder(tmp_path)
    spec = tiny_spec()
    status, plan = builder.engine(spec, tmp_path / "m.onnx", tmp_path / "g.npz")
    assert status.status == "skipped" and "no engine needed" in status.reason and plan is None


# --- one real build -------------------------------------------------------------------------------------


def _synthetic_mnist(directory: Path, train: int = 600, test: int = 100) -> Path:
    """IDX files of an easy ten-class task: class k lights a 4x4 block at a position of its own, plus noise."""
    from model_pipeline.mnist_data import write_idx

    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("t10k", test)):
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
        for index, label in enumerate(labels):
            row, col = divmod(int(label), 5)
            images[index, 4 + row * 10 : 8 + row * 10, 2 + col * 5 : 6 + col * 5] = 255
        write_idx(directory / f"{split}-images-idx3-ubyte", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels)
    return directory


@pytest.mark.slow
def test_mnist_build_end_to_end_and_warm_rebuild_reuses_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = BuildSettings(
        models=(MNIST,),
        out=tmp_path / "repo",
        cache_dir=tmp_path / "cache",
        mnist_source=str(_synthetic_mnist(tmp_path / "idx")),
        allow_mnist_fallback=False,
        train=TrainSettings(epochs=2, batch_size=32),
    )
    cold = build_repository(settings)
    assert cold.ran("train") == ["mnist"] and cold.ran("export") == ["mnist"]
    manifest = json.loads((tmp_path / "repo/manifest.json").read_text())
    entry = manifest["models"]["mnist"]
    assert entry["platform"] == "onnxruntime_onnx"  # no TensorRT here: served by ONNX Runtime
    assert entry["tensorrt"]["status"] == "skipped" and entry["tensorrt"]["reason"]
    assert entry["accuracy"] > 0.9
    assert sorted(manifest["files"]) == ["mnist/1/model.onnx", "mnist/config.pbtxt", "mnist/golden.npz"]

    from model_pipeline import onnx_export, train

    def must_not_run(*_: Any, **__: Any) -> Any:
        raise AssertionError("a cached step ran again")

    monkeypatch.setattr(train, "train_mnist", must_not_run)
    monkeypatch.setattr(onnx_export, "export_module", must_not_run)
    warm = build_repository(settings)
    assert warm.ran("train") == [] and warm.ran("export") == [] and warm.ran("verify") == []
    assert warm.repository.digest == cold.repository.digest
    monkeypatch.undo()

    retrained = build_repository(
        BuildSettings(**{**settings.__dict__, "train": TrainSettings(epochs=1, batch_size=32)})
    )
    assert retrained.ran("train") == ["mnist"] and retrained.ran("export") == ["mnist"]
    assert retrained.repository.digest != cold.repository.digest


def _importing(pattern: str) -> list[str]:
    """The pipeline's modules with an import (at any depth, lazy ones too) whose module matches ``pattern``."""
    import ast

    package = Path(build_module.__file__).parent
    found = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            found += [f"{path.name}: {name}" for name in names if re.match(pattern, name)]
    return found


def test_no_model_pipeline_module_imports_pulumi() -> None:
    assert _importing(r"pulumi(\.|$)") == []


def test_the_pipeline_imports_nothing_of_the_program() -> None:
    """The pipeline is the lower layer: the program imports it, never the other way (the engine Job ships the
    pipeline alone)."""
    assert _importing(r"(components|policy|offline|local_serving|local_cluster)(\.|$)") == []


STACK_FILE = """config:
  inference-platform:models:
    - name: mnist
      instances: 4
      maxQueueDelayUs: 250
      batch: {min: 1, opt: 8, max: 16}
  inference-platform:modelRepository:
    uri: s3://models/triton
"""


@pytest.mark.slow
def test_build_for_a_stack_writes_the_stacks_settings_and_the_program_accepts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`instances: 4` used to be validated and then ignored: the build wrote its own spec and Triton ran one."""
    from components.config import parse_config
    from components.model_repository import load_local_repository
    from model_pipeline import cli
    from model_pipeline.triton_config import parse_config as parse_triton_config

    (tmp_path / "Pulumi.yaml").write_text("name: inference-platform\nruntime: python\n")
    (tmp_path / "Pulumi.staging.yaml").write_text(STACK_FILE)
    idx = _synthetic_mnist(tmp_path / "idx")
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "build",
                "--stack",
                "staging",
                "--mnist-data",
                str(idx),
                "--no-mnist-fallback",
                "--epochs",
                "1",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--quiet",
            ]
        )
        == cli.EXIT_OK
    )

    out = tmp_path / "build" / "staging" / "model_repository"  # the stack's own folder
    config = parse_triton_config((out / "mnist" / "config.pbtxt").read_text())
    assert [group.count for group in config.instance_group] == [4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert config.max_batch_size == 16
    values = yaml.safe_load(STACK_FILE)["config"]
    settings = parse_config("staging", {k.split(":", 1)[1]: v for k, v in values.items()}, root=tmp_path)
    assert tmp_path / settings.model_repository.build_dir == out  # the program looks where the build wrote
    assert load_local_repository(str(out), settings.models, "staging").digest  # and finds the stack's settings
