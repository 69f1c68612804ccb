"""The repository on disk: CONTRACTS.md layout, a manifest whose digest covers every file, and verify."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from model_pipeline.derive import derive_spec
from model_pipeline.entry import ModelEntry
from model_pipeline.errors import ModelValidationError, RepositoryError
from model_pipeline.release import TRITON_IMAGE, TRITON_TENSORRT_VERSION
from model_pipeline.repository import (
    ModelArtifacts,
    TensorRTStatus,
    collect_tool_versions,
    verify_repository,
    write_manifest,
    write_repository,
)
from model_pipeline.verification import UNBOUNDED_AXIS, GoldenCase, read_golden, write_golden
from tests._pipeline_helpers import golden_for, rehash, tiny_artifacts, tiny_onnx, tiny_repository, tiny_spec


def _manifest(repo: Path) -> dict:
    return json.loads((repo / "manifest.json").read_text())


def test_layout_matches_the_contract(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path, ("alpha", "beta"))
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file())
    assert files == [
        "alpha/1/model.onnx", "alpha/config.pbtxt", "alpha/golden.npz",
        "beta/1/model.onnx", "beta/config.pbtxt", "beta/golden.npz",
        "manifest.json",
    ]  # fmt: skip


def test_manifest_records_every_file_with_hash_and_size(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    manifest = _manifest(repo)
    onnx_bytes = (repo / "tiny/1/model.onnx").read_bytes()
    assert manifest["files"]["tiny/1/model.onnx"] == {
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
        "size": len(onnx_bytes),
    }
    assert set(manifest["files"]) == {"tiny/1/model.onnx", "tiny/config.pbtxt", "tiny/golden.npz"}


def test_manifest_digest_is_hash_of_sorted_path_hash_pairs(tmp_path: Path) -> None:
    manifest = _manifest(tiny_repository(tmp_path))
    pairs = sorted([path, entry["sha256"]] for path, entry in manifest["files"].items())
    expected = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    assert manifest["digest"] == expected


def test_manifest_header_models_and_tools(tmp_path: Path) -> None:
    manifest = _manifest(tiny_repository(tmp_path))
    assert manifest["format"] == 1
    assert manifest["triton_image"] == TRITON_IMAGE
    assert manifest["tensorrt_version_required"] == TRITON_TENSORRT_VERSION
    assert manifest["tools"]["onnx"] and manifest["tools"]["onnxruntime"] and manifest["tools"]["torch"]
    assert manifest["tools"]["tensorrt"] is None
    assert manifest["models"]["tiny"] == {
        "version": 1,
        "platform": "onnxruntime_onnx",
        "backend_requested": "onnxruntime",
        "precision": "fp32",
        "instances": 1,
        "max_queue_delay_us": 50,
        "max_batch_size": 4,
        "profile": [1, 2, 4],
        "axes": {},
        "tolerance": {"atol": 1e-3, "rtol": 1e-3},
        "inputs": [{"name": "input", "data_type": "FP32", "dims": [1, 4, 4], "axes": []}],
        "outputs": [{"name": "logits", "data_type": "FP32", "dims": [3], "axes": []}],
        "tensorrt": {"status": "skipped", "reason": "test: no TensorRT", "version": None, "compute_capability": None},
        "accuracy": None,
        "weights": "random (test)",
        "entry": {},
        "source_sha256": None,
    }


def test_manifest_records_the_stack_entry_and_the_source_hash(tmp_path: Path) -> None:
    artifacts = tiny_artifacts(tmp_path / "work", tiny_spec())
    entry = ModelEntry(name="tiny", source="models/tiny.onnx").record()
    recorded = dataclasses.replace(artifacts, entry=entry, source_sha256="ab" * 32)
    repo = write_repository(tmp_path / "repo", [recorded], collect_tool_versions()).path
    model = _manifest(repo)["models"]["tiny"]
    assert model["entry"] == entry
    assert model["source_sha256"] == "ab" * 32


def _graph_model(path: Path, node: onnx.NodeProto, x: list[int | str], y: tuple[int, list[int | str]]) -> Path:
    """A one-node graph from FP32 ``x`` to ``y`` (its element type and shape)."""
    graph = helper.make_graph(
        [node],
        "one-node",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", y[0], y[1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the installed ONNX Runtime reads
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _brought_artifacts(work: Path, name: str, onnx_path: Path) -> ModelArtifacts:
    spec = derive_spec(ModelEntry(name=name, source="model.onnx"), onnx_path)
    golden = golden_for(spec, onnx_path, work / name / "golden.npz")
    return ModelArtifacts(spec, onnx_path, golden, TensorRTStatus("skipped", reason="test"))


def test_a_model_without_batch_dimension_with_a_dynamic_axis_is_written_and_verified(tmp_path: Path) -> None:
    relu = helper.make_node("Relu", ["x"], ["y"])
    path = _graph_model(tmp_path / "work/seq/model.onnx", relu, [2, "seq"], (TensorProto.FLOAT, [2, "seq"]))
    repo = write_repository(tmp_path / "repo", [_brought_artifacts(tmp_path / "work", "seq", path)], {}).path
    verify_repository(repo)  # golden outputs replayed too
    model = _manifest(repo)["models"]["seq"]
    assert (model["max_batch_size"], model["profile"], model["max_queue_delay_us"]) == (0, None, 0)
    assert model["inputs"] == [{"name": "x", "data_type": "FP32", "dims": [2, -1], "axes": ["", "seq"]}]
    cases = read_golden(repo / "seq/golden.npz")
    assert [case.inputs["x"].shape for case in cases] == [(2, size) for size in UNBOUNDED_AXIS.as_list()]


def test_a_batch_only_output_is_written_and_verified(tmp_path: Path) -> None:
    argmax = helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)
    path = _graph_model(tmp_path / "work/labels/model.onnx", argmax, ["n", 3], (TensorProto.INT64, ["n"]))
    repo = write_repository(tmp_path / "repo", [_brought_artifacts(tmp_path / "work", "labels", path)], {}).path
    verify_repository(repo)
    assert _manifest(repo)["models"]["labels"]["outputs"] == [
        {"name": "y", "data_type": "INT64", "dims": [], "axes": []}
    ]


def test_a_text_model_is_written_and_its_golden_outputs_replay(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "echo",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["n", 1])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, ["n", 1])],
    )
    path = tmp_path / "work/echo/model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    repo = write_repository(tmp_path / "repo", [_brought_artifacts(tmp_path / "work", "echo", path)], {}).path
    verify_repository(repo)  # replays the golden text through ONNX Runtime
    (first, *_) = read_golden(repo / "echo/golden.npz")
    assert first.outputs["same"].tolist() == first.inputs["text"].tolist()
    assert first.outputs["same"].ravel()[0] in ("alpha", "beta", "gamma", "delta")  # the words, not "b'alpha'"


def test_same_inputs_give_the_same_digest_and_different_weights_another(tmp_path: Path) -> None:
    first = _manifest(tiny_repository(tmp_path / "a"))["digest"]
    again = _manifest(tiny_repository(tmp_path / "b"))["digest"]
    other = _manifest(tiny_repository(tmp_path / "c", seed=1))["digest"]
    assert first == again
    assert other != first


def test_verify_accepts_a_fresh_repository(tmp_path: Path) -> None:
    verified = verify_repository(tiny_repository(tmp_path, ("alpha", "beta")))
    assert verified.models == ["alpha", "beta"]
    assert verified.files_checked == 6


def test_verify_detects_a_changed_file(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    with (repo / "tiny/golden.npz").open("ab") as handle:
        handle.write(b"x")
    with pytest.raises(RepositoryError, match=r"tiny/golden.npz changed since the build"):
        verify_repository(repo)


def test_verify_detects_missing_and_extra_files(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    (repo / "tiny/1/notes.txt").write_text("hello")
    with pytest.raises(RepositoryError, match=r"files not in manifest.json .*\['tiny/1/notes.txt'\]"):
        verify_repository(repo)
    (repo / "tiny/1/notes.txt").unlink()
    (repo / "tiny/config.pbtxt").unlink()
    with pytest.raises(RepositoryError, match=r"missing: \['tiny/config.pbtxt'\]"):
        verify_repository(repo)


def test_verify_rejects_a_tampered_digest(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    manifest = _manifest(repo)
    manifest["digest"] = "0" * 64
    write_manifest(repo, manifest)
    with pytest.raises(RepositoryError, match="manifest digest does not match"):
        verify_repository(repo)


def test_verify_rechecks_config_against_onnx_even_when_hashes_agree(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    tiny_onnx(repo / "tiny/1/model.onnx", tiny_spec(), input_name="x", input_dims=(16,))
    rehash(repo, "tiny/1/model.onnx")
    with pytest.raises(ModelValidationError, match=r"config.pbtxt input 'input' is FP32 \[1,4,4\] but model.onnx"):
        verify_repository(repo)


def test_verify_replays_golden_outputs_through_onnx_runtime(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    tiny_onnx(repo / "tiny/1/model.onnx", tiny_spec(), seed=7)  # same interface, other weights
    rehash(repo, "tiny/1/model.onnx")
    verify_repository(repo, replay_golden=False)  # interface checks alone cannot see new weights
    expected = (
        r"model 'tiny': model\.onnx replayed against golden\.npz differs .* at the min shapes \(input \[1, 1, 4, 4\]\)"
    )
    with pytest.raises(ModelValidationError, match=expected):
        verify_repository(repo)


def test_verify_rejects_golden_file_without_a_declared_tensor(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    inputs_only = GoldenCase("min", {"input": np.zeros((1, 1, 4, 4), np.float32)}, {})
    write_golden("tiny", [inputs_only], repo / "tiny/golden.npz")
    rehash(repo, "tiny/golden.npz")
    with pytest.raises(ModelValidationError, match="case min has no array for tensor 'logits'"):
        verify_repository(repo, replay_golden=False)


def test_verify_rejects_golden_arrays_of_another_shape(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    case = GoldenCase("min", {"input": np.zeros((1, 4, 4), np.float32)}, {"logits": np.zeros((1, 3), np.float32)})
    write_golden("tiny", [case], repo / "tiny/golden.npz")
    rehash(repo, "tiny/golden.npz")
    expected = r"'input' in case min has shape \[1, 4, 4\], expected \['batch', 1, 4, 4\]"
    with pytest.raises(ModelValidationError, match=expected):
        verify_repository(repo, replay_golden=False)


def test_verify_rejects_a_directory_without_manifest(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    (repo / "manifest.json").unlink()
    with pytest.raises(RepositoryError, match=r"no manifest.json; not a built model repository"):
        verify_repository(repo)


def test_verify_rejects_plan_platform_without_a_built_engine(tmp_path: Path) -> None:
    repo = tiny_repository(tmp_path)
    manifest = _manifest(repo)
    manifest["models"]["tiny"]["platform"] = "tensorrt_plan"
    write_manifest(repo, manifest)
    with pytest.raises(ModelValidationError, match=r"config.pbtxt platform 'onnxruntime_onnx' but the manifest"):
        verify_repository(repo)


def test_skipped_tensorrt_is_served_as_onnx_even_with_a_plan_file_given(tmp_path: Path) -> None:
    artifacts = tiny_artifacts(tmp_path / "work", tiny_spec())
    plan = tmp_path / "stale.plan"
    plan.write_bytes(b"not an engine")
    skipped = ModelArtifacts(artifacts.spec, artifacts.onnx_path, artifacts.golden_path, artifacts.tensorrt, plan)
    repo = write_repository(tmp_path / "repo", [skipped], collect_tool_versions()).path
    assert not (repo / "tiny/1/model.plan").exists()
    assert 'platform: "onnxruntime_onnx"' in (repo / "tiny/config.pbtxt").read_text()


def test_built_plan_from_a_foreign_tensorrt_never_reaches_the_repository(tmp_path: Path) -> None:
    artifacts = tiny_artifacts(tmp_path / "work", tiny_spec())
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine bytes")
    foreign = TensorRTStatus("built", version="10.14.1", compute_capability="9.0")
    built = ModelArtifacts(artifacts.spec, artifacts.onnx_path, artifacts.golden_path, foreign, plan)
    with pytest.raises(ModelValidationError, match=r"built by TensorRT 10.14.1"):
        write_repository(tmp_path / "repo", [built], collect_tool_versions())
    assert not (tmp_path / "repo").exists()


def test_built_plan_is_placed_next_to_the_onnx_and_served_as_tensorrt(tmp_path: Path) -> None:
    artifacts = tiny_artifacts(tmp_path / "work", tiny_spec())
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"engine bytes")
    status = TensorRTStatus("built", version=f"{TRITON_TENSORRT_VERSION}.106", compute_capability="9.0")
    built = ModelArtifacts(artifacts.spec, artifacts.onnx_path, artifacts.golden_path, status, plan)
    repo = write_repository(tmp_path / "repo", [built], collect_tool_versions()).path
    assert (repo / "tiny/1/model.plan").read_bytes() == b"engine bytes"
    assert (repo / "tiny/1/model.onnx").is_file()
    assert _manifest(repo)["models"]["tiny"]["platform"] == "tensorrt_plan"


def test_rebuild_replaces_the_previous_repository_completely(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository(out, [tiny_artifacts(tmp_path / "w1", tiny_spec("old"))], collect_tool_versions())
    write_repository(out, [tiny_artifacts(tmp_path / "w2", tiny_spec("new"))], collect_tool_versions())
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new"]
    verify_repository(out)


def test_failed_rebuild_keeps_the_previous_repository(tmp_path: Path) -> None:
    out = tmp_path / "repo"
    write_repository(out, [tiny_artifacts(tmp_path / "w1", tiny_spec())], collect_tool_versions())
    before = _manifest(out)["digest"]
    broken = tiny_artifacts(tmp_path / "w2", tiny_spec(), seed=3)
    tiny_onnx(broken.onnx_path, tiny_spec(), input_dims=(2, 8))  # no longer matches the spec's config
    with pytest.raises(ModelValidationError):
        write_repository(out, [broken], collect_tool_versions())
    assert _manifest(out)["digest"] == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_refuses_to_replace_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("...")
    with pytest.raises(RepositoryError, match="refusing to replace a directory"):
        write_repository(out, [tiny_artifacts(tmp_path / "w", tiny_spec())], collect_tool_versions())
    assert (out / "thesis.tex").exists()
