"""Render a stack offline: every manifest, Helm release and output, with no cluster and no Pulumi CLI.

    python -m offline.render dev --out out/dev

The program runs under the same mocks as the tests. Output: ``<component>.yaml`` (the Kubernetes objects each
component declares), ``helm/<release>.yaml`` (chart, version, values), ``cloud.yaml`` (non-Kubernetes resources:
the bucket and IAM roles, and the dynamic resources - the repository's publication, generated passwords - each
with its provider class) and ``summary.md``. Secret values are written as ``[secret]``; a dynamic resource's
secret outputs are named, never shown (under mocks they have no value anyway).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

from offline.harness import RecordedResource, Recording, run_program

SECRET = "[secret]"


def _masked(value: Any, secret_paths: set[str], path: str = "") -> Any:
    if path in secret_paths:
        return SECRET
    if isinstance(value, dict):
        return {k: _masked(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def masked_inputs(resource: RecordedResource) -> dict[str, Any]:
    """The resource's inputs with every secret value replaced by ``[secret]``."""
    return _masked(resource.inputs, set(resource.secret_paths))


def _component_name(recording: Recording, resource: RecordedResource) -> str:
    component = recording.component_of(resource)
    return component.name if component is not None else "stack"


def _images(objects: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("image"), str) and "containers" not in node:
                found.add(node["image"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for obj in objects:
        walk(obj)
    return found


def render(recording: Recording, out: Path) -> dict[str, Path]:
    """Write the stack's manifests, releases and summary under ``out``; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "helm").mkdir(exist_ok=True)
    written: dict[str, Path] = {}
    manifests: dict[str, list[dict[str, Any]]] = defaultdict(list)
    cloud: list[dict[str, Any]] = []
    for resource in recording.resources:
        if not resource.custom or resource.type.startswith("pulumi:providers:"):
            continue
        body = masked_inputs(resource)
        if resource.type == "kubernetes:helm.sh/v3:Release":
            path = out / "helm" / f"{resource.name}.yaml"
            path.write_text(
                yaml.safe_dump(
                    {k: body.get(k) for k in ("name", "namespace", "chart", "version", "repositoryOpts", "values")},
                    sort_keys=False,
                )
            )
            written[f"helm/{resource.name}"] = path
        elif "apiVersion" in body:
            manifests[_component_name(recording, resource)].append(body)
        elif resource.dynamic_provider is not None:
            entry: dict[str, Any] = {
                "type": resource.type,
                "name": resource.name,
                "provider": resource.dynamic_provider,
                "inputs": body,
            }
            if resource.additional_secret_outputs:
                entry["secret_outputs"] = list(resource.additional_secret_outputs)
            cloud.append(entry)
        else:
            cloud.append({"type": resource.type, "name": resource.name, "inputs": body})
    for component, objects in manifests.items():
        path = out / f"{component}.yaml"
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
        written[component] = path
    if cloud:
        (out / "cloud.yaml").write_text(yaml.safe_dump(cloud, sort_keys=False))
        written["cloud"] = out / "cloud.yaml"
    (out / "summary.md").write_text(summary(recording, manifests))
    written["summary"] = out / "summary.md"
    return written


def summary(recording: Recording, manifests: dict[str, list[dict[str, Any]]]) -> str:
    """Resources per component, images, charts and outputs, as Markdown."""
    per_component = Counter(
        _component_name(recording, r)
        for r in recording.resources
        if r.custom and not r.type.startswith("pulumi:providers:")
    )
    lines = [
        f"# Stack `{recording.stack}` (rendered offline under Pulumi mocks)",
        "",
        "| component | resources |",
        "|---|---|",
    ]
    lines += [f"| {name} | {count} |" for name, count in sorted(per_component.items())]
    lines += ["", "## Images", ""]
    lines += [f"- `{image}`" for image in sorted(_images([o for objs in manifests.values() for o in objs]))]
    lines += ["", "## Helm charts", "", "| release | chart | version | namespace |", "|---|---|---|---|"]
    for release in recording.helm_releases():
        i = release.inputs
        lines.append(f"| {i.get('name')} | {i.get('chart')} | {i.get('version')} | {i.get('namespace')} |")
    dynamic = recording.dynamic_resources()
    if dynamic:
        lines += [
            "",
            "## Dynamic resources (pulumi.dynamic, run in the pulumi-python provider process)",
            "",
            "| resource | provider |",
            "|---|---|",
        ]
        lines += [f"| {r.name} | `{r.dynamic_provider}` |" for r in dynamic]
    lines += ["", "## Outputs", "", "| output | value |", "|---|---|"]
    for key, value in sorted(recording.outputs.items()):
        shown = SECRET if key in recording.secret_outputs else value
        lines.append(f"| {key} | `{shown}` |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m offline.render", description=__doc__.splitlines()[0])
    parser.add_argument("stack", help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--out", type=Path, help="output folder (default out/<stack>)")
    args = parser.parse_args(argv)
    try:
        recording = run_program(args.stack)
    except Exception as error:  # the program's own errors (bad config, stale build) are the message
        print(f"error: {error}", file=sys.stderr)
        return 1
    written = render(recording, args.out or Path("out") / args.stack)
    print((written["summary"]).read_text())
    print(f"wrote {len(written)} files under {(args.out or Path('out') / args.stack)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
