"""Bring your own model, end to end, on models no one here wrote (tests/corpus: transformers, scikit-learn, torch).

A test project brings the corpus through a stack file, as a user would: `python -m model_pipeline build --stack`
builds it, the real Triton serves it equal to ONNX Runtime on every output, the program renders the stack and
hands each engine Job the profile the pipeline's own CLI reads back, and every refusal comes before any build.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml

from model_pipeline import cli
from model_pipeline.digest import file_sha256
from model_pipeline.repository import verify_repository
from model_pipeline.triton_config import load_config
from tests._pipeline_helpers import isolate_aws_credentials, moto_s3_server
from tests.corpus.models import CORPUS, build_corpus
from tests.paths import ROOT

pytestmark = pytest.mark.slow
STACK = "corpus"
CORPUS_CACHE = ROOT / ".cache" / "corpus"


def _entries(models: Path) -> list[dict[str, Any]]:
    """The corpus as stack entries, sources given by absolute path so the program reads the same entries."""
    entries = []
    for model in CORPUS:
        entry = {**model.entry, "source": str(models / model.file)}
        if model.samples_file:
            entry["samples"] = str(models / model.samples_file)
        entries.append(entry)
    return entries


def _project(folder: Path, entries: list[dict[str, Any]], repository: dict[str, Any] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ROOT / "Pulumi.yaml", folder / "Pulumi.yaml")
    config = {
        "inference-platform:models": entries,
        "inference-platform:modelRepository": repository or {"uri": "s3://corpus-models/triton"},
    }
    (folder / f"Pulumi.{STACK}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
    return folder


def _build(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "model_pipeline", "build", "--stack", STACK, "--quiet", *extra]
    command += ["--cache-dir", str(project / "cache")]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=600, env=environment)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus files (cached under .cache/corpus between runs), copied where the test project keeps them."""
    build_corpus(CORPUS_CACHE)
    models = tmp_path_factory.mktemp("byom") / "models"
    shutil.copytree(CORPUS_CACHE, models, ignore=shutil.ignore_patterns("corpus.json"))
    return models


