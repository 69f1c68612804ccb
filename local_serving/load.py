"""A bounded load step with tritonclient over HTTP or gRPC: real inputs, checked answers, measured latency.

Inputs come from real data chosen by the model's input shape: handwritten digits for [1,28,28] / [784]
(scikit-learn's digits upscaled like MNIST, with labels), scikit-learn's sample photographs for [3,H,W]
(ImageNet-normalized crops), otherwise the repository's golden.npz inputs.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from local_serving.errors import LocalServingError
from local_serving.wrappers import SourceModel

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(3, 1, 1)
PROTOCOLS = ("http", "grpc")


@dataclass(frozen=True)
class Workload:
    """Requests for one model: inputs [N, ...], optional labels, and ONNX Runtime's own outputs for them."""

    model: str
    input_name: str
    output_name: str
    inputs: np.ndarray
    reference: np.ndarray
    labels: np.ndarray | None = None
    source: str = ""
    reference_name: str = "ONNX Runtime"


@dataclass(frozen=True)
class LoadSettings:
    """How hard and how long to push: concurrent clients, seconds, samples per request."""

    protocol: str = "grpc"
    url: str = "127.0.0.1:8001"
    concurrency: int = 4
    duration_s: float = 10.0
    batch_size: int = 1

    def validate(self) -> None:
        """Reject settings that cannot describe a bounded run."""
        problems = []
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol {self.protocol!r} must be one of {', '.join(PROTOCOLS)}")
        if self.concurrency < 1:
            problems.append(f"concurrency ({self.concurrency}) must be >= 1")
        if not 0 < self.duration_s <= 3600:
            problems.append(f"duration ({self.duration_s}s) must be in (0, 3600]")
        if self.batch_size < 1:
            problems.append(f"batch size ({self.batch_size}) must be >= 1")
        if problems:
            raise LocalServingError("invalid load settings: " + "; ".join(problems))


@dataclass
class LoadResult:
    """What a load run saw: per-request latencies, answers checked against labels and ONNX Runtime."""

    model: str
    protocol: str
    concurrency: int
    batch_size: int
    reference_name: str = "ONNX Runtime"
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    inferences: int = 0
    labelled: int = 0
    correct: int = 0
    matching_reference: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    def summary(self) -> dict[str, Any]:
        """Accuracy, agreement with ONNX Runtime, latency percentiles (ms) and throughput."""
        latencies_ms = np.array(self.latencies_s) * 1000.0
        percentile = (lambda q: round(float(np.percentile(latencies_ms, q)), 3)) if len(latencies_ms) else None
        return {
            "model": self.model,
            "protocol": self.protocol,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "requests": self.requests,
            "inferences": self.inferences,
            "errors": len(self.errors),
            "first_errors": self.errors[:3],
            "accuracy": round(self.correct / self.labelled, 4) if self.labelled else None,
            "reference": self.reference_name,
            "matches_reference": round(self.matching_reference / self.inferences, 4) if self.inferences else None,
            "latency_ms": {f"p{q}": percentile(q) if percentile else None for q in (50, 95, 99)},
            "throughput_rps": round(self.requests / self.wall_s, 2) if self.wall_s else 0.0,
            "throughput_inferences_per_s": round(self.inferences / self.wall_s, 2) if self.wall_s else 0.0,
            "wall_s": round(self.wall_s, 3),
        }


def digits_inputs(count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Held-out handwritten digits as MNIST-normalized float32 [N,1,28,28] and their labels."""
    from model_pipeline.mnist_data import sklearn_digits_as_mnist

    data = sklearn_digits_as_mnist("local serving load step")
    return data.test_images[:count], data.test_labels[:count]


def photo_inputs(height: int, width: int, count: int = 16, seed: int = 0) -> np.ndarray:
    """Random crops of scikit-learn's sample photographs, resized and ImageNet-normalized: float32 [N,3,H,W]."""
    from scipy.ndimage import zoom
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.shape[:2]) // 2, min(photo.shape[:2])))
        top = int(rng.integers(0, photo.shape[0] - side + 1))
        left = int(rng.integers(0, photo.shape[1] - side + 1))
        crop = photo[top : top + side, left : left + side].astype(np.float32) / 255.0
        resized = zoom(crop, (height / side, width / side, 1), order=1)[:height, :width]
        crops.append((resized.transpose(2, 0, 1) - IMAGENET_MEAN) / IMAGENET_STD)
    return np.stack(crops).astype(np.float32)


