"""A pod's container as a real process: its environment, its volumes where it expects them, its user.

Each container runs in a mount namespace of its own (``unshare --mount``): emptyDirs are directories of the pod
(``medium: Memory`` a tmpfs of the declared size), ConfigMaps, Secrets and projected volumes (ServiceAccount
tokens from the TokenRequest API) are files written from the API, and each is mounted at its ``mountPath``. A
mount point the machine lacks is made on an overlay that lives only in that namespace, so nothing is written
outside the pod's directory. The process runs as the pod's user and groups (where this machine's Python is
reachable by them), with no capabilities and no new privileges. Not enforced here: a read-only root filesystem,
resource limits, a network namespace per pod (every pod shares the cluster's, bound to an address of its own).
"""

from __future__ import annotations

import base64
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from local_cluster import pods
from local_cluster.kube_api import ApiError, KubeApi

DEFAULT_TOKEN_SECONDS = 3607  # what the kubelet asks for a projected token that names no expiry


class VolumeError(ValueError):
    """A volume or env reference the runner cannot provide; the message says which and why."""


@dataclass(frozen=True)
class Volume:
    """What backs one pod volume: a directory; for a Memory emptyDir, a tmpfs of ``tmpfs_bytes`` mounted on it in
    the pod's own mount namespace (local_cluster.sandbox), so that every container of the pod shares it."""

    directory: Path
    tmpfs_bytes: int | None = None


@dataclass(frozen=True)
class Mount:
    target: str
    volume: Volume
    read_only: bool = False
    sub_path: str = ""


