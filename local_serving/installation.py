"""Find the Triton server shipped in the nvidia-pytriton wheel and the Prometheus binaries.

Triton lives in its own virtual environment (default ``<repo>/.venv-triton``, override with
``LOCAL_SERVING_TRITON_VENV``) because the wheel pins numpy < 2 while the rest of the project uses numpy 2.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from local_serving.errors import ToolMissingError

REPO_ROOT = Path(__file__).resolve().parents[1]
SETUP_HINT = "run `make triton-env` (local_serving/setup_env.sh)"


@dataclass(frozen=True)
class TritonInstallation:
    """Paths of one usable Triton: server binary, python backend pieces and the stub's Python environment."""

    venv: Path
    server_binary: Path
    python_backend_dir: Path
    stub: Path
    libs_dir: Path

    def server_environment(self) -> dict[str, str]:
        """Environment for tritonserver: its bundled libs, and the venv first on PATH for the stub's Python."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        # The python backend stub embeds libpython; it locates its prefix (and so site-packages with
        # numpy < 2 and onnxruntime) by finding `python3` on PATH, exactly as pytriton arranges it.
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = str(self.libs_dir)
        env["LD_LIBRARY_PATH"] = f"{libs}{os.pathsep}{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else libs
        return env

    def make_backend_directory(self, target: Path) -> Path:
        """Lay out ``<target>/python`` with the backend library, its utils and the stub for this Python."""
        python_dir = target / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for source in (
            self.python_backend_dir / "libtriton_python.so",
            self.python_backend_dir / "triton_python_backend_utils.py",
            self.stub,
        ):
            link = python_dir / source.name
            if not link.exists():
                link.symlink_to(source)
        return target


def triton_venv() -> Path:
    """The Triton virtual environment this checkout uses."""
    return Path(os.environ.get("LOCAL_SERVING_TRITON_VENV", REPO_ROOT / ".venv-triton"))


def find_triton(venv: Path | None = None) -> TritonInstallation:
    """Locate tritonserver, the python backend and the matching stub, or say how to install them."""
    venv = venv or triton_venv()
    site_packages = sorted(venv.glob("lib/python3.*/site-packages"))
    if not site_packages:
        raise ToolMissingError(f"no Triton environment at {venv}; {SETUP_HINT}")
    site = site_packages[-1]
    python_version = site.parent.name.removeprefix("python")
    dist = site / "pytriton" / "tritonserver"
    installation = TritonInstallation(
        venv=venv,
        server_binary=dist / "bin" / "tritonserver",
        python_backend_dir=dist / "backends" / "python",
        stub=dist / "python_backend_stubs" / python_version / "triton_python_backend_stub",
        libs_dir=site / "nvidia_pytriton.libs",
    )
    for required in (
        installation.server_binary,
        installation.python_backend_dir,
        installation.stub,
        installation.libs_dir,
    ):
        if not required.exists():
            raise ToolMissingError(f"Triton environment {venv} is incomplete: {required} is missing; {SETUP_HINT}")
    _check_stub_packages(venv, site)
    return installation


def _check_stub_packages(venv: Path, site: Path) -> None:
    missing = [name for name in ("numpy", "onnxruntime") if not (site / name).is_dir()]
    if missing:
        raise ToolMissingError(f"Triton environment {venv} lacks {', '.join(missing)}; {SETUP_HINT}")


def find_prometheus() -> tuple[Path, Path]:
    """The ``prometheus`` and ``promtool`` binaries (PATH, or LOCAL_SERVING_PROMETHEUS_DIR)."""
    search = os.environ.get("LOCAL_SERVING_PROMETHEUS_DIR")
    found = []
    for name in ("prometheus", "promtool"):
        path = shutil.which(name, path=search) if search else shutil.which(name)
        if path is None:
            raise ToolMissingError(
                f"`{name}` not found on PATH; install it with `apt-get install -y prometheus` "
                "(the runner starts its own instance on 127.0.0.1, the system service is not used)"
            )
        found.append(Path(path))
    return found[0], found[1]
