"""Throughput with and without Triton's dynamic batcher, measured in one Triton run on 127.0.0.1.

    python benchmarks/dynamic_batching.py [--repository build/dev/model_repository] [--model mnist]
        [--concurrency 16] [--duration 8] [--rounds 2] [--protocol grpc] [--out result.json]

The same model.onnx is served twice by one Triton: ``<model>`` with the dynamic batching of its config.pbtxt
and ``<model>__no_dynamic_batching`` without it. Phases alternate (A B A B ...) so drift hits both equally.
Without --repository (or when it does not exist) it uses local_serving's sample MNIST repository.
Not a test: it prints what it measured, with the ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from local_serving.load import LoadResult, LoadSettings, run_load, workload_for
from local_serving.ports import free_port
from local_serving.triton import TritonPorts, TritonServer
from local_serving.wrappers import UNBATCHED_SUFFIX, discover_models, read_config, write_serving_repository


def _repository(requested: Path | None, work: Path) -> Path:
    if requested is not None and requested.is_dir():
        return requested
    from local_serving.sample_repository import write_sample_repository

    print("using local_serving's sample MNIST repository", file=sys.stderr)
    return write_sample_repository(work / "sample_repository")


def _phase(workload, name: str, settings: LoadSettings) -> LoadResult:
    result = run_load(dataclasses.replace(workload, model=name), settings)
    summary = result.summary()
    print(
        f"  {name}: {summary['throughput_inferences_per_s']:.1f} inf/s, p50 {summary['latency_ms']['p50']} ms, "
        f"p99 {summary['latency_ms']['p99']} ms, errors {summary['errors']}",
        file=sys.stderr,
    )
    return result


def _combined(results: list[LoadResult]) -> dict:
    wall = sum(r.wall_s for r in results)
    merged = LoadResult(
        results[0].model,
        results[0].protocol,
        results[0].concurrency,
        results[0].batch_size,
        wall_s=wall,
        latencies_s=[x for r in results for x in r.latencies_s],
        inferences=sum(r.inferences for r in results),
        labelled=sum(r.labelled for r in results),
        correct=sum(r.correct for r in results),
        matching_reference=sum(r.matching_reference for r in results),
        errors=[e for r in results for e in r.errors],
    )
    return merged.summary()


def _average_batch(before: str, after: str, model: str) -> float:
    """Inferences per execution during the measured rounds (Triton's counters, warm-up excluded)."""
    from local_serving.triton import counter_values

    def delta(metric: str) -> float:
        return counter_values(after, metric, model) - counter_values(before, metric, model)

    executions = delta("nv_inference_exec_count")
    return delta("nv_inference_count") / executions if executions else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repository", type=Path)
    parser.add_argument("--model", default="mnist")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from local_serving.triton import read_metrics

    with tempfile.TemporaryDirectory(prefix="bench-batching-") as temp:
        work = Path(temp)
        repository = _repository(args.repository, work)
        model = next(m for m in discover_models(repository) if m.name == args.model)
        write_serving_repository(repository, work / "serving", unbatched_variants=True)
        batching = read_config(work / "serving" / args.model / "config.pbtxt").dynamic_batching
        workload = workload_for(model)
        names = {"with": args.model, "without": args.model + UNBATCHED_SUFFIX}
        runs: dict[str, list[LoadResult]] = {"with": [], "without": []}
        ports = TritonPorts(free_port(), free_port(), free_port())
        with TritonServer(work / "serving", work / "triton", ports) as server:
            url = server.grpc_url if args.protocol == "grpc" else server.http_url
            settings = LoadSettings(args.protocol, url, args.concurrency, args.duration)
            _phase(workload, names["with"], dataclasses.replace(settings, duration_s=1.0))  # warm both up
            _phase(workload, names["without"], dataclasses.replace(settings, duration_s=1.0))
            before = read_metrics(server.metrics_url)
            for round_index in range(args.rounds):
                print(f"round {round_index + 1}/{args.rounds}", file=sys.stderr)
                for variant in ("with", "without") if round_index % 2 == 0 else ("without", "with"):
                    runs[variant].append(_phase(workload, names[variant], settings))
            after = read_metrics(server.metrics_url)

    result = {
        "model": args.model,
        "protocol": args.protocol,
        "concurrency": args.concurrency,
        "phase_seconds": args.duration,
        "rounds": args.rounds,
        "dynamic_batching": {
            "preferred_batch_size": list(batching.preferred_batch_size),
            "max_queue_delay_us": batching.max_queue_delay_microseconds,
        },
        "with_dynamic_batching": _combined(runs["with"]),
        "without_dynamic_batching": _combined(runs["without"]),
        "average_executed_batch": {
            variant: round(_average_batch(before, after, name), 2) for variant, name in names.items()
        },
    }
    with_rate = result["with_dynamic_batching"]["throughput_inferences_per_s"]
    without_rate = result["without_dynamic_batching"]["throughput_inferences_per_s"]
    result["throughput_ratio_with_over_without"] = round(with_rate / without_rate, 3) if without_rate else None
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