_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity_bytes(quantity: str) -> int:
    """``2Gi`` -> 2147483648 (the binary and decimal suffixes a sizeLimit uses)."""
    for suffix, factor in sorted(_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if quantity.endswith(suffix):
            return int(float(quantity[: -len(suffix)]) * factor)
    return int(float(quantity))


# ---------------------------------------------------------------------------------------------------------------
# Volumes


def _write_files(directory: Path, files: Mapping[str, bytes], mode: int) -> None:
    """The volume's files; only those whose content changed are rewritten (programs watch them for updates)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != content:
            path.write_bytes(content)
            path.chmod(mode)


def _selected(data: Mapping[str, bytes], items: list[dict[str, Any]] | None) -> dict[str, bytes]:
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items if item["key"] in data}


def _object_data(api: KubeApi, kind: str, namespace: str, name: str, optional: bool = False) -> dict[str, bytes]:
    """A Secret's or ConfigMap's data; a missing one is an error (the pod waits for it) unless optional."""
    try:
        return _fetch_data(api, kind, namespace, name)
    except ApiError as error:
        if error.status != 404:
            raise
        if optional:
            return {}
        raise VolumeError(f"{kind[:-1]} {namespace}/{name} does not exist (yet)") from error


def _fetch_data(api: KubeApi, kind: str, namespace: str, name: str) -> dict[str, bytes]:
    if kind == "secrets":
        found = api.get(f"/api/v1/namespaces/{namespace}/secrets/{name}")
        return {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}
    found = api.get(f"/api/v1/namespaces/{namespace}/configmaps/{name}")
    return {k: v.encode() for k, v in (found.get("data") or {}).items()}


def _projected(api: KubeApi, pod: Mapping[str, Any], sources: list[dict[str, Any]]) -> dict[str, bytes]:
    namespace, files = pod["metadata"]["namespace"], {}
    for source in sources:
        if "serviceAccountToken" in source:
            token = source["serviceAccountToken"]
            audiences = [token["audience"]] if token.get("audience") else []
            seconds = int(token.get("expirationSeconds", DEFAULT_TOKEN_SECONDS))
            account = pod["spec"].get("serviceAccountName", "default")
            files[token["path"]] = api.service_account_token(namespace, account, audiences, seconds).encode()
        elif "configMap" in source or "secret" in source:
            kind, ref = ("configmaps", source["configMap"]) if "configMap" in source else ("secrets", source["secret"])
            data = _object_data(api, kind, namespace, ref["name"], bool(ref.get("optional")))
            files.update(_selected(data, ref.get("items")))
        elif "downwardAPI" in source:
            for item in source["downwardAPI"].get("items", []):
                files[item["path"]] = str(field_value(pod, item["fieldRef"]["fieldPath"], "")).encode()
        else:
            raise VolumeError(f"projected source {sorted(source)} is not provided by the pod runner")
    return files


def _write_object_volume(api: KubeApi, namespace: str, spec: Mapping[str, Any], directory: Path) -> None:
    kind, ref = ("configmaps", spec["configMap"]) if "configMap" in spec else ("secrets", spec["secret"])
    data = _object_data(api, kind, namespace, ref.get("name") or ref.get("secretName"), bool(ref.get("optional")))
    _write_files(directory, _selected(data, ref.get("items")), ref.get("defaultMode", 0o644))


def _claimed_directory(api: KubeApi, namespace: str, claim: str) -> Path:
    """The directory behind a bound PersistentVolumeClaim (local_cluster.provisioner's hostPath volumes)."""
    found = api.get(f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
    volume = found["spec"].get("volumeName")
    if not volume or found.get("status", {}).get("phase") != "Bound":
        raise VolumeError(f"persistentVolumeClaim {namespace}/{claim} is not bound (yet)")
    host_path = api.get(f"/api/v1/persistentvolumes/{volume}")["spec"].get("hostPath")
    if not host_path:
        raise VolumeError(f"persistentVolume {volume} is not a hostPath volume the pod runner can mount")
    return Path(host_path["path"])


def refresh_volumes(api: KubeApi, pod: Mapping[str, Any], pod_dir: Path) -> None:
    """ConfigMap and Secret volumes follow their objects, as the kubelet syncs them (subPath mounts excepted)."""
    for spec in pod["spec"].get("volumes", []):
        if "configMap" in spec or "secret" in spec:
            _write_object_volume(api, pod["metadata"]["namespace"], spec, pod_dir / "volumes" / spec["name"])


def prepare_volumes(api: KubeApi, pod: Mapping[str, Any], pod_dir: Path) -> dict[str, Volume]:
    """Every volume of the pod, its files written under ``pod_dir/volumes``."""
    namespace, prepared = pod["metadata"]["namespace"], {}
    for spec in pod["spec"].get("volumes", []):
        name, directory = spec["name"], pod_dir / "volumes" / spec["name"]
        if "emptyDir" in spec:
            empty = spec["emptyDir"] or {}
            directory.mkdir(parents=True, exist_ok=True)
            directory.chmod(0o777)  # as the kubelet makes it: any of the pod's users may write
            if empty.get("medium") == "Memory":
                prepared[name] = Volume(directory, quantity_bytes(empty.get("sizeLimit", "64Mi")))
                continue
        elif "configMap" in spec or "secret" in spec:
            _write_object_volume(api, namespace, spec, directory)
        elif "persistentVolumeClaim" in spec:
            directory = _claimed_directory(api, namespace, spec["persistentVolumeClaim"]["claimName"])
        elif "projected" in spec:
            projected = spec["projected"]
            _write_files(directory, _projected(api, pod, projected["sources"]), projected.get("defaultMode", 0o644))
        else:
            raise VolumeError(f"volume {name!r}: {sorted(set(spec) - {'name'})} is not provided by the pod runner")
        prepared[name] = Volume(directory)
    return prepared


def make_sub_paths(containers: list[Mapping[str, Any]], volumes: Mapping[str, Volume]) -> None:
    """A subPath missing from its volume is made as a directory, as the kubelet does (before the volume is
    given to the pod's user)."""
    for container in containers:
        for mount in mounts(container, volumes):
            path = mount.volume.directory / mount.sub_path
            if mount.sub_path and not path.exists():
                path.mkdir(parents=True)


def mounts(container: Mapping[str, Any], volumes: Mapping[str, Volume]) -> list[Mount]:
    return [
        Mount(m["mountPath"], volumes[m["name"]], bool(m.get("readOnly")), m.get("subPath", ""))
        for m in container.get("volumeMounts", [])
    ]


# ---------------------------------------------------------------------------------------------------------------
# Environment


_KEYED_FIELD = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")


def field_value(pod: Mapping[str, Any], path: str, pod_ip: str) -> str:
    """A downward-API field: the ones pods here ask for."""
    meta, spec = pod["metadata"], pod["spec"]
    values = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.hostIP": pod.get("status", {}).get("hostIP", ""),
    }
    keyed = _KEYED_FIELD.match(path)  # metadata.labels['key'] or metadata.annotations['key']: "" when unset
    if keyed:
        return str(meta.get(keyed.group(1), {}).get(keyed.group(2), ""))
    if path not in values:
        raise VolumeError(f"fieldRef {path!r} is not provided by the pod runner")
    return values[path]


def environment(api: KubeApi, pod: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str) -> dict[str, str]:
    """The container's env: literal values, Secret and ConfigMap keys, downward-API fields."""
    namespace, env = pod["metadata"]["namespace"], {}
    for source in container.get("envFrom", []):
        kind, ref = (
            ("secrets", source["secretRef"]) if "secretRef" in source else ("configmaps", source["configMapRef"])
        )
        prefix = source.get("prefix", "")
        data = _object_data(api, kind, namespace, ref["name"], bool(ref.get("optional")))
        env.update({prefix + k: v.decode() for k, v in data.items()})
    for variable in container.get("env", []):
        value_from = variable.get("valueFrom")
        if value_from is None:
            env[variable["name"]] = pods.expand(variable.get("value", ""), env)
        elif "secretKeyRef" in value_from or "configMapKeyRef" in value_from:
            kind, ref = (
                ("secrets", value_from["secretKeyRef"])
                if "secretKeyRef" in value_from
                else ("configmaps", value_from["configMapKeyRef"])
            )
            data = _object_data(api, kind, namespace, ref["name"], bool(ref.get("optional")))
            if ref["key"] in data:
                env[variable["name"]] = data[ref["key"]].decode()
            elif not ref.get("optional"):
                raise VolumeError(f"env {variable['name']}: {kind[:-1]} {ref['name']} has no key {ref['key']!r}")
        elif "fieldRef" in value_from:
            env[variable["name"]] = field_value(pod, value_from["fieldRef"]["fieldPath"], pod_ip)
        else:
            raise VolumeError(f"env {variable['name']}: {sorted(value_from)} is not provided by the pod runner")
    return env


# ---------------------------------------------------------------------------------------------------------------
# Launch


def _nearest_existing(path: PurePosixPath) -> PurePosixPath:
    while not Path(path).exists():
        path = path.parent
    return path


def mount_script(container_mounts: list[Mount], scratch: Path) -> list[str]:
    """Shell lines, run in the container's own mount namespace, that put every volume at its mount path."""
    lines = [f"mount -t tmpfs -o size=64m tmpfs {shlex.quote(str(scratch))}"]
    missing = [PurePosixPath(m.target) for m in container_mounts if not Path(m.target).exists()]
    for index, ancestor in enumerate(sorted({_nearest_existing(target) for target in missing})):
        upper, work = scratch / f"upper{index}", scratch / f"work{index}"
        lines.append(f"mkdir -p {upper} {work}")
        options = f"lowerdir={ancestor},upperdir={upper},workdir={work}"
        lines.append(f"mount -t overlay overlay -o {shlex.quote(options)} {shlex.quote(str(ancestor))}")
    for mount in container_mounts:
        target = shlex.quote(mount.target)
        source = mount.volume.directory / mount.sub_path if mount.sub_path else mount.volume.directory
        if source.is_file():  # a subPath to one key: a file over a file
            parent = shlex.quote(str(PurePosixPath(mount.target).parent))
            lines.append(f"mkdir -p {parent}; [ -e {target} ] || touch {target}")
        else:
            lines.append(f"mkdir -p {target}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {target}")
        if mount.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    return lines


def usable_by_other_users(path: Path) -> bool:
    """Whether a process of another user can run ``path``: every directory above it searchable by others."""
    real = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in real.parents) and real.stat().st_mode & 0o005 == 0o005


NO_PRIVILEGES = ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]