def workload_for(model: SourceModel) -> Workload:
    """Real inputs matching the model's first input, with ONNX Runtime's outputs on them as the reference."""
    if len(model.config.input) != 1 or len(model.config.output) < 1:
        raise LocalServingError(f"model {model.name}: the load step drives models with exactly one input")
    tensor, output = model.config.input[0], model.config.output[0]
    dims = tuple(tensor.dims)
    labels = None
    if dims in ((1, 28, 28), (784,)):
        inputs, labels = digits_inputs()
        inputs, source = inputs.reshape((len(inputs), *dims)), "scikit-learn digits (held-out split)"
    elif len(dims) == 3 and dims[0] == 3:
        inputs, source = photo_inputs(dims[1], dims[2]), "scikit-learn sample photographs"
    elif model.golden_path is not None:
        inputs, source = golden_inputs(model.golden_path, tensor.name), f"{model.golden_path}"
    else:
        raise LocalServingError(f"model {model.name}: no real inputs for shape {list(dims)} and no golden.npz")
    return Workload(
        model.name,
        tensor.name,
        output.name,
        inputs,
        onnxruntime_outputs(model.onnx_path, tensor.name, output.name, inputs),
        labels,
        source,
    )


def golden_inputs(path: Path, input_name: str) -> np.ndarray:
    """The largest-batch golden inputs the pipeline saved (keys ``b<batch>.in.<input>``)."""
    with np.load(path, allow_pickle=False) as golden:
        batches = sorted(
            (int(key.split(".")[0][1:]), key)
            for key in golden.files
            if key.startswith("b") and key.endswith(f".in.{input_name}")
        )
        if not batches:
            raise LocalServingError(f"{path} holds no golden inputs for {input_name!r}")
        return np.asarray(golden[batches[-1][1]])


def onnxruntime_outputs(
    onnx_path: Path, input_name: str, output_name: str, inputs: np.ndarray, chunk: int = 64
) -> np.ndarray:
    """ONNX Runtime's own answers for ``inputs``, computed here, outside Triton."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    parts = [session.run([output_name], {input_name: inputs[i : i + chunk]})[0] for i in range(0, len(inputs), chunk)]
    return np.concatenate(parts)


def _client_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module


class _Worker(threading.Thread):
    """One client connection sending batches back to back until the shared deadline."""

    def __init__(
        self,
        index: int,
        workload: Workload,
        settings: LoadSettings,
        deadline: float,
        result: LoadResult,
        lock: threading.Lock,
        stop: threading.Event,
    ):
        super().__init__(name=f"load-{settings.protocol}-{index}", daemon=True)
        self.index, self.workload, self.settings = index, workload, settings
        self.deadline, self.result, self.lock, self.stop = deadline, result, lock, stop

    def run(self) -> None:
        module = _client_module(self.settings.protocol)
        client = module.InferenceServerClient(self.settings.url)
        count, batch = len(self.workload.inputs), self.settings.batch_size
        position = (self.index * 7919) % count
        try:
            while time.monotonic() < self.deadline and not self.stop.is_set():
                rows = np.arange(position, position + batch) % count
                position = (position + batch) % count
                self._one_request(client, module, rows)
        finally:
            client.close()

    def _one_request(self, client: Any, module: Any, rows: np.ndarray) -> None:
        data = np.ascontiguousarray(self.workload.inputs[rows])
        request_input = module.InferInput(self.workload.input_name, list(data.shape), "FP32")
        request_input.set_data_from_numpy(data)
        output = module.InferRequestedOutput(self.workload.output_name)
        started = time.perf_counter()
        try:
            answer = client.infer(self.workload.model, [request_input], outputs=[output])
        except Exception as error:  # tritonclient raises its own and transport exceptions; count them all
            with self.lock:
                self.result.errors.append(str(error))
            return
        latency = time.perf_counter() - started
        self._record(latency, answer.as_numpy(self.workload.output_name), rows)

    def _record(self, latency: float, served: np.ndarray, rows: np.ndarray) -> None:
        reference = self.workload.reference[rows]
        same = np.isclose(served, reference, rtol=1e-4, atol=1e-4).reshape(len(rows), -1).all(axis=1)
        correct = 0
        if self.workload.labels is not None:
            correct = int((served.reshape(len(rows), -1).argmax(axis=1) == self.workload.labels[rows]).sum())
        with self.lock:
            self.result.latencies_s.append(latency)
            self.result.inferences += len(rows)
            self.result.matching_reference += int(same.sum())
            if self.workload.labels is not None:
                self.result.labelled += len(rows)
                self.result.correct += correct


def run_load(workload: Workload, settings: LoadSettings, stop: threading.Event | None = None) -> LoadResult:
    """Send requests from ``concurrency`` clients for ``duration_s`` seconds (or until ``stop``), then summarize."""
    settings.validate()
    stop = stop or threading.Event()
    result = LoadResult(
        workload.model, settings.protocol, settings.concurrency, settings.batch_size, workload.reference_name
    )
    lock = threading.Lock()
    started = time.monotonic()
    workers = [
        _Worker(i, workload, settings, started + settings.duration_s, result, lock, stop)
        for i in range(settings.concurrency)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=settings.duration_s + 60)
    result.wall_s = time.monotonic() - started
    if any(worker.is_alive() for worker in workers):
        raise LocalServingError(f"load clients for {workload.model} did not stop within 60s of the deadline")
    return result
