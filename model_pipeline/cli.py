"""``python -m model_pipeline build|verify|upload|build-engine``: build, check and publish the Triton repository.

Bad input (an unknown model, a corrupt ONNX file, a config that does not match its model, an unreachable S3
endpoint) ends with one ``error: ...`` line and exit code 1, never a traceback; usage errors exit with 2.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from model_pipeline.errors import PipelineError

if TYPE_CHECKING:
    from model_pipeline.engine_job import EngineJobRequest

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REJECTED = 3  # build-engine: the engine failed its build or golden check; retrying cannot help
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_pipeline",
        description="Build, verify and publish the Triton model repository of a stack's models.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{build,verify,upload,build-engine}")

    build = commands.add_parser("build", help="train/export the models and write a verified repository")
    which = build.add_mutually_exclusive_group()
    which.add_argument("--stack", help="build the models of Pulumi.STACK.yaml, with their settings, into its buildDir")
    which.add_argument("--models", help="comma-separated built-in models (default: mnist,resnet50)")
    build.add_argument("--out", type=Path, help="default: the stack's buildDir, else build/model_repository")
    build.add_argument("--mnist-data", metavar="PATH_OR_URL", help="directory of MNIST IDX files, or a base URL")
    build.add_argument(
        "--no-mnist-fallback",
        action="store_true",
        help="fail instead of training on scikit-learn's digits when MNIST is not available",
    )
    build.add_argument("--resnet50-weights", type=Path, metavar="FILE", help="torchvision ResNet-50 state_dict .pth")
    build.add_argument("--epochs", type=int, default=3, help="MNIST training epochs (default: %(default)s)")
    build.add_argument("--cache-dir", type=Path, default=Path(".cache/model_pipeline"), help="default: %(default)s")
    build.add_argument("--no-cache", action="store_true", help="run every step, ignoring cached results")
    build.add_argument("--quiet", action="store_true", help="no progress bars")

    verify = commands.add_parser("verify", help="re-hash a repository and re-check every config against its model")
    verify.add_argument("path", type=Path)
    verify.add_argument(
        "--no-replay", action="store_true", help="skip re-running the golden inputs through ONNX Runtime"
    )

    upload = commands.add_parser("upload", help="publish a verified repository to s3://BUCKET/PREFIX/<digest>/")
    upload.add_argument("path", type=Path)
    upload.add_argument("--bucket", required=True)
    upload.add_argument("--prefix", default="model-repository", help="key prefix (default: %(default)s)")
    upload.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://minio:9000 (path-style)")
    upload.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    upload.add_argument("--quiet", action="store_true", help="no progress bar")

    engine = commands.add_parser(
        "build-engine", help="build one model's TensorRT engine inside a published repository (GPU + TensorRT)"
    )
    engine.add_argument("--repository", required=True, help="s3://BUCKET/PREFIX/DIGEST, the published repository")
    engine.add_argument("--model", required=True)
    engine.add_argument("--precision", choices=("fp16", "fp32"), default="fp16")
    engine.add_argument(
        "--profile", metavar="MIN,OPT,MAX", help="batch sizes (default 1,4,8; leave out for a model without batch dim)"
    )
    engine.add_argument(
        "--axis",
        action="append",
        default=[],
        metavar="NAME=MIN,OPT,MAX",
        help="sizes of a dynamic axis by its ONNX dim name, e.g. sequence=1,128,512; once per axis",
    )
    engine.add_argument(
        "--tolerance",
        metavar="ATOL,RTOL",
        help="how closely the engine must match ONNX Runtime (default: by precision)",
    )
    engine.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://minio:9000 (path-style)")
    engine.add_argument("--region", help="AWS region (default: from the AWS configuration)")
    engine.add_argument("--work-dir", type=Path, default=Path("/tmp/engine-build"), help="default: %(default)s")
    return parser


def _size(num_bytes: int) -> str:
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num_bytes} B"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with columns padded to their widest cell."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _build(args: argparse.Namespace, out: TextIO) -> int:
    from model_pipeline.build import DEFAULT_OUT, BuildSettings, TrainSettings, build_repository
    from model_pipeline.stack import stack_build

    if args.stack:
        stack = stack_build(args.stack)
        models, target, root, s3 = stack.models, args.out or stack.out, stack.root, stack.s3
    else:
        models, target, root, s3 = (
            _builtin_entries(args.models or "mnist,resnet50"),
            args.out or DEFAULT_OUT,
            Path("."),
            None,
        )
    settings = BuildSettings(
        models=models,
        out=target,
        root=root,
        s3=s3,
        cache_dir=args.cache_dir,
        mnist_source=args.mnist_data,
        allow_mnist_fallback=not args.no_mnist_fallback,
        resnet50_weights=args.resnet50_weights,
        train=TrainSettings(epochs=args.epochs),
        use_cache=not args.no_cache,
        progress=not args.quiet,
    )
    result = build_repository(settings, say=lambda message: print(message, file=sys.stderr))
    rows: list[list[str]] = []
    reasons: list[str] = []
    for model in result.models:
        tensorrt = model.tensorrt_status
        if model.tensorrt_reason:
            reasons.append(f"[{len(reasons) + 1}] {model.name}: {model.tensorrt_reason}")
            tensorrt += f" [{len(reasons)}]"
        accuracy = "-" if model.accuracy is None else f"{model.accuracy:.2%}"
        rows.append(
            [
                model.name,
                model.platform,
                "/".join(map(str, model.profile)) if model.profile else "no batch dim",
                tensorrt,
                accuracy,
                str(model.files),
                _size(model.size_bytes),
            ]
        )
    headers = ["model", "platform", "batch min/opt/max", "TensorRT", "accuracy", "files", "size"]
    print(format_table(headers, rows), file=out)
    for line in reasons:
        print(line, file=out)
    cached = sum(1 for step in result.steps if step.cached)
    print(
        f"repository {result.repository.path}  digest {result.repository.digest}\n"
        f"{len(result.steps)} steps, {cached} from cache, {result.seconds:.1f} s",
        file=out,
    )
    return EXIT_OK


def _builtin_entries(text: str) -> tuple[Any, ...]:
    """Entries for a comma-separated list of built-in model names such as ``"mnist,resnet50"``."""
    from model_pipeline.entry import read_models

    problems: list[str] = []
    entries = read_models(
        [{"name": n.strip()} for n in text.split(",") if n.strip()] or None, problems, Path("."), "--models"
    )
    if problems:
        raise PipelineError("; ".join(problems))
    return entries


def _verify(args: argparse.Namespace, out: TextIO) -> int:
    from model_pipeline.repository import verify_repository

    verified = verify_repository(args.path, replay_golden=not args.no_replay)
    replay = "" if args.no_replay else ", golden outputs reproduced"
    print(
        f"OK {verified.path}: digest {verified.digest}, {verified.files_checked} files match the manifest, "
        f"configs match their models ({', '.join(verified.models)}){replay}",
        file=out,
    )
    return EXIT_OK


def _upload(args: argparse.Namespace, out: TextIO) -> int:
    from model_pipeline.publish import S3Location, upload_repository

    location = S3Location(args.bucket, args.prefix, endpoint_url=args.endpoint_url, region=args.region)
    result = upload_repository(args.path, location, progress=not args.quiet)
    if result.already_published:
        print(f"already published: {result.uri} (nothing sent)", file=out)
    else:
        print(
            f"published {result.uri}: {len(result.uploaded)} files sent ({_size(result.bytes_sent)}), "
            f"{len(result.skipped)} already there",
            file=out,
        )
    print(f"triton --model-repository={result.triton_uri}", file=out)
    return EXIT_OK


def _bounds(flag: str, text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        raise PipelineError(f"{flag} '{text}' must be three sizes MIN,OPT,MAX such as 1,8,16")
    low, opt, high = (int(p) for p in parts)
    if not 1 <= low <= opt <= high:
        raise PipelineError(f"{flag} '{text}' must satisfy 1 <= MIN <= OPT <= MAX")
    return low, opt, high


def _profile(text: str | None) -> tuple[int, int, int] | None:
    return None if text is None else _bounds("--profile", text)


def _axes(texts: Sequence[str]) -> tuple[tuple[str, tuple[int, int, int]], ...]:
    axes: dict[str, tuple[int, int, int]] = {}
    for text in texts:
        name, equals, sizes = (part.strip() for part in text.partition("="))
        if not equals or not name:
            raise PipelineError(f"--axis '{text}' must be NAME=MIN,OPT,MAX such as sequence=1,128,512")
        if name in axes:
            raise PipelineError(f"--axis '{name}' is given more than once")
        axes[name] = _bounds(f"--axis {name}", sizes)
    return tuple(axes.items())


def _tolerance(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 2 or not all(0 <= value < math.inf for value in values):
        raise PipelineError(f"--tolerance '{text}' must be two numbers ATOL,RTOL >= 0 such as 0.05,0.05")
    return values[0], values[1]


def _engine_request(args: argparse.Namespace) -> EngineJobRequest:
    from model_pipeline.engine_job import EngineJobRequest

    return EngineJobRequest(
        repository=args.repository,
        model=args.model,
        precision=args.precision,
        batch=_profile(args.profile),
        axes=_axes(args.axis),
        tolerance=_tolerance(args.tolerance),
        endpoint_url=args.endpoint_url,
        region=args.region,
    )


def _describe_built(model: str, record: dict[str, Any]) -> str:
    bounds = [f"batch {record['profile']}" if record["profile"] else "no batch dim"]
    bounds += [f"{name} {sizes}" for name, sizes in record["axes"].items()]
    diffs = ", ".join(
        f"{name} max abs {d['max_abs']:.3g} rel {d['max_rel']:.3g}" for name, d in record["differences"].items()
    )
    return (
        f"built {model}: TensorRT {record['tensorrt_version']} on {record['gpu']} "
        f"({record['precision']}, {', '.join(bounds)}), golden differences: {diffs}"
    )


def _build_engine(args: argparse.Namespace, out: TextIO) -> int:
    from model_pipeline.engine_job import build_engine_job
    from model_pipeline.errors import EngineBuildError, EngineCompatibilityError, ModelValidationError

    request = _engine_request(args)
    try:
        result = build_engine_job(request, args.work_dir)
    except (EngineBuildError, EngineCompatibilityError, ModelValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    record = result.record
    if result.already_built:
        print(
            f"already built: {args.model} for TensorRT {record.get('tensorrt_version')} on "
            f"sm{str(record.get('compute_capability', '')).replace('.', '')} (nothing sent)",
            file=out,
        )
        return EXIT_OK
    print(_describe_built(args.model, record), file=out)
    for key in result.keys_written:
        print(f"uploaded s3://{args.repository.removeprefix('s3://').split('/', 1)[0]}/{key}", file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = _parser().parse_args(argv)
    stream = out or sys.stdout
    logging.getLogger("model_pipeline").addHandler(logging.NullHandler())  # the build reports through `say`
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.onnx's deprecation chatter
    commands = {"build": _build, "verify": _verify, "upload": _upload, "build-engine": _build_engine}
    try:
        return commands[args.command](args, stream)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # unreadable paths, full disks: the message names the file
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
