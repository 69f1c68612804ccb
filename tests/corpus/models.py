"""A "bring your own model" corpus: model files that no one in this project wrote, as a user would bring them.

Each model comes from a package's own model definition (transformers, scikit-learn, torch.nn), randomly
initialised with a fixed seed or fitted on data bundled in the package: nothing is downloaded at run time. Every
file is checked as it is written: ONNX files run in ONNX Runtime (CPU) against the framework's own outputs, the
``.pt2`` loads back with ``torch.export.load`` and matches the eager model.

``build_corpus(folder)`` writes the files and caches them: ``corpus.json`` in the folder records a key (the
versions of the packages that build the files plus this module's source) and each file's SHA-256; a file whose
key and hash match is not rebuilt. ``python -m tests.corpus.models DIR`` builds into DIR and prints a line per model.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "corpus.json"
PACKAGES = ("numpy", "torch", "onnx", "onnxscript", "onnxruntime", "transformers", "scikit-learn", "skl2onnx")
ATOL, RTOL = 1e-4, 1e-3  # ONNX Runtime FP32 against the framework's FP32 (as numpy.allclose)


@dataclass(frozen=True)
class CorpusModel:
    """One model file of the corpus and the stack ``models`` entry that brings it (without ``source``)."""

    name: str  # lower-case model name, [a-z0-9_-]
    file: str  # file name inside the corpus folder
    entry: dict[str, Any] = field(hash=False)
    samples_file: str | None = None  # .npz of real inputs, one array per input name
    what: str = ""  # one line: what the model is, from which package


CORPUS: tuple[CorpusModel, ...] = (
    CorpusModel(
        name="image-classifier",
        file="image-classifier.onnx",
        entry={"name": "image-classifier", "backend": "tensorrt", "batch": {"min": 1, "opt": 4, "max": 16}},
        what="transformers ResNetForImageClassification (tiny config, random init), FP32 pixel_values [batch,3,64,64]",
    ),
    CorpusModel(
        name="text-encoder",
        file="text-encoder.onnx",
        entry={
            "name": "text-encoder",
            "backend": "tensorrt",
            "batch": {"min": 1, "opt": 8, "max": 32},
            "axes": {"sequence": {"min": 8, "opt": 128, "max": 512}},
            "inputs": {"input_ids": {"range": [0, 999]}, "attention_mask": {"range": [0, 1]}},
        },
        what="transformers BertModel (2 layers, hidden 64, vocab 1000, random init), INT64 [batch, sequence] inputs",
    ),
    CorpusModel(
        name="sklearn-pipeline",
        file="sklearn-pipeline.onnx",
        entry={"name": "sklearn-pipeline", "backend": "onnxruntime"},
        samples_file="sklearn-pipeline-samples.npz",
        what="scikit-learn StandardScaler + LogisticRegression fitted on iris, converted by skl2onnx (ai.onnx.ml ops)",
    ),
    CorpusModel(
        name="fixed-shape",
        file="fixed-shape.onnx",
        entry={"name": "fixed-shape", "backend": "onnxruntime"},
        what="torch.nn Linear-ReLU-Linear, static shapes: input FP32 [4,16] -> output FP32 [4,8], no batch axis",
    ),
    CorpusModel(
        name="two-heads",
        file="two-heads.pt2",
        entry={
            "name": "two-heads",
            "backend": "tensorrt",
            "batch": {"min": 1, "opt": 4, "max": 16},
            "inputs": {"tokens": {"range": [0, 99]}},
        },
        what="torch.nn Embedding + Linear, INT64 tokens [batch,12] + FP32 features [batch,6] -> scores, embedding; "
        "a torch.export ExportedProgram (.pt2)",
    ),
)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints, their logged notes and their own deprecation warnings."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.13 trips over its own pytree LeafSpec deprecation
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used", category=UserWarning)
            yield
    finally:
        logger.setLevel(level)


def _export_onnx(
    module: Any, args: tuple[Any, ...], path: Path, outputs: list[str], dynamic_shapes: Any = None
) -> None:
    """torch.onnx dynamo export to one self-contained file; input names are the forward's parameter names."""
    import torch

    with _quiet():
        torch.onnx.export(
            module,
            args,
            str(path),
            output_names=outputs,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            dynamo=True,
        )


