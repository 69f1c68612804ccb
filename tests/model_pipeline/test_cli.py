"""The CLI: one clear `error:` line and exit code 1 for bad input, never a traceback; a summary on success."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from model_pipeline.cli import format_table, main
from model_pipeline.repository import verify_repository
from tests._pipeline_helpers import (
    free_port,
    rehash,
    tiny_onnx,
    tiny_repository,
    tiny_spec,
)
from tests.paths import ROOT

pytestmark = pytest.mark.usefixtures("isolated_aws")


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    out = io.StringIO()
    code = main(argv, out=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_verify_reports_the_digest_of_a_good_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tiny_repository(tmp_path)
    code, out, err = _run(["verify", str(repo)], capsys)
    digest = (repo / "manifest.json").read_text().split('"digest": "')[1][:64]
    assert code == 0, err
    assert f"digest {digest}" in out
    assert "golden outputs reproduced" in out


def test_corrupt_onnx_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tiny_repository(tmp_path)
    (repo / "tiny/1/model.onnx").write_bytes(b"\x08\x07 this is not protobuf \xff\xff")
    rehash(repo, "tiny/1/model.onnx")
    code, _, err = _run(["verify", str(repo)], capsys)
    assert code == 1
    assert err.startswith("error: ") and "not a readable ONNX model" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_config_model_mismatch_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tiny_repository(tmp_path)
    tiny_onnx(repo / "tiny/1/model.onnx", tiny_spec(), input_name="x", input_dims=(16,))
    rehash(repo, "tiny/1/model.onnx")
    code, _, err = _run(["verify", str(repo)], capsys)
    assert code == 1
    assert err == "error: tiny: config.pbtxt input 'input' is FP32 [1,4,4] but model.onnx has 'x' FP32 [16]\n"


def test_verify_of_a_plain_directory_says_it_is_not_a_repository(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(["verify", str(tmp_path)], capsys)
    assert code == 1
    assert "no manifest.json; not a built model repository" in err


def test_unknown_model_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["build", "--models", "mnist,bert"], capsys)
    assert code == 1
    assert err == (
        "error: --models[bert].source (None) is required for model 'bert': it is not a built-in (mnist, resnet50)\n"
    )


def _stack(project: Path, models: list[dict[str, Any]]) -> None:
    """A Pulumi project in ``project`` whose stack 'test' serves ``models`` and builds into out/."""
    (project / "Pulumi.yaml").write_text("name: proj\nruntime: python\n")
    config = {"proj:models": models, "proj:modelRepository": {"buildDir": "out"}}
    (project / "Pulumi.test.yaml").write_text(yaml.safe_dump({"config": config}))


def test_build_stack_reports_every_problem_of_its_entries_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stack(tmp_path, [{"name": "bert"}, {"name": "mnist", "precison": "fp32"}])
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["build", "--stack", "test", "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 1
    assert err == (
        "error: stack 'test': models[bert].source (None) is required for model 'bert': it is not a built-in "
        "(mnist, resnet50); models[mnist].precison is not a known key; did you mean 'precision'?\n"
    )
    assert not (tmp_path / "out").exists()


def test_build_of_a_stack_without_its_file_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _stack(tmp_path, [{"name": "mnist"}])
    monkeypatch.chdir(tmp_path)
    code, _, err = _run(["build", "--stack", "prod"], capsys)
    assert code == 1
    assert err == "error: stack 'prod': Pulumi.prod.yaml does not exist\n"


def test_build_stack_builds_brought_onnx_models_into_its_build_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_onnx(tmp_path / "models/tiny.onnx", tiny_spec())
    tiny_onnx(tmp_path / "models/fixed.onnx", tiny_spec("fixed"), batch_dim=1)  # input [1,1,4,4]: no batch dim
    models: list[dict[str, Any]] = [
        {"name": "tiny", "source": "models/tiny.onnx", "batch": {"max": 4}},
        {"name": "fixed", "source": "models/fixed.onnx"},
    ]
    _stack(tmp_path, models)
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(["build", "--stack", "test", "--cache-dir", str(tmp_path / "cache"), "--quiet"], capsys)
    assert code == 0, err
    rows = [[cell.strip() for cell in line.split("  ") if cell.strip()][:4] for line in out.splitlines()[2:4]]
    assert rows == [
        ["tiny", "onnxruntime_onnx", "1/4/4", "skipped [1]"],
        ["fixed", "onnxruntime_onnx", "no batch dim", "skipped [2]"],
    ]
    assert f"repository {tmp_path / 'out'}  digest " in out
    assert verify_repository(tmp_path / "out").models == ["fixed", "tiny"]


def test_missing_resnet_weights_file_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["build", "--models", "resnet50", "--resnet50-weights", str(tmp_path / "absent.pth")]
    code, _, err = _run([*argv, "--out", str(tmp_path / "repo"), "--cache-dir", str(tmp_path / "cache")], capsys)
    assert code == 1
    assert "absent.pth does not exist" in err
    assert not (tmp_path / "repo").exists()


def test_unreachable_s3_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tiny_repository(tmp_path)
    endpoint = f"http://127.0.0.1:{free_port()}"
    code, _, err = _run(["upload", str(repo), "--bucket", "models", "--endpoint-url", endpoint, "--quiet"], capsys)
    assert code == 1
    assert err.startswith(f"error: cannot reach the S3 endpoint {endpoint}")
    assert "Traceback" not in err


def test_upload_prints_the_triton_uri_then_already_published(
    tmp_path: Path, s3_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="cli-models")
    repo = tiny_repository(tmp_path)
    argv = ["upload", str(repo), "--bucket", "cli-models", "--prefix", "prod", "--endpoint-url", s3_endpoint]
    code, out, err = _run([*argv, "--quiet"], capsys)
    digest = (repo / "manifest.json").read_text().split('"digest": "')[1][:64]
    assert code == 0, err
    assert f"published s3://cli-models/prod/{digest}: 4 files sent" in out
    assert f"--model-repository=s3://127.0.0.1:{s3_endpoint.rsplit(':', 1)[1]}/cli-models/prod/{digest}" in out
    code, out, _ = _run([*argv, "--quiet"], capsys)
    assert code == 0
    assert out.startswith(f"already published: s3://cli-models/prod/{digest} (nothing sent)")


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_module_entry_point_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "model_pipeline", "verify", str(tmp_path / "nowhere")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {tmp_path / 'nowhere'}: not a directory"


def test_summary_table_pads_columns() -> None:
    table = format_table(["model", "size"], [["mnist", "1 B"], ["resnet50", "97.5 MiB"]])
    assert table.splitlines() == [
        "model     size",
        "--------  --------",
        "mnist     1 B",
        "resnet50  97.5 MiB",
    ]