def run_as(pod: Mapping[str, Any], container: Mapping[str, Any], switch_user: bool = True) -> tuple[int, int] | None:
    """The (uid, gid) the container's process runs as, or None where it keeps the runner's (see ``identity``)."""
    security = {**(pod["spec"].get("securityContext") or {}), **(container.get("securityContext") or {})}
    user, group = security.get("runAsUser"), security.get("runAsGroup")
    if user is None or not switch_user:
        return None
    return int(user), int(group if group is not None else user)


def identity(pod: Mapping[str, Any], container: Mapping[str, Any], switch_user: bool = True) -> list[str]:
    """setpriv arguments: the pod's runAsUser/runAsGroup/fsGroup, no capabilities, no new privileges.

    ``switch_user`` is False where the programs' Python lives where no other user can reach it (a pyenv under a
    private home): the process then keeps uid 0, without a single capability."""
    owner = run_as(pod, container, switch_user)
    if owner is None:
        return ["setpriv", *NO_PRIVILEGES, "--"]
    user, group = owner
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    groups = sorted({g for g in (group, fs_group) if g is not None})
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={group}",
        f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups",
        *NO_PRIVILEGES,
        "--",
    ]


def launch_command(
    argv: list[str],
    container_mounts: list[Mount],
    scratch: Path,
    user: list[str],
    pod: list[str],
    working_dir: str = "/",
) -> list[str]:
    """In the pod's namespaces (``pod``: the nsenter that joins them), ``unshare --mount`` around the container's
    mounts and the program, which replaces the shell (exec) in the container's working directory (the image's is
    ``/`` for every image the runner knows)."""
    lines = [*mount_script(container_mounts, scratch), f"cd {shlex.quote(working_dir)}", 'exec "$@"']
    script = "\n".join(["set -e", *lines])
    isolate = ["unshare", "--mount", "--propagation", "private", "--"]
    return [*pod, *isolate, "/bin/sh", "-c", script, "container", *user, *argv]


def own_volumes(volumes: Mapping[str, Volume], pod: Mapping[str, Any], switch_user: bool = True) -> None:
    """Give the volume directories to the user the containers run as (the pod's, with its fsGroup), as the
    kubelet does for fsGroup; a process kept at uid 0 without capabilities needs them its own."""
    security = pod["spec"].get("securityContext") or {}
    owner = security.get("runAsUser") if switch_user else 0
    group = security.get("fsGroup", security.get("runAsGroup")) if switch_user else 0
    if owner is None and group is None:
        return
    for volume in volumes.values():
        for path in [volume.directory, *volume.directory.rglob("*")]:
            os.chown(path, owner if owner is not None else -1, group if group is not None else -1)
