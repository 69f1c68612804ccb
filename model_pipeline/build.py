"""Build the Triton model repository: data -> train/construct -> ONNX (+ golden) -> TensorRT -> config -> manifest.

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

from model_pipeline.errors import PipelineError
from model_pipeline.repository import (
    ModelArtifacts,
    TensorRTStatus,
    VerifiedRepository,
    collect_tool_versions,
    file_sha256,
    write_repository,
)
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

    models: tuple[ModelSpec, ...]
    out: Path = DEFAULT_OUT
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
    profile: tuple[int, int, int]
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
    """Where a model's weights come from, identified for cache keys."""

    identity: dict[str, Any]
    description: str
    accuracy: float | None
    state_path: Path | None  # a cached state_dict (trained MNIST); None: construct from ``identity``
    samples: dict[str, Any] | None = None  # real inputs for the export checks and the golden file


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

    # -- data and weights ---------------------------------------------------------------------------------

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

    def trained_mnist(self, spec: ModelSpec) -> _Weights:
        from model_pipeline import mnist_data, models, train

        data, fingerprint = self.mnist_data()
        inputs = {
            "architecture": spec.architecture,
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

        entry, meta = self.cache.run(spec.name, "train", inputs, produce)
        description = f"trained on {meta['source']} ({meta['samples']} images, {self.settings.train.epochs} epochs)"
        samples = {spec.inputs[0].name: data.test_images[:64]}
        identity = {"train": cache_key({"step": "train", **inputs})}
        return _Weights(identity, description, float(meta["accuracy"]), entry / "state_dict.pt", samples)

    def resnet_weights(self, spec: ModelSpec) -> _Weights:
        weights = self.settings.resnet50_weights
        if weights is None:
            self.note(
                f"{spec.name}: no weights file given (--resnet50-weights); using RANDOM weights "
                f"(seed {RANDOM_WEIGHTS_SEED}): predictions are meaningless, fine for serving and load tests only"
            )
            return _Weights({"random_seed": RANDOM_WEIGHTS_SEED}, "random init (no weights file)", None, None)
        if not weights.is_file():
            from model_pipeline.errors import ModelWeightsError

            raise ModelWeightsError(f"ResNet-50 weights file {weights} does not exist")
        self.say(f"{spec.name}: loading weights from {weights}")
        return _Weights({"weights_sha256": file_sha256(weights)}, f"weights file {weights.name}", None, None)

    def model_for(self, spec: ModelSpec, weights: _Weights) -> Any:
        import torch

        from model_pipeline.models import create_model, load_resnet50_weights

        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = create_model(spec.architecture)
        if weights.state_path is not None:
            model.load_state_dict(torch.load(weights.state_path, map_location="cpu", weights_only=True))
        elif "weights_sha256" in weights.identity and self.settings.resnet50_weights is not None:
            load_resnet50_weights(model, self.settings.resnet50_weights)
        return model.eval()

    # -- export and engine --------------------------------------------------------------------------------

    def exported(self, spec: ModelSpec, weights: _Weights) -> tuple[Path, Path]:
        from model_pipeline import models, onnx_export

        inputs = {
            "spec": spec.to_dict(),
            "weights": weights.identity,
            "code": code_version(onnx_export, models),
            "tools": tool_versions("torch", "onnx", "onnxruntime", "onnxscript", "numpy"),
        }

        def produce(directory: Path) -> dict[str, Any]:
            self.say(f"{spec.name}: exporting ONNX and checking it against PyTorch")
            result = onnx_export.export_onnx(
                self.model_for(spec, weights),
                spec,
                directory / "model.onnx",
                directory / "golden.npz",
                samples=weights.samples,
            )
            return {"opset": result.opset, "max_abs_diff": result.max_abs_diff, "seconds": result.export_seconds}

        entry, _ = self.cache.run(spec.name, "export", inputs, produce)
        return entry / "model.onnx", entry / "golden.npz"

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

    def artifacts(self, spec: ModelSpec) -> ModelArtifacts:
        weights = self.trained_mnist(spec) if spec.architecture == "mnist_mlp" else self.resnet_weights(spec)
        onnx_path, golden = self.exported(spec, weights)
        status, plan = self.engine(spec, onnx_path, golden)
        return ModelArtifacts(spec, onnx_path, golden, status, plan, weights.accuracy, weights.description)


def _summaries(repository: VerifiedRepository, artifacts: list[ModelArtifacts]) -> list[ModelSummary]:
    files = repository.manifest["files"]
    rows = []
    for item in artifacts:
        own = {rel: entry for rel, entry in files.items() if rel.startswith(f"{item.spec.name}/")}
        rows.append(
            ModelSummary(
                name=item.spec.name,
                platform=item.platform,
                profile=(item.spec.profile.min, item.spec.profile.opt, item.spec.profile.max),
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
        artifacts = [builder.artifacts(spec) for spec in settings.models]
        tools = collect_tool_versions(builder.tensorrt_version, builder.compute_capability)
        repository = write_repository(settings.out, artifacts, tools)
        result = BuildResult(repository, _summaries(repository, artifacts), builder.cache.records, builder.notes)
        result.seconds = elapsed()
    return result
