"""Cold vs warm model-repository build, and first vs unchanged S3 upload, measured in one run.

    python benchmarks/pipeline_build.py [--models mnist,resnet50] [--mnist-data PATH_OR_URL] [--no-corpus]

Cold = empty step cache (training, export and golden checks run); warm = same inputs again (every step comes
from the cache; the repository is reassembled and re-verified). The upload goes to moto's S3 server on
127.0.0.1. Each brought model of the corpus (tests/corpus) is built alone in a fresh process, cold then warm,
with its peak memory and the verification overhead: ORT reference outputs plus config parse, hashing and
re-verification, as a ratio of its export. Not a test: it prints what it measured, with the ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_pipeline.build import BuildResult, BuildSettings, build_repository
from model_pipeline.entry import ModelEntry
from model_pipeline.publish import S3Location, UploadResult, make_s3_client, upload_repository


def _timed_build(settings: BuildSettings) -> tuple[float, BuildResult]:
    started = time.perf_counter()
    result = build_repository(settings, say=lambda message: print(f"  {message}", file=sys.stderr))
    return time.perf_counter() - started, result


def _timed_upload(repo: Path, location: S3Location) -> tuple[float, UploadResult]:
    started = time.perf_counter()
    result = upload_repository(repo, location)
    return time.perf_counter() - started, result


def _bench_build(model: str, work: Path, mnist_data: str | None) -> list[str]:
    settings = BuildSettings(
        models=(ModelEntry(name=model),),
        out=work / f"repo-{model}",
        cache_dir=work / f"cache-{model}",
        mnist_source=mnist_data,
    )
    cold_s, cold = _timed_build(settings)
    warm_s, warm = _timed_build(settings)
    ran = ", ".join(f"{r.step} {'cached' if r.cached else 'ran'}" for r in warm.steps)
    same = "same digest" if warm.repository.digest == cold.repository.digest else "DIFFERENT digest"
    steps = ", ".join(f"{r.step} {r.seconds:.1f} s" for r in cold.steps)
    cli_s = _timed_cli_build(settings, mnist_data)
    seconds = {r.step: r.seconds for r in cold.steps}
    verification = seconds["verify"] + cold.repository_seconds  # ORT reference, then configs, hashing, re-checks
    return [
        f"{model:9s} cold build {cold_s:7.2f} s  (steps: {steps})",
        f"{model:9s} warm build {warm_s:7.2f} s  ({ran}; {same})  cold/warm = {cold_s / warm_s:.0f}x",
        f"{model:9s} warm CLI   {cli_s:7.2f} s  (fresh `python -m model_pipeline build`, imports included)",
        f"{model:9s} verification {verification:5.2f} s = {verification / seconds['export']:.2f}x the export",
    ]


def _timed_cli_build(settings: BuildSettings, mnist_data: str | None) -> float:
    models = ",".join(entry.name for entry in settings.models)
    argv = [sys.executable, "-m", "model_pipeline", "build", "--models", models, "--quiet"]
    argv += ["--out", str(settings.out), "--cache-dir", str(settings.cache_dir)]
    argv += ["--mnist-data", mnist_data] if mnist_data else []
    started = time.perf_counter()
    subprocess.run(argv, cwd=Path(__file__).resolve().parents[1], check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def _bench_upload(repo: Path) -> list[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        location = S3Location("bench-models", "repos", endpoint_url=f"http://{host}:{port}", region="us-east-1")
        make_s3_client(location).create_bucket(Bucket=location.bucket)
        first_s, first = _timed_upload(repo, location)
        again_s, again = _timed_upload(repo, location)
    finally:
        server.stop()
    return [
        f"upload    first      {first_s:7.2f} s  ({len(first.uploaded)} objects, {first.bytes_sent / 2**20:.1f} MiB)",
        f"upload    unchanged  {again_s:7.2f} s  ({again.bytes_sent} bytes sent, already published: "
        f"{again.already_published})  first/unchanged = {first_s / again_s:.0f}x",
    ]


# --- the brought-model corpus -----------------------------------------------------------------------------


def _build_one(entry: dict[str, object], work: Path) -> dict[str, float]:
    """Build one brought model here (run in a fresh process): its time, steps and this process's peak memory."""
    from model_pipeline.entry import read_models

    problems: list[str] = []
    entries = read_models([entry], problems, work)
    assert not problems, problems
    result = build_repository(BuildSettings(models=entries, out=work / "repo", cache_dir=work / "cache", root=work))
    steps = {r.step: r.seconds for r in result.steps}
    return {
        "seconds": result.seconds,
        "export": steps.get("export", 0.0),
        "verify": steps.get("verify", 0.0),
        "assemble": result.repository_seconds,  # config render + parse, hashing, re-verification
        "cached": float(all(r.cached for r in result.steps)),
        "peak_mib": _peak_rss_mib(),
    }


def _peak_rss_mib() -> float:
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec from the benchmark's own process.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_one(entry: dict[str, object], work: Path) -> dict[str, float]:
    argv = [sys.executable, __file__, "--one", json.dumps(entry), "--work", str(work)]
    result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _bench_corpus(work: Path) -> list[str]:
    from tests.corpus.models import CORPUS, build_corpus

    folder = work / "corpus"
    build_corpus(folder)
    lines = [
        f"{'corpus model':17s} {'cold s':>7s} {'warm s':>7s} {'peak MiB':>9s} {'export s':>9s} "
        f"{'verification s':>15s} {'verification/export':>20s}"
    ]
    for model in CORPUS:
        entry = {**model.entry, "source": model.file}
        if model.samples_file:
            entry["samples"] = model.samples_file
        cold, warm = _run_one(entry, folder), _run_one(entry, folder)
        shutil.rmtree(folder / "cache")
        overhead = cold["verify"] + cold["assemble"]
        # An .onnx is not exported (copied and checked only): the ratio means something for PyTorch sources.
        ratio = f"{overhead / cold['export']:19.2f}x" if not model.file.endswith(".onnx") else f"{'(no export)':>20s}"
        lines.append(
            f"{model.name:17s} {cold['seconds']:7.2f} {warm['seconds']:7.2f} {cold['peak_mib']:9.0f} "
            f"{cold['export']:9.2f} {overhead:15.2f} {ratio}" + ("" if warm["cached"] else "  (warm ran a step!)")
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,resnet50")
    parser.add_argument("--mnist-data", help="MNIST IDX directory or URL (default: the scikit-learn fallback)")
    parser.add_argument("--no-corpus", action="store_true", help="skip the brought-model corpus")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: build one entry in this fresh process
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_build_one(json.loads(args.one), args.work)))
        return
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as scratch:
        work = Path(scratch)
        models = [name.strip() for name in args.models.split(",") if name.strip()]
        for model in models:
            lines += _bench_build(model, work, args.mnist_data)
        lines += _bench_upload(work / f"repo-{models[-1]}")
        if not args.no_corpus:
            lines += _bench_corpus(work)
    print(f"\nmodel pipeline benchmark ({os.cpu_count()} CPUs, no GPU/TensorRT unless detected)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
