"""How long the prod stack takes to evaluate under mocks, and how that grows with 1, 10 and 50 served models.

    .venv/bin/python benchmarks/stack_evaluation.py [--runs 3]

Each evaluation runs in a fresh interpreter (as `pulumi preview` starts the program) against a tiny built model
repository holding exactly the configured models, and reports whether torch, onnx or tensorrt were imported:
evaluating the program must never import them. Prints medians and the ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODEL_COUNTS = (1, 10, 50)
HEAVY = ("torch", "onnx", "tensorrt")

# Runs in the child: evaluate the program once, report time, resource count and heavy imports.
CHILD = """
import json, sys, time
t0 = time.perf_counter()
from offline.harness import run_program
t1 = time.perf_counter()
recording = run_program("prod", config=json.loads(sys.argv[1]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "evaluate_s": t2 - t1, "resources": len(recording.resources),
                  "heavy": sorted(m for m in ("torch", "onnx", "tensorrt") if m in sys.modules)}))
"""


def _repository(work: Path, count: int) -> tuple[Path, list[dict[str, str]]]:
    """A tiny valid repository of ``count`` MNIST-shaped models, written with the pipeline's own writer."""
    from model_pipeline.entry import ModelEntry
    from tests._stack_repository import stack_repository

    entries = tuple(ModelEntry(name=f"mnist-{index}", architecture="mnist_mlp") for index in range(count))
    models = [{"name": entry.name, "architecture": "mnist_mlp"} for entry in entries]
    return stack_repository(work, entries), models


def _config(build_dir: Path, models: list[dict[str, str]]) -> dict[str, object]:
    from offline.harness import stack_config

    config = stack_config("prod")
    repository = dict(config["inference-platform:modelRepository"])
    config["inference-platform:modelRepository"] = {**repository, "buildDir": str(build_dir)}
    config["inference-platform:models"] = models
    return config


def _evaluate(config: dict[str, object]) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(config)], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="evaluations per model count (median reported)")
    args = parser.parse_args()
    medians: dict[int, float] = {}
    print(f"{'models':>6} {'resources':>9} {'evaluate s (median)':>20} {'import s':>9}  heavy imports")
    with tempfile.TemporaryDirectory() as tmp:
        for count in MODEL_COUNTS:
            build_dir, models = _repository(Path(tmp) / str(count), count)
            runs = [_evaluate(_config(build_dir, models)) for _ in range(args.runs)]
            medians[count] = statistics.median(float(r["evaluate_s"]) for r in runs)  # type: ignore[arg-type]
            heavy = sorted({m for r in runs for m in r["heavy"]})  # type: ignore[attr-defined]
            print(
                f"{count:>6} {runs[0]['resources']:>9} {medians[count]:>20.3f} "
                f"{statistics.median(float(r['import_s']) for r in runs):>9.3f}  "  # type: ignore[arg-type]
                f"{', '.join(heavy) or 'none'}"
            )
            if heavy:
                raise SystemExit(f"evaluating the program imported {heavy}; it must not")
    base = medians[MODEL_COUNTS[0]]
    print("ratios to 1 model: " + ", ".join(f"{c} models {medians[c] / base:.2f}x" for c in MODEL_COUNTS[1:]))


if __name__ == "__main__":
    main()
