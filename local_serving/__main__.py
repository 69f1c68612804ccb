"""`python -m local_serving serve|load|report|demo`: the serving loop on 127.0.0.1."""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from local_serving.errors import LocalServingError
from local_serving.load import PROTOCOLS, LoadResult, LoadSettings, echo_workload, run_load, workload_for
from local_serving.processes import stop_on_signals
from local_serving.prometheus import PrometheusClient, ScrapeSettings
from local_serving.report import AutoscalingTarget, build_report, render_text, stack_autoscaling_target, write_report
from local_serving.rules import platform_adapter_rules
from local_serving.runner import LocalStack, RunSettings
from local_serving.triton import TritonPorts
from local_serving.wrappers import SourceModel, discover_models
from model_pipeline.syntax import duration_seconds

DEFAULT_REPOSITORY = Path("build/dev/model_repository")  # what `make build-models` writes for dev


def _server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY, help="the pipeline's model repository")
    parser.add_argument(
        "--sample",
        action="store_true",
        help="serve local_serving's small sample MNIST repository instead (written to a temp dir)",
    )
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--scrape-interval", default="5s", help="scrape and rule evaluation interval")
    parser.add_argument("--rule-window", default="1m", help="range of the recording rules' increase()")
    parser.add_argument(
        "--slow-model-ms",
        type=float,
        default=0.0,
        help="also serve 'slow', a python model sleeping this long per batch (shows alerts firing)",
    )


def _load_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", action="append", help="model to load (repeatable; default: every ONNX model)")
    parser.add_argument("--protocol", choices=[*PROTOCOLS, "both"], default="both")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per model and protocol")
    parser.add_argument("--batch-size", type=int, default=1)


def _target_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default="dev", help="Pulumi stack whose autoscaling settings the HPA uses")
    parser.add_argument("--target-queue-time-ms", type=float, help="override autoscaling.targetQueueTimeMs")
    parser.add_argument("--min-replicas", type=int)
    parser.add_argument("--max-replicas", type=int)


def _run_settings(args: argparse.Namespace) -> RunSettings:
    sleeping = {"slow": args.slow_model_ms} if args.slow_model_ms > 0 else {}
    repository = args.repository
    if args.sample:
        from local_serving.sample_repository import write_sample_repository

        sample_dir = tempfile.mkdtemp(prefix="local-serving-sample-")
        atexit.register(shutil.rmtree, sample_dir, True)
        repository = write_sample_repository(Path(sample_dir) / "repo")
    return RunSettings(
        repository=repository,
        triton_ports=TritonPorts(args.http_port, args.grpc_port, args.metrics_port),
        prometheus_port=args.prometheus_port,
        scrape=ScrapeSettings(args.scrape_interval, args.scrape_interval),
        rule_window=args.rule_window,
        sleeping_models=sleeping,
    )


def _target(args: argparse.Namespace) -> AutoscalingTarget:
    if args.target_queue_time_ms is not None and args.min_replicas and args.max_replicas:
        return AutoscalingTarget(args.target_queue_time_ms, args.min_replicas, args.max_replicas)
    base = (
        stack_autoscaling_target(args.stack)
        if args.target_queue_time_ms is None
        else AutoscalingTarget(args.target_queue_time_ms, 1, 1)
    )
    return AutoscalingTarget(
        args.target_queue_time_ms if args.target_queue_time_ms is not None else base.target_queue_time_ms,
        args.min_replicas or base.min_replicas,
        args.max_replicas or base.max_replicas,
    )