@pytest.fixture(scope="module")
def built(corpus: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    project = _project(corpus.parent / "project", _entries(corpus))
    result = _build(project)
    assert result.returncode == 0, result.stderr[-3000:]
    return project / "build" / STACK / "model_repository", result


def _manifest(repository: Path) -> dict[str, Any]:
    return dict(json.loads((repository / "manifest.json").read_text())["models"])


def _tensors(entry: dict[str, Any], kind: str) -> list[tuple[str, str, list[int]]]:
    return [(t["name"], t["data_type"], t["dims"]) for t in entry[kind]]


def test_what_is_derived_from_each_model(built: tuple[Path, Any]) -> None:
    models = _manifest(built[0])
    encoder = models["text-encoder"]
    assert _tensors(encoder, "inputs") == [("input_ids", "INT64", [-1]), ("attention_mask", "INT64", [-1])]
    assert (encoder["max_batch_size"], encoder["axes"]) == (32, {"sequence": [8, 128, 512]})
    sklearn = models["sklearn-pipeline"]
    assert _tensors(sklearn, "outputs") == [("label", "INT64", []), ("probabilities", "FP32", [3])]
    fixed = models["fixed-shape"]
    assert (fixed["max_batch_size"], fixed["profile"]) == (0, None)
    assert _tensors(fixed, "inputs") == [("input", "FP32", [4, 16])]
    heads = models["two-heads"]  # brought as a torch.export program
    assert _tensors(heads, "inputs") == [("tokens", "INT64", [12]), ("features", "FP32", [6])]
    assert [t["name"] for t in heads["outputs"]] == ["output_0", "output_1"]
    assert models["image-classifier"]["profile"] == [1, 4, 16]


def test_each_config_is_triton_s_own_and_batching_follows_the_batch_dimension(built: tuple[Path, Any]) -> None:
    repository = built[0]
    label = next(o for o in load_config(repository / "sklearn-pipeline" / "config.pbtxt").output if o.name == "label")
    assert list(label.dims) == [1] and label.HasField("reshape")  # [N] served as [N, 1]
    fixed = load_config(repository / "fixed-shape" / "config.pbtxt")
    assert fixed.max_batch_size == 0 and not fixed.HasField("dynamic_batching")
    encoder = load_config(repository / "text-encoder" / "config.pbtxt")
    assert list(encoder.dynamic_batching.preferred_batch_size) == [8, 32]


def test_the_repository_verifies_and_every_golden_output_replays_in_onnx_runtime(built: tuple[Path, Any]) -> None:
    verified = verify_repository(built[0], replay_golden=True)
    assert verified.models == sorted(m.name for m in CORPUS)


def test_golden_inputs_cover_the_profile_of_every_axis(built: tuple[Path, Any]) -> None:
    from model_pipeline.verification import read_golden

    cases = {c.label: c for c in read_golden(built[0] / "text-encoder" / "golden.npz")}
    assert {label: c.inputs["input_ids"].shape for label, c in cases.items()} == {
        "min": (1, 8),
        "opt": (8, 128),
        "max": (32, 512),
    }
    ids = np.concatenate([c.inputs["input_ids"].ravel() for c in cases.values()])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() <= 999
    samples = np.load(CORPUS_CACHE / "sklearn-pipeline-samples.npz")["features"]
    sklearn = read_golden(built[0] / "sklearn-pipeline" / "golden.npz")
    assert all(np.isin(c.inputs["features"], samples).all() for c in sklearn)  # real rows, not generated ones


def test_a_warm_build_reruns_no_step(built: tuple[Path, Any], corpus: Path) -> None:
    repository, cold = built
    warm = _build(corpus.parent / "project")
    assert warm.returncode == 0, warm.stderr[-2000:]
    steps = [line for line in warm.stdout.splitlines() if " steps, " in line]
    total = steps[0].split()[0]
    assert steps[0].startswith(f"{total} steps, {total} from cache")
    assert json.loads((repository / "manifest.json").read_text())["digest"] in cold.stdout


def test_the_real_triton_serves_every_model_equal_to_onnx_runtime(built: tuple[Path, Any], tmp_path: Path) -> None:
    from local_serving.errors import ToolMissingError
    from local_serving.installation import find_triton
    from local_serving.ports import free_port

    try:
        find_triton()
    except ToolMissingError as error:
        pytest.skip(f"no local Triton: {error}")
    ports = [f"--{name}-port={free_port()}" for name in ("http", "grpc", "metrics", "prometheus")]
    command = [sys.executable, "-m", "local_serving", "demo", f"--repository={built[0]}", *ports]
    command += ["--duration=0.5", "--concurrency=2", "--scrape-interval=1s", "--rule-window=10s"]
    demo = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    lines = {line.split(":")[0].strip(): line for line in demo.stdout.splitlines() if " over " in line}
    for model in CORPUS:
        for protocol in ("http", "grpc"):
            line = lines[f"{model.name} over {protocol}"]
            assert " 0 errors)" in line and line.endswith("equal to ONNX Runtime 100.00%"), line


def test_the_program_renders_the_stack_and_each_engine_job_carries_the_models_profile(
    built: tuple[Path, Any], corpus: Path
) -> None:
    from offline.harness import run_program, stack_config
    from offline.validate import kubernetes_errors

    config = stack_config("dev")
    config["inference-platform:models"] = _entries(corpus)
    config["inference-platform:modelRepository"] = {
        **config["inference-platform:modelRepository"],
        "buildDir": str(built[0]),
    }
    recording = run_program("dev", config=config)
    jobs = {r.name: r for r in recording.of_type("kubernetes:batch/v1:Job")}
    assert sorted(jobs) == [
        "models-engines-image-classifier",
        "models-engines-text-encoder",
        "models-engines-two-heads",
    ]
    (container,) = jobs["models-engines-text-encoder"].inputs["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    start = command.index("model_pipeline", command.index("python3")) + 1  # after `sh -c <install> build-engine`
    parsed = cli._parser().parse_args(command[start:])  # the flags the pipeline's own CLI reads
    assert (parsed.model, parsed.profile, parsed.axis) == ("text-encoder", "1,8,32", ["sequence=8,128,512"])
    assert parsed.precision == "fp16" and parsed.tolerance == "0.05,0.05"
    for job in jobs.values():
        assert (
            kubernetes_errors({**job.inputs, "metadata": {**job.inputs["metadata"], "name": job.name}}, "1.31.4") == []
        )


def test_a_changed_source_file_is_a_stale_build_and_a_new_digest(built: tuple[Path, Any], tmp_path: Path) -> None:
    from components.model_repository import ModelRepositoryError, load_local_repository
    from model_pipeline.stack import stack_build

    models = tmp_path / "models"
    shutil.copytree(CORPUS_CACHE, models, ignore=shutil.ignore_patterns("corpus.json"))
    fixed = next(m for m in CORPUS if m.name == "fixed-shape")
    only = [e for e in _entries(models) if e["name"] == fixed.name]
    project = _project(tmp_path / "project", only)
    assert _build(project).returncode == 0
    out = project / "build" / STACK / "model_repository"
    before = json.loads((out / "manifest.json").read_text())["digest"]
    model = onnx.load(str(models / fixed.file))
    model.graph.initializer[0].raw_data = bytes(len(model.graph.initializer[0].raw_data))  # other weights
    onnx.save(model, str(models / fixed.file))
    entries = stack_build(STACK, project).models
    with pytest.raises(ModelRepositoryError, match=r"fixed-shape\.onnx changed since the build"):
        load_local_repository(str(out), entries, STACK)
    assert _build(project).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["digest"] != before
    assert load_local_repository(str(out), entries, STACK).digest != before


def test_every_problem_of_every_model_is_refused_at_once_before_anything_is_built(corpus: Path, tmp_path: Path) -> None:
    entries = {e["name"]: e for e in _entries(corpus)}
    entries["text-encoder"] = {**entries["text-encoder"], "axes": {"tokens": {"min": 1, "opt": 2, "max": 4}}}
    entries["fixed-shape"] = {**entries["fixed-shape"], "batch": {"max": 8}}
    entries["sklearn-pipeline"] = {**entries["sklearn-pipeline"], "inputs": {"pixels": {"range": [0, 1]}}}
    project = _project(tmp_path / "project", list(entries.values()))
    result = _build(project)
    assert result.returncode == cli.EXIT_FAILED
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    for problem in (
        "models[text-encoder].axes.tokens names an axis the model does not have; its dynamic axes: sequence",
        "models[text-encoder].axes needs {min, opt, max} for the dynamic axes ['sequence']",
        "models[fixed-shape].batch is refused: the model has no batch dimension",
        "models[sklearn-pipeline].inputs names ['pixels'], which the model does not have",
    ):
        assert problem in line
    assert not (project / "build").exists()


def test_a_model_onnx_runtime_cannot_run_fails_the_build_naming_it(corpus: Path, tmp_path: Path) -> None:
    encoder = next(e for e in _entries(corpus) if e["name"] == "text-encoder")
    encoder["inputs"] = {"input_ids": {"range": [0, 5000]}}  # past the vocabulary of 1000
    project = _project(tmp_path / "project", [encoder])
    result = _build(project)
    assert result.returncode == cli.EXIT_FAILED
    assert "error: model 'text-encoder': ONNX Runtime cannot run it:" in result.stderr
    assert not (project / "build" / STACK / "model_repository").exists()


def test_an_s3_source_is_read_with_the_stacks_endpoint(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_pipeline.publish import S3Location, make_s3_client

    isolate_aws_credentials(monkeypatch, tmp_path)
    fixed = next(m for m in CORPUS if m.name == "fixed-shape")
    with moto_s3_server() as endpoint:
        client = make_s3_client(S3Location("team-models", "", endpoint_url=endpoint, region="us-east-1"))
        client.create_bucket(Bucket="team-models")
        client.upload_file(str(corpus / fixed.file), "team-models", "research/fixed-shape.onnx")
        entry = {**fixed.entry, "source": "s3://team-models/research/fixed-shape.onnx"}
        repository = {"uri": "s3://corpus-models/triton", "endpoint": endpoint}
        project = _project(tmp_path / "project", [entry], repository)
        command = [sys.executable, "-m", "model_pipeline", "build", "--stack", STACK, "--quiet"]
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        result = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=300, env=environment)
    assert result.returncode == 0, result.stderr[-2000:]
    built = _manifest(project / "build" / STACK / "model_repository")["fixed-shape"]
    assert built["source_sha256"] == file_sha256(corpus / fixed.file)
    assert built["entry"]["source"] == "s3://team-models/research/fixed-shape.onnx"


def test_a_torchscript_model_is_brought_with_its_samples(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Softmax(dim=1)))
    scripted.save(str(tmp_path / "scorer.pt"))
    np.savez(tmp_path / "scorer-samples.npz", input=np.random.default_rng(0).standard_normal((6, 5), np.float32))
    entry = {"name": "scorer", "source": str(tmp_path / "scorer.pt")}
    without = _build(_project(tmp_path / "bare", [entry]))
    assert "a TorchScript model needs samples" in without.stderr and "torch.export.save" in without.stderr
    project = _project(tmp_path / "project", [{**entry, "samples": str(tmp_path / "scorer-samples.npz")}])
    result = _build(project)
    assert result.returncode == 0, result.stderr[-2000:]
    scorer = _manifest(project / "build" / STACK / "model_repository")["scorer"]
    assert _tensors(scorer, "inputs") == [("input", "FP32", [5])] and scorer["profile"] == [1, 4, 8]
