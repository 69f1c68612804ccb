#!/usr/bin/env bash
# Create the Triton environment for the local serving loop, from nothing, idempotently.
#
# tritonserver 2.51 comes from the nvidia-pytriton wheel; its python backend stub embeds this venv's Python,
# so numpy (< 2, as the wheel requires) and ONNX Runtime for the generated model wrappers are installed here,
# apart from the project's .venv (numpy 2). Prometheus comes from Debian: `apt-get install -y prometheus`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LOCAL_SERVING_TRITON_VENV:-$ROOT/.venv-triton}"
PYTHON="${PYTHON:-python3.11}"
PYTRITON_VERSION="0.7.0"
# onnxruntime 1.31.1 (same as the project's .venv) is verified to import and run with numpy 1.26.
ONNXRUNTIME_VERSION="1.31.1"
NUMPY_SPEC="numpy>=1.26,<2"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet \
    "nvidia-pytriton==$PYTRITON_VERSION" "onnxruntime==$ONNXRUNTIME_VERSION" "$NUMPY_SPEC"

SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
SERVER="$SITE/pytriton/tritonserver/bin/tritonserver"
# `tritonserver --help` exits 1, so check that its usage prints rather than its exit status.
USAGE="$(LD_LIBRARY_PATH="$SITE/nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$SERVER" --help 2>&1 || true)"
[[ "$USAGE" == *"Usage: tritonserver"* ]] \
    || { echo "tritonserver at $SERVER does not start: ${USAGE:0:500}" >&2; exit 1; }
"$VENV/bin/python" -c 'import numpy, onnxruntime; assert numpy.__version__ < "2"' \
    || { echo "$VENV: numpy < 2 with onnxruntime is required by the Triton python backend" >&2; exit 1; }

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
    echo "note: prometheus/promtool not on PATH; install with: apt-get install -y prometheus" >&2
fi
echo "Triton environment ready: $VENV ($("$VENV/bin/python" -c 'import pytriton,onnxruntime,numpy; print("nvidia-pytriton", "'$PYTRITON_VERSION'", "onnxruntime", onnxruntime.__version__, "numpy", numpy.__version__)'))"