def _loads(models: list[SourceModel], args: argparse.Namespace, http_url: str, grpc_url: str) -> list[LoadResult]:
    chosen = [m for m in models if not args.model or m.name in args.model]
    missing = sorted(set(args.model or []) - {m.name for m in models})
    if missing:
        raise LocalServingError(f"--model {missing} not in the repository (has {[m.name for m in models]})")
    protocols = list(PROTOCOLS) if args.protocol == "both" else [args.protocol]
    results = []
    for model in chosen:
        workload = workload_for(model)
        for protocol in protocols:
            url = http_url if protocol == "http" else grpc_url
            settings = LoadSettings(protocol, url, args.concurrency, args.duration, args.batch_size)
            print(f"load: {model.name} over {protocol}, {args.concurrency} clients, {args.duration:g}s", flush=True)
            results.append(run_load(workload, settings))
    return results


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C (or --duration seconds)."""
    with LocalStack(_run_settings(args)) as stack:
        assert stack.triton is not None and stack.prometheus is not None
        print(f"Triton HTTP {stack.triton.http_url}, gRPC {stack.triton.grpc_url}, metrics {stack.triton.metrics_url}")
        print(f"Prometheus {stack.prometheus.url}; models: {', '.join(stack.served_models)}")
        print("Ctrl-C stops both." if not args.duration else f"stopping in {args.duration:g}s", flush=True)
        try:
            deadline = time.monotonic() + args.duration if args.duration else float("inf")
            while time.monotonic() < deadline:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    """Load a running Triton; write the results as JSON for `report`."""
    results = _loads(discover_models(args.repository), args, args.http_url, args.grpc_url)
    summaries = [result.summary() for result in results]
    print(json.dumps(summaries, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summaries, indent=2))
    return 0 if all(s["errors"] == 0 for s in summaries) else 1


def cmd_report(args: argparse.Namespace) -> int:
    """Report from a running Prometheus (and optional load results JSON)."""
    client = PrometheusClient(args.prometheus_url)
    loads: list[Any] = json.loads(args.load_results.read_text()) if args.load_results else []
    models = [m.name for m in discover_models(args.repository)]
    report = build_report(client, [], models, platform_adapter_rules(), _target(args))
    report["load"] = loads
    print(render_text(report))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve, load over HTTP and gRPC, wait for the rules to see it, report, stop everything."""
    with LocalStack(_run_settings(args)) as stack:
        assert stack.triton is not None
        results = _loads(stack.source_models, args, stack.triton.http_url, stack.triton.grpc_url)
        if args.slow_model_ms > 0:
            results.append(_load_slow(stack, args))
        # One more scrape and rule evaluation so the recorded series cover the end of the load.
        time.sleep(2 * duration_seconds(args.scrape_interval) + 0.5)
        models = [m.name for m in stack.source_models] + list(stack.settings.sleeping_models)
        report = build_report(stack.client, results, models, platform_adapter_rules(), _target(args))
    print(render_text(report))
    if args.out:
        write_report(report, args.out)
        print(f"report written to {args.out}")
    return 0 if all(load["errors"] == 0 for load in report["load"]) else 1


def _load_slow(stack: LocalStack, args: argparse.Namespace) -> LoadResult:
    import numpy as np

    assert stack.triton is not None
    workload = echo_workload("slow", "input", "output", np.arange(64, dtype=np.float32).reshape(64, 1))
    settings = LoadSettings("grpc", stack.triton.grpc_url, max(args.concurrency, 8), args.duration)
    print(f"load: slow over grpc, {settings.concurrency} clients, {args.duration:g}s", flush=True)
    return run_load(workload, settings)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    root = argparse.ArgumentParser(prog="python -m local_serving", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the repository with Triton + Prometheus on 127.0.0.1")
    _server_flags(serve)
    serve.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)")
    load = commands.add_parser("load", help="bounded load against a running Triton")
    load.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    load.add_argument("--http-url", default="127.0.0.1:8000")
    load.add_argument("--grpc-url", default="127.0.0.1:8001")
    load.add_argument("--out", type=Path, help="write the load results here (JSON)")
    _load_flags(load)
    report = commands.add_parser("report", help="report from a running Prometheus")
    report.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    report.add_argument("--prometheus-url", default="http://127.0.0.1:9090")
    report.add_argument("--load-results", type=Path, help="JSON written by `load --out`")
    _target_flags(report)
    demo = commands.add_parser("demo", help="serve, load, report and stop: the whole loop, bounded")
    _server_flags(demo)
    _load_flags(demo)
    _target_flags(demo)
    demo.add_argument("--out", type=Path, help="also write the report as JSON")
    return root


def main(argv: list[str] | None = None) -> int:
    """Run one command; a LocalServingError becomes one clear line on stderr and exit code 2."""
    args = parser().parse_args(argv)
    handlers = {"serve": cmd_serve, "load": cmd_load, "report": cmd_report, "demo": cmd_demo}
    stop_on_signals()  # before anything starts: a signal during start-up still stops what has started
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt as stopped:
        print(f"local_serving: {stopped or 'interrupted'}; every server it started is stopped", file=sys.stderr)
        return 130
    except LocalServingError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
