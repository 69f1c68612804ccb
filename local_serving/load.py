"""A bounded load step with tritonclient over HTTP or gRPC: real inputs, checked answers, measured latency.

Each request carries every input of the model with its own data type and asks for every output; it counts as
equal to the reference only when all its outputs are (close for floating point, equal for everything else).
What is sent and expected comes from :mod:`local_serving.workloads`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from local_serving.errors import LocalServingError
from local_serving.workloads import Arrays, Pool, Workload, echo_workload, onnxruntime_outputs, workload_for

PROTOCOLS = ("http", "grpc")
RTOL = ATOL = 1e-4


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


def _client_module(protocol: str) -> Any:
    if protocol == "http":
        import tritonclient.http as module
    else:
        import tritonclient.grpc as module
    return module


class _Worker(threading.Thread):
    """One client connection sending requests back to back until the shared deadline.

    Consecutive requests take turns over the pools, so requests of different shapes are in flight together.
    """

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
        pools, sent = self.workload.pools, 0
        try:
            while time.monotonic() < self.deadline and not self.stop.is_set():
                pool = pools[(self.index + sent) % len(pools)]
                self._one_request(client, module, pool, self._rows(pool, sent))
                sent += 1
        finally:
            client.close()

    def _rows(self, pool: Pool, sent: int) -> np.ndarray | None:
        """The pool rows of the next request; None: the whole pool (a model without a batch dimension)."""
        if not self.workload.batched:
            return None
        batch = self.settings.batch_size
        start = self.index * 7919 + sent * batch
        return np.arange(start, start + batch) % pool.rows

    def _one_request(self, client: Any, module: Any, pool: Pool, rows: np.ndarray | None) -> None:
        inputs = []
        for name, array in _pick(pool.inputs, rows).items():
            request_input = module.InferInput(name, list(array.shape), self.workload.datatypes[name])
            request_input.set_data_from_numpy(array)
            inputs.append(request_input)
        outputs = [module.InferRequestedOutput(name) for name in self.workload.outputs]
        started = time.perf_counter()
        try:
            answer = client.infer(self.workload.model, inputs, outputs=outputs)
        except Exception as error:  # tritonclient raises its own and transport exceptions; count them all
            with self.lock:
                self.result.errors.append(str(error))
            return
        latency = time.perf_counter() - started
        self._record(latency, {name: answer.as_numpy(name) for name in self.workload.outputs}, pool, rows)

    def _record(
        self, latency: float, served: Mapping[str, np.ndarray | None], pool: Pool, rows: np.ndarray | None
    ) -> None:
        count = 1 if rows is None else len(rows)
        same = matching_rows(served, _pick(pool.reference, rows), count)
        labels = None if pool.labels is None or rows is None else pool.labels[rows]
        correct = 0 if labels is None else _correct(served[self.workload.outputs[0]], labels)
        with self.lock:
            self.result.latencies_s.append(latency)
            self.result.inferences += count
            self.result.matching_reference += int(same.sum())
            if labels is not None:
                self.result.labelled += count
                self.result.correct += correct


def _pick(arrays: Arrays, rows: np.ndarray | None) -> Arrays:
    return arrays if rows is None else {name: np.ascontiguousarray(array[rows]) for name, array in arrays.items()}


def _correct(scores: np.ndarray | None, labels: np.ndarray) -> int:
    if scores is None or len(scores) != len(labels):
        return 0
    return int((scores.reshape(len(labels), -1).argmax(axis=1) == labels).sum())


def matching_rows(served: Mapping[str, np.ndarray | None], reference: Arrays, rows: int) -> np.ndarray:
    """Per row (one row for a model without a batch dimension): whether every output equals the reference, in
    its shape, close for floating point and equal for integers, booleans and strings."""
    same = np.ones(rows, dtype=bool)
    for name, expected in reference.items():
        got = served.get(name)
        if got is None or got.shape != expected.shape:
            return np.zeros(rows, dtype=bool)
        if expected.dtype.kind in "fc":
            equal = np.isclose(got, expected, rtol=RTOL, atol=ATOL)
        else:
            equal = np.asarray(got == expected)
        same &= equal.reshape(rows, -1).all(axis=1)
    return same


def run_load(workload: Workload, settings: LoadSettings, stop: threading.Event | None = None) -> LoadResult:
    """Send requests from ``concurrency`` clients for ``duration_s`` seconds (or until ``stop``), then summarize."""
    settings.validate()
    stop = stop or threading.Event()
    batch = settings.batch_size if workload.batched else 1
    result = LoadResult(workload.model, settings.protocol, settings.concurrency, batch, workload.reference_name)
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


__all__ = [
    "PROTOCOLS",
    "LoadResult",
    "LoadSettings",
    "Workload",
    "echo_workload",
    "matching_rows",
    "onnxruntime_outputs",
    "run_load",
    "workload_for",
]
