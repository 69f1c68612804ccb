"""Build the Triton model repository: source -> ONNX -> spec -> verification (golden) -> TensorRT -> config -> manifest.

Built-ins and brought models take the same steps; only the source differs (:mod:`model_pipeline.sources`).

Every expensive step is cached under ``cache_dir`` by the digest of everything that determines its output: the
spec, the source of the step's modules, the data fingerprint, the weights file hash and the tool versions.
A second build with nothing changed re-uses every step and only reassembles and re-verifies the repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

from model_pipeline.entry import ModelEntry
from model_pipeline.errors import PipelineError, SpecError
from model_pipeline.repository import (
    ModelArtifacts,
    TensorRTStatus,
    VerifiedRepository,
    collect_tool_versions,
    file_sha256,
    write_repository,
)
from model_pipeline.sources import BUILTIN_BY_ARCHITECTURE, S3Access
from model_pipeline.specs import ModelSpec

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("build/model_repository")
DEFAULT_CACHE_DIR = Path(".cache/model_pipeline")
CACHE_FORMAT = 1
_DONE = "done.json"
RANDOM_WEIGHTS_SEED = 0


@dataclass(frozen=True)
class TrainSettings:
    """MNIST training hyper-parameters (part of the train step's cache key)."""

    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0


@dataclass(frozen=True)
class BuildSettings:
    """Everything a build depends on besides the code: what to build, from what, and where to put it."""

    models: tuple[ModelEntry, ...]
    out: Path = DEFAULT_OUT
    root: Path = Path(".")  # the project: brought sources and samples are relative to it
    s3: S3Access | None = None  # how s3:// sources are read
    cache_dir: Path = DEFAULT_CACHE_DIR
    mnist_source: str | None = None
    allow_mnist_fallback: bool = True
    resnet50_weights: Path | None = None
    train: TrainSettings = TrainSettings()
    use_cache: bool = True
    progress: bool = False


@dataclass(frozen=True)
class StepRecord:
    """One step of one model: whether it ran or came from the cache, and how long it took."""

    model: str
    step: str
    cached: bool
    seconds: float
    key: str


@dataclass(frozen=True)
class ModelSummary:
    """A row of the build's summary table."""

    name: str
    platform: str
    profile: tuple[int, int, int] | None
    tensorrt_status: str
    tensorrt_reason: str
    accuracy: float | None
    weights: str
    files: int
    size_bytes: int


@dataclass
class BuildResult:
    """The verified repository, one summary per model and a record of every step."""

    repository: VerifiedRepository
    models: list[ModelSummary]
    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    repository_seconds: float = 0.0  # writing it: configs rendered and parsed, files hashed, all re-verified

    def ran(self, step: str) -> list[str]:
        """Models whose ``step`` actually ran (was not served from the cache)."""
        return [r.model for r in self.steps if r.step == step and not r.cached]


# ---------------------------------------------------------------------------------------------------------
# Step cache


def code_version(*modules: ModuleType) -> str:
    """SHA-256 of the modules' source files: editing a step's code invalidates its cached output."""
    digest = hashlib.sha256()
    for module in modules:
        source = Path(str(module.__file__))
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def tool_versions(*packages: str) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None when absent)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cache_key(inputs: Mapping[str, Any]) -> str:
    """Digest of a step's inputs, as canonical JSON."""
    canonical = json.dumps({"cache_format": CACHE_FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class StepCache:
    """Directories of step outputs keyed by input digest; an entry exists only once complete (written by rename)."""

    def __init__(self, root: Path, enabled: bool = True) -> None:
        self.root = root
        self.enabled = enabled
        self.records: list[StepRecord] = []

    def run(
        self, model: str, step: str, inputs: Mapping[str, Any], produce: Callable[[Path], dict[str, Any]]
    ) -> tuple[Path, dict[str, Any]]:
        """The output directory and metadata of ``step``; ``produce(directory)`` runs only on a cache miss."""
        key = cache_key({"step": step, **inputs})
        entry = self.root / step / key
        started = time.perf_counter()
        if self.enabled and (entry / _DONE).is_file():
            meta = json.loads((entry / _DONE).read_text())
            self.records.append(StepRecord(model, step, True, time.perf_counter() - started, key))
            return entry, meta
        entry.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=entry.parent))
        try:
            meta = produce(scratch)
            (scratch / _DONE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
            shutil.rmtree(entry, ignore_errors=True)
            scratch.rename(entry)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        self.records.append(StepRecord(model, step, False, time.perf_counter() - started, key))
        return entry, meta


# ---------------------------------------------------------------------------------------------------------
# Steps


@dataclass(frozen=True)
class _Weights:
    """Where a built-in model's weights come from, identified for cache keys."""

    identity: dict[str, Any]
    description: str
    accuracy: float | None
    state_path: Path | None  # a cached state_dict (trained MNIST); None: construct from ``identity``
    samples: dict[str, Any] | None = None  # real inputs for the verification and the golden file


@dataclass(frozen=True)
class _Source:
    """A model's ONNX file, and how to rebuild the PyTorch program it came from (None for an ONNX source)."""

    entry: ModelEntry
    onnx_path: Path
    identity: dict[str, Any]
    torch_module: Callable[[], Any] | None
    weights: _Weights | None = None
    source_sha256: str | None = None


class _Builder:
    """Runs the steps of one build and collects the artefacts for the repository."""

    def __init__(self, settings: BuildSettings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.cache = StepCache(settings.cache_dir, settings.use_cache)
        self.notes: list[str] = []
        self._mnist: Any = None
        self._tensorrt_reason: str | bool | None = False  # False: not asked yet
        self.tensorrt_version: str | None = None
        self.compute_capability: str | None = None

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.say(message)

    # -- built-in weights ---------------------------------------------------------------------------------

    def mnist_data(self) -> tuple[Any, str]:
        """MNIST (or the stated fallback) and its fingerprint: a digest of the arrays, not of the path."""
        if self._mnist is None:
            from model_pipeline.mnist_data import load_mnist

            data = load_mnist(self.settings.mnist_source, allow_fallback=self.settings.allow_mnist_fallback)
            if data.fallback_reason:
                self.note(f"mnist: MNIST not available ({data.fallback_reason}); trained on {data.source} instead")
            digest = hashlib.sha256()
            for array in (data.train_images, data.train_labels, data.test_images, data.test_labels):
                digest.update(str((array.dtype.str, array.shape)).encode())
                digest.update(array.tobytes())
            self._mnist = (data, digest.hexdigest())
        return self._mnist

    def trained_mnist(self, entry: ModelEntry) -> _Weights:
        from model_pipeline import mnist_data, models, train

        data, fingerprint = self.mnist_data()
        inputs = {
            "architecture": entry.builtin,
            "data": fingerprint,
            "settings": self.settings.train.__dict__,
            "code": code_version(train, models, mnist_data),
            "tools": tool_versions("torch", "numpy"),
        }

        def produce(directory: Path) -> dict[str, Any]:
            import torch

            model, report = train.train_mnist(
                data,
                epochs=self.settings.train.epochs,
                batch_size=self.settings.train.batch_size,
                learning_rate=self.settings.train.learning_rate,
                seed=self.settings.train.seed,
                progress=self.settings.progress,
            )
            torch.save(model.state_dict(), directory / "state_dict.pt")
            return {"accuracy": report.test_accuracy, "source": report.data_source, "samples": report.train_samples}

        entry_dir, meta = self.cache.run(entry.name, "train", inputs, produce)
        description = f"trained on {meta['source']} ({meta['samples']} images, {self.settings.train.epochs} epochs)"
        samples = {BUILTIN_BY_ARCHITECTURE[entry.builtin].input_name: data.test_images[:64]}
        identity = {"train": cache_key({"step": "train", **inputs})}
        return _Weights(identity, description, float(meta["accuracy"]), entry_dir / "state_dict.pt", samples)

    def resnet_weights(self, entry: ModelEntry) -> _Weights:
        weights = self.settings.resnet50_weights
        if weights is None:
            self.note(
                f"{entry.name}: no weights file given (--resnet50-weights); using RANDOM weights "
                f"(seed {RANDOM_WEIGHTS_SEED}): predictions are meaningless, fine for serving and load tests only"
            )
            return _Weights({"random_seed": RANDOM_WEIGHTS_SEED}, "random init (no weights file)", None, None)
        if not weights.is_file():
            from model_pipeline.errors import ModelWeightsError

            raise ModelWeightsError(f"ResNet-50 weights file {weights} does not exist")
        self.say(f"{entry.name}: loading weights from {weights}")
        return _Weights({"weights_sha256": file_sha256(weights)}, f"weights file {weights.name}", None, None)

    def builtin_module(self, architecture: str, weights: _Weights) -> Any:
        import torch

        from model_pipeline.models import create_model, load_resnet50_weights

        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = create_model(architecture)
        if weights.state_path is not None:
            model.load_state_dict(torch.load(weights.state_path, map_location="cpu", weights_only=True))
        elif "weights_sha256" in weights.identity and self.settings.resnet50_weights is not None:
            load_resnet50_weights(model, self.settings.resnet50_weights)
        return model.eval()

    # -- sources, up to ONNX ------------------------------------------------------------------------------

    def source(self, entry: ModelEntry) -> _Source:
        return self.builtin_source(entry) if entry.builtin else self.brought_source(entry)

    def builtin_source(self, entry: ModelEntry) -> _Source:
        from model_pipeline import models, onnx_export

        builtin = BUILTIN_BY_ARCHITECTURE[entry.builtin]
        weights = self.trained_mnist(entry) if builtin.architecture == "mnist_mlp" else self.resnet_weights(entry)
        batch = entry.batch()
        inputs = {
            "builtin": builtin.architecture,
            "max_batch": batch.max,
            "weights": weights.identity,
            "code": code_version(onnx_export, models),
            "tools": tool_versions("torch", "onnx", "onnxscript", "numpy"),
        }

        def module() -> Any:
            return self.builtin_module(builtin.architecture, weights)

        def produce(directory: Path) -> dict[str, Any]:
            import numpy as np

            self.say(f"{entry.name}: exporting ONNX")
            example = {builtin.input_name: np.zeros((max(2, batch.opt), *builtin.input_dims), dtype=np.float32)}
            onnx_export.export_module(module(), example, [builtin.output_name], batch.max, directory / "model.onnx")
            onnx_export.check_onnx(directory / "model.onnx", entry.name)
            return {}

        directory, _ = self.cache.run(entry.name, "export", inputs, produce)
        return _Source(entry, directory / "model.onnx", inputs, module, weights)

    def brought_source(self, entry: ModelEntry) -> _Source:
        from model_pipeline import onnx_export, sources

        local = sources.fetch(entry.source, self.settings.root, self.settings.cache_dir / "sources", self.settings.s3)
        digest = file_sha256(local)
        samples = self.settings.root / entry.samples if entry.samples else None
        inputs = {
            "source_sha256": digest,
            "samples_sha256": file_sha256(samples) if samples and local.suffix == ".pt" else None,
            "suffix": local.suffix,
            "code": code_version(onnx_export, sources),
            "tools": tool_versions("torch", "onnx", "onnxscript"),
        }

        def produce(directory: Path) -> dict[str, Any]:
            from model_pipeline.verification import load_samples

            self.say(f"{entry.name}: reading {entry.source}")
            sources.to_onnx(local, directory / "model.onnx", load_samples(samples) if samples else None)
            onnx_export.check_onnx(directory / "model.onnx", entry.name)
            return {}

        directory, _ = self.cache.run(entry.name, "export", inputs, produce)
        return _Source(entry, directory / "model.onnx", inputs, _torch_loader(local), source_sha256=digest)

    # -- verification and engine --------------------------------------------------------------------------

    def samples(self, entry: ModelEntry, source: _Source) -> tuple[dict[str, Any] | None, str | None]:
        from model_pipeline.verification import load_samples

        if entry.samples:
            path = self.settings.root / entry.samples
            return load_samples(path), file_sha256(path)
        return (source.weights.samples, None) if source.weights else (None, None)

    def verified(self, spec: ModelSpec, source: _Source) -> tuple[Path, dict[str, Any]]:
        """golden.npz: verification inputs and ONNX Runtime's outputs, checked against PyTorch where there is one."""
        from model_pipeline import verification

        samples, samples_sha256 = self.samples(source.entry, source)
        inputs = {
            "spec": spec.to_dict(),
            "onnx_sha256": file_sha256(source.onnx_path),
            "source": source.identity,
            "samples": samples_sha256 or (source.weights.identity if source.weights else None),
            "code": code_version(verification),
            "tools": tool_versions("torch", "onnxruntime", "numpy"),
        }

        def produce(directory: Path) -> dict[str, Any]:
            self.say(f"{spec.name}: verifying with ONNX Runtime")
            started = time.perf_counter()
            if samples is not None:
                verification.check_samples(spec, samples, source.entry.samples or "(built-in)")
            cases = verification.reference_cases(
                spec, source.onnx_path, verification.verification_inputs(spec, samples)
            )
            worst: dict[str, Any] = {}
            if source.torch_module is not None:
                run = verification.torch_runner(source.torch_module(), spec)
                diff = verification.check_against("PyTorch", cases, run, verification.ONNX_TOLERANCE, spec.name)
                worst = {name: d.to_dict() for name, d in diff.items()}
            verification.write_golden(spec.name, cases, directory / "golden.npz")
            return {"cases": [c.label for c in cases], "torch_vs_onnx": worst, "seconds": time.perf_counter() - started}

        directory, meta = self.cache.run(spec.name, "verify", inputs, produce)
        return directory / "golden.npz", meta

    def tensorrt_unavailable(self) -> str | None:
        if self._tensorrt_reason is False:
            from model_pipeline.tensorrt_build import tensorrt_unavailable_reason

            self._tensorrt_reason = tensorrt_unavailable_reason()
        return self._tensorrt_reason  # type: ignore[return-value]

    def engine(self, spec: ModelSpec, onnx_path: Path, golden: Path) -> tuple[TensorRTStatus, Path | None]:
        if spec.backend != "tensorrt":
            return TensorRTStatus("skipped", reason=f"backend '{spec.backend}' requested; no engine needed"), None
        reason = self.tensorrt_unavailable()
        if reason is not None:
            self.note(f"{spec.name}: TensorRT engine skipped ({reason}); serving model.onnx with ONNX Runtime")
            return TensorRTStatus("skipped", reason=reason), None
        from model_pipeline import tensorrt_build

        trt = tensorrt_build.import_tensorrt()
        gpu = tensorrt_build.detect_gpu()
        inputs = {
            "spec": spec.to_dict(),
            "onnx_sha256": file_sha256(onnx_path),
            "code": code_version(tensorrt_build),
            "tensorrt": str(trt.__version__),
            "gpu": [gpu.name, gpu.compute_capability],
        }

        def produce(directory: Path) -> dict[str, Any]:
            self.say(f"{spec.name}: building the TensorRT engine on {gpu.name}")
            result = tensorrt_build.build_tensorrt_engine(onnx_path, spec, directory / "model.plan", golden)
            return {"version": result.tensorrt_version, "compute_capability": result.compute_capability}

        entry, meta = self.cache.run(spec.name, "tensorrt", inputs, produce)
        self.tensorrt_version, self.compute_capability = meta["version"], meta["compute_capability"]
        status = TensorRTStatus("built", "", meta["version"], meta["compute_capability"])
        return status, entry / "model.plan"

    def specs(self, sources: list[_Source]) -> list[ModelSpec]:
        """Every model's spec, or one SpecError with every problem of every model: nothing is built before."""
        from model_pipeline.derive import derive_problems, derive_spec

        problems = [p for source in sources for p in derive_problems(source.entry, source.onnx_path)]
        if problems:
            raise SpecError("; ".join(problems))
        return [derive_spec(source.entry, source.onnx_path) for source in sources]

    def artifacts(self, spec: ModelSpec, source: _Source) -> ModelArtifacts:
        golden, _ = self.verified(spec, source)
        status, plan = self.engine(spec, source.onnx_path, golden)
        weights = source.weights
        return ModelArtifacts(
            spec,
            source.onnx_path,
            golden,
            status,
            plan,
            weights.accuracy if weights else None,
            weights.description if weights else f"brought: {source.entry.source}",
            source.entry.record(),
            source.source_sha256,
        )


def _torch_loader(path: Path) -> Callable[[], Any] | None:
    """How to load the PyTorch program a brought file holds, for the check against ONNX Runtime."""
    if path.suffix == ".pt2":
        from model_pipeline.onnx_export import load_program

        return lambda: load_program(path).module()
    if path.suffix == ".pt":

        def load_torchscript() -> Any:
            import torch

            return torch.jit.load(str(path), map_location="cpu").eval()

        return load_torchscript
    return None


def _summaries(repository: VerifiedRepository, artifacts: list[ModelArtifacts]) -> list[ModelSummary]:
    files = repository.manifest["files"]
    rows = []
    for item in artifacts:
        own = {rel: entry for rel, entry in files.items() if rel.startswith(f"{item.spec.name}/")}
        rows.append(
            ModelSummary(
                name=item.spec.name,
                platform=item.platform,
                profile=tuple(item.spec.batch.as_list()) if item.spec.batch else None,  # type: ignore[arg-type]
                tensorrt_status=item.tensorrt.status,
                tensorrt_reason=item.tensorrt.reason,
                accuracy=item.accuracy,
                weights=item.weights,
                files=len(own),
                size_bytes=sum(int(entry["size"]) for entry in own.values()),
            )
        )
    return rows


@contextmanager
def _timer() -> Iterator[Callable[[], float]]:
    started = time.perf_counter()
    yield lambda: time.perf_counter() - started


def build_repository(settings: BuildSettings, say: Callable[[str], None] | None = None) -> BuildResult:
    """Build every model of ``settings`` and write the verified repository to ``settings.out``."""
    if not settings.models:
        raise PipelineError("nothing to build: no models requested")
    report = say or logger.info
    with _timer() as elapsed:
        builder = _Builder(settings, report)
        sources = [builder.source(entry) for entry in settings.models]
        specs = builder.specs(sources)
        artifacts = [builder.artifacts(spec, source) for spec, source in zip(specs, sources, strict=True)]
        tools = collect_tool_versions(builder.tensorrt_version, builder.compute_capability)
        with _timer() as writing:
            repository = write_repository(settings.out, artifacts, tools)
        result = BuildResult(repository, _summaries(repository, artifacts), builder.cache.records, builder.notes)
        result.seconds, result.repository_seconds = elapsed(), writing()
    return result
