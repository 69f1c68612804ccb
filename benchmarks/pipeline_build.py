"""Cold vs warm model-repository build, and first vs unchanged S3 upload, measured in one run.

    python benchmarks/pipeline_build.py [--models mnist,resnet50] [--mnist-data PATH_OR_URL]

Cold = empty step cache (training, export and golden checks run); warm = same inputs again (every step comes
from the cache; the repository is reassembled and re-verified). The upload goes to moto's S3 server on
127.0.0.1. Not a test: it prints what it measured, with the ratios.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_pipeline.build import BuildResult, BuildSettings, build_repository
from model_pipeline.publish import S3Location, UploadResult, make_s3_client, upload_repository
from model_pipeline.specs import parse_model_list


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
        models=tuple(parse_model_list(model)),
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
    return [
        f"{model:9s} cold build {cold_s:7.2f} s  (steps: {steps})",
        f"{model:9s} warm build {warm_s:7.2f} s  ({ran}; {same})  cold/warm = {cold_s / warm_s:.0f}x",
        f"{model:9s} warm CLI   {cli_s:7.2f} s  (fresh `python -m model_pipeline build`, imports included)",
    ]


def _timed_cli_build(settings: BuildSettings, mnist_data: str | None) -> float:
    models = ",".join(spec.name for spec in settings.models)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist,resnet50")
    parser.add_argument("--mnist-data", help="MNIST IDX directory or URL (default: the scikit-learn fallback)")
    args = parser.parse_args()
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as scratch:
        work = Path(scratch)
        models = [spec.name for spec in parse_model_list(args.models)]
        for model in models:
            lines += _bench_build(model, work, args.mnist_data)
        lines += _bench_upload(work / f"repo-{models[-1]}")
    print(f"\nmodel pipeline benchmark ({os.cpu_count()} CPUs, no GPU/TensorRT unless detected)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