def _check_close(what: str, expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray]) -> None:
    for name, reference in expected.items():
        got = actual[name]
        if got.shape != reference.shape or not np.allclose(got, reference, atol=ATOL, rtol=RTOL):
            raise AssertionError(f"{what}: output {name!r} {got.shape} differs from the reference {reference.shape}")


def _check_onnx(path: Path, feeds: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """ONNX Runtime (CPU) must reproduce ``expected`` for ``feeds``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    actual = dict(zip(names, session.run(names, dict(feeds)), strict=True))
    _check_close(f"{path.name} in ONNX Runtime", expected, actual)


def _torch_outputs(module: Any, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        result = module(*(torch.from_numpy(a) for a in feeds.values()))
    tensors = result if isinstance(result, tuple | list) else (result,)
    return {name: t.numpy() for name, t in zip(names, tensors, strict=True)}


def build_image_classifier(path: Path) -> None:
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    class Classifier(torch.nn.Module):  # a user's usual wrapper: a plain tensor in, the logits out
        def __init__(self) -> None:
            super().__init__()
            config = ResNetConfig(
                embedding_size=16,
                hidden_sizes=[16, 32, 64, 128],
                depths=[1, 1, 1, 1],
                layer_type="basic",
                num_labels=10,
            )
            self.resnet = ResNetForImageClassification(config)

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.resnet(pixel_values=pixel_values).logits

    torch.manual_seed(0)
    model = Classifier().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    _export_onnx(model, (torch.randn(2, 3, 64, 64),), path, ["logits"], ({0: batch},))
    rng = np.random.default_rng(0)
    for n in (1, 5):
        feeds = {"pixel_values": rng.standard_normal((n, 3, 64, 64), dtype=np.float32)}
        _check_onnx(path, feeds, _torch_outputs(model, feeds, ["logits"]))


def build_text_encoder(path: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            config = BertConfig(
                vocab_size=1000,
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=512,
            )
            self.bert = BertModel(config)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state, out.pooler_output

    torch.manual_seed(0)
    model = Encoder().eval()
    axes = {0: torch.export.Dim("batch", min=1, max=32), 1: torch.export.Dim("sequence", min=8, max=512)}
    example = (torch.randint(0, 1000, (2, 16)), torch.ones(2, 16, dtype=torch.int64))
    outputs = ["last_hidden_state", "pooler_output"]
    _export_onnx(model, example, path, outputs, (axes, axes))
    rng = np.random.default_rng(0)
    for n, length in ((1, 8), (1, 512), (32, 8), (32, 128), (32, 512)):
        mask = np.ones((n, length), dtype=np.int64)
        mask[:, length // 2 :] = 0  # right padding
        feeds = {"input_ids": rng.integers(0, 1000, (n, length), dtype=np.int64), "attention_mask": mask}
        _check_onnx(path, feeds, _torch_outputs(model, feeds, outputs))


def build_sklearn_pipeline(path: Path) -> dict[str, np.ndarray]:
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    classifier = LogisticRegression(max_iter=1000)
    pipeline = make_pipeline(StandardScaler(), classifier).fit(features, labels)
    proto = convert_sklearn(
        pipeline,
        initial_types=[("features", FloatTensorType([None, 4]))],  # None: a dynamic dim without a name
        options={id(classifier): {"zipmap": False}},  # label INT64 [N] and probabilities FLOAT [N, 3], not a map
        target_opset={"": 17, "ai.onnx.ml": 3},
        name="sklearn-pipeline",  # the graph name; skl2onnx otherwise picks a random uuid, so bytes change per build
    )
    onnx.save(proto, str(path))
    samples = {"features": np.ascontiguousarray(features[::15])}  # 10 real rows, every class
    rows = samples["features"]
    expected = {"label": pipeline.predict(rows).astype(np.int64), "probabilities": pipeline.predict_proba(rows)}
    _check_onnx(path, samples, expected)
    return samples


def build_fixed_shape(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 8)).eval()
    _export_onnx(model, (torch.randn(4, 16),), path, ["output"])  # no dynamic_shapes: every dim is fixed
    feeds = {"input": np.random.default_rng(0).standard_normal((4, 16), dtype=np.float32)}  # Sequential.forward(input)
    _check_onnx(path, feeds, _torch_outputs(model, feeds, ["output"]))


def build_two_heads(path: Path) -> None:
    import torch

    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(100, 16)
            self.project = torch.nn.Linear(6, 16)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding = self.embed(tokens).mean(dim=1) + self.project(features)
            return self.head(torch.relu(embedding)), embedding  # scores, embedding

    torch.manual_seed(0)
    model = TwoHeads().eval()
    batch = torch.export.Dim("batch", min=1, max=16)
    example = (torch.randint(0, 100, (4, 12)), torch.randn(4, 6))
    with _quiet():
        program = torch.export.export(model, example, dynamic_shapes={"tokens": {0: batch}, "features": {0: batch}})
        torch.export.save(program, str(path))
        loaded = torch.export.load(str(path)).module()
    rng = np.random.default_rng(0)
    for n in (1, 16):
        feeds = {"tokens": rng.integers(0, 100, (n, 12), dtype=np.int64), "features": rng.standard_normal((n, 6))}
        feeds["features"] = feeds["features"].astype(np.float32)
        _check_close(
            path.name,
            _torch_outputs(model, feeds, ["scores", "embedding"]),
            _torch_outputs(loaded, feeds, ["scores", "embedding"]),
        )


_BUILDERS: dict[str, Callable[[Path], dict[str, np.ndarray] | None]] = {
    "image-classifier": build_image_classifier,
    "text-encoder": build_text_encoder,
    "sklearn-pipeline": build_sklearn_pipeline,
    "fixed-shape": build_fixed_shape,
    "two-heads": build_two_heads,
}


def content_key() -> str:
    """SHA-256 of the building packages' versions and this module's source; a change rebuilds every file."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            version = "missing"
        digest.update(f"{package}=={version}\n".encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _files(model: CorpusModel) -> list[str]:
    return [model.file] + ([model.samples_file] if model.samples_file else [])


def build_corpus(
    folder: Path, report: Callable[[CorpusModel, Path, float | None], None] | None = None
) -> dict[str, Path]:
    """Write every corpus model's file (and samples) into folder; skip files already there with a matching
    content key (cache: a small `corpus.json` recording a hash of the package versions + this module's source).
    Returns name -> path of the model file. ``report(model, path, seconds)`` is told of each (None: cached)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path, key = folder / MANIFEST, content_key()
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
    hashes: dict[str, str] = manifest.get("files", {}) if manifest.get("key") == key else {}
    paths = {}
    for model in CORPUS:
        path = paths[model.name] = folder / model.file
        if all((folder / f).is_file() and hashes.get(f) == _sha256(folder / f) for f in _files(model)):
            if report:
                report(model, path, None)
            continue
        started = time.perf_counter()
        staging = folder / ".building" / model.file  # same name (a .pt2 archive is named after its file), then moved
        staging.parent.mkdir(exist_ok=True)
        samples = _BUILDERS[model.name](staging)
        if model.samples_file:
            if samples is None:
                raise AssertionError(f"{model.name}: the builder returned no samples for {model.samples_file}")
            arrays: dict[str, Any] = dict(samples)  # Any: numpy's stubs reserve savez's allow_pickle keyword
            with open(folder / model.samples_file, "wb") as handle:
                np.savez(handle, **arrays)
        os.replace(staging, path)
        staging.parent.rmdir()
        hashes.update({f: _sha256(folder / f) for f in _files(model)})
        manifest_path.write_text(json.dumps({"key": key, "files": hashes}, indent=2, sort_keys=True) + "\n")
        if report:
            report(model, path, time.perf_counter() - started)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.corpus.models", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where to write the corpus (created if missing)")
    args = parser.parse_args(argv)

    def report(model: CorpusModel, path: Path, seconds: float | None) -> None:
        took = "cached" if seconds is None else f"{seconds:.1f} s"
        print(f"{model.name:<18} {model.file:<24} {path.stat().st_size:>10,} B  {took}", flush=True)

    build_corpus(args.folder, report)
    return 0


if __name__ == "__main__":
    # Run the module as imported, not as __main__: ONNX node metadata records the model classes' module names, so
    # `python -m` and an import (pytest) then write the same bytes (within one checkout: it records file paths too).
    from tests.corpus import models

    sys.exit(models.main())
