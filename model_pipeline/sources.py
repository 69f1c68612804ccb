"""Where a model comes from, up to its ONNX file: the two built-ins, or a file the team brings.

- Built-ins: the MNIST MLP the pipeline trains and the ResNet-50 it defines (:mod:`model_pipeline.models`).
- ``.onnx``: used as it is.
- ``.pt2``: a ``torch.export`` ExportedProgram (``torch.export.save``), exported to ONNX with its own dynamic
  shapes; the program's PyTorch outputs are then the reference ONNX Runtime is checked against.
- ``.pt``: TorchScript, exported by torch's (deprecated) TorchScript exporter; it needs the entry's ``samples``,
  since a TorchScript file does not say what its inputs look like.
- ``s3://bucket/key``: any of the above, read with the stack's endpoint and the ambient AWS credentials.

torch is imported only where PyTorch runs, so the program (and the engine Job) import this module freely.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_pipeline.errors import SpecError
from model_pipeline.specs import Bounds

SOURCE_SUFFIXES = (".onnx", ".pt2", ".pt")


@dataclass(frozen=True)
class Builtin:
    """A model the pipeline defines itself: what its PyTorch module takes, and the defaults its entry gets."""

    architecture: str
    input_name: str
    input_dims: tuple[int, ...]
    output_name: str
    batch: Bounds
    max_queue_delay_us: int
    warmup: bool  # the first ResNet request would otherwise pay for cuDNN/TensorRT autotuning


BUILTINS: dict[str, Builtin] = {
    "mnist": Builtin("mnist_mlp", "input", (1, 28, 28), "logits", Bounds(1, 4, 8), 100, False),
    "resnet50": Builtin("resnet50", "input", (3, 224, 224), "logits", Bounds(1, 8, 16), 500, True),
}
BUILTIN_BY_ARCHITECTURE = {b.architecture: b for b in BUILTINS.values()}


def is_s3_uri(source: str) -> bool:
    return source.startswith("s3://")


@dataclass(frozen=True)
class S3Access:
    """How the stack reaches S3: the endpoint (None for AWS) and region; credentials come from the environment."""

    endpoint_url: str | None = None
    region: str | None = None


def fetch(source: str, root: Path, folder: Path, s3: S3Access | None = None) -> Path:
    """The local file of ``source``: a project file as it is, an S3 object downloaded into ``folder``."""
    if not is_s3_uri(source):
        path = root / source
        if not path.is_file():
            raise SpecError(f"source {source!r} does not exist (looked for {path})")
        return path
    from model_pipeline.publish import S3Location, describe_s3_error, make_s3_client

    bucket, key = source[len("s3://") :].split("/", 1)
    location = S3Location(bucket, "", endpoint_url=s3.endpoint_url if s3 else None, region=s3.region if s3 else None)
    target = folder / Path(key).name
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        make_s3_client(location).download_file(bucket, key, str(partial))
    except Exception as exc:  # botocore's ClientError, boto3's transfer errors
        partial.unlink(missing_ok=True)
        raise describe_s3_error(exc, location, f"download {source}") from exc
    partial.replace(target)
    return target


def to_onnx(path: Path, target: Path, samples: dict[str, Any] | None = None) -> Any:
    """Write ``path`` as ONNX at ``target``; returns the PyTorch program to check ONNX Runtime against, if any."""
    suffix = path.suffix
    if suffix == ".onnx":
        shutil.copyfile(path, target)
        return None
    if suffix == ".pt2":
        from model_pipeline.onnx_export import export_program, load_program

        program = load_program(path)
        export_program(program, target)
        return program.module()
    if suffix == ".pt":
        if samples is None:
            raise SpecError(
                f"{path.name}: a TorchScript model needs samples (real inputs, one array per forward argument), "
                "since its file does not say what its inputs look like; or save it as a torch.export program: "
                "torch.export.save(torch.export.export(model, example_inputs, dynamic_shapes=...), 'model.pt2')"
            )
        from model_pipeline.onnx_export import export_torchscript

        return export_torchscript(path, samples, target)
    raise SpecError(f"{path.name}: not a model file; allowed: {', '.join(SOURCE_SUFFIXES)}")
