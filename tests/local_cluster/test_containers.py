"""A pod's container as a process: env, volumes at their mount paths, user (local_cluster/containers.py)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from local_cluster import containers as ctr
from local_cluster.kube_api import ApiError


class FakeApi:
    """The four reads a pod's volumes and env make, answered from dicts."""

    def __init__(self) -> None:
        self.secrets = {"s3-keys": {"AWS_ACCESS_KEY_ID": "AKIA", "AWS_SECRET_ACCESS_KEY": "shh"}}
        self.config_maps = {"settings": {"mode": "fast", "rules.yaml": "groups: []\n"}}
        self.tokens: list[tuple[str, str, list[str], int]] = []

    def get(self, path: str) -> dict[str, Any]:
        kind, name = path.split("/")[-2:]
        if name not in {"secrets": self.secrets, "configmaps": self.config_maps}[kind]:
            raise ApiError(404, f"{kind} {name} not found")
        if kind == "secrets":
            return {"data": {k: base64.b64encode(v.encode()).decode() for k, v in self.secrets[name].items()}}
        return {"data": self.config_maps[name]}

    def service_account_token(self, namespace: str, account: str, audiences: list[str], seconds: int) -> str:
        self.tokens.append((namespace, account, audiences, seconds))
        return "a.jwt.token"


POD: dict[str, Any] = {
    "metadata": {"name": "triton-0", "namespace": "triton", "uid": "u-1", "labels": {"app": "triton"}},
    "spec": {
        "nodeName": "gpu-node-1",
        "serviceAccountName": "triton",
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000},
        "volumes": [
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}},
            {"name": "cache", "emptyDir": {}},
            {"name": "rules", "configMap": {"name": "settings", "items": [{"key": "rules.yaml", "path": "r.yaml"}]}},
            {"name": "keys", "secret": {"secretName": "s3-keys", "defaultMode": 0o400}},
            {
                "name": "token",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "audience": "sts.amazonaws.com"}},
                        {
                            "downwardAPI": {
                                "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
                            }
                        },
                    ]
                },
            },
        ],
    },
}


def test_quantities_are_the_bytes_kubernetes_means() -> None:
    assert [ctr.quantity_bytes(q) for q in ("2Gi", "64Mi", "1G", "512")] == [2 * 2**30, 64 * 2**20, 10**9, 512]


def test_volumes_are_written_from_the_api_and_memory_emptydirs_are_sized_tmpfs(tmp_path: Path) -> None:
    api = FakeApi()
    volumes = ctr.prepare_volumes(api, POD, tmp_path)
    assert volumes["dshm"] == ctr.Volume(tmp_path / "volumes/dshm", 2 * 2**30)
    assert volumes["cache"].directory.is_dir() and volumes["cache"].tmpfs_bytes is None
    assert (tmp_path / "volumes/rules/r.yaml").read_text() == "groups: []\n"
    assert not (tmp_path / "volumes/rules/mode").exists()  # items select keys
    key = tmp_path / "volumes/keys/AWS_SECRET_ACCESS_KEY"
    assert key.read_text() == "shh" and key.stat().st_mode & 0o777 == 0o400
    assert (tmp_path / "volumes/token/token").read_text() == "a.jwt.token"
    assert (tmp_path / "volumes/token/namespace").read_text() == "triton"
    assert api.tokens == [("triton", "triton", ["sts.amazonaws.com"], ctr.DEFAULT_TOKEN_SECONDS)]


def test_an_unsupported_volume_is_refused_by_name(tmp_path: Path) -> None:
    pod = {**POD, "spec": {**POD["spec"], "volumes": [{"name": "data", "iscsi": {"targetPortal": "x"}}]}}
    with pytest.raises(ctr.VolumeError, match=r"volume 'data': \['iscsi'\]"):
        ctr.prepare_volumes(FakeApi(), pod, tmp_path)


def test_a_missing_object_holds_the_pod_unless_optional_and_updates_reach_the_files(tmp_path: Path) -> None:
    def pod(optional: bool) -> dict[str, Any]:
        volume = {"name": "later", "configMap": {"name": "later", "optional": optional}}
        return {**POD, "spec": {**POD["spec"], "volumes": [volume]}}

    api = FakeApi()
    with pytest.raises(ctr.VolumeError, match="configmap triton/later does not exist"):
        ctr.prepare_volumes(api, pod(False), tmp_path)
    assert ctr.prepare_volumes(api, pod(True), tmp_path)["later"].directory == tmp_path / "volumes/later"
    api.config_maps["later"] = {"k": "1"}
    ctr.refresh_volumes(api, pod(False), tmp_path)
    assert (tmp_path / "volumes/later/k").read_text() == "1"


def test_env_resolves_secret_and_config_map_keys_and_the_downward_api() -> None:
    container = {
        "name": "triton",
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "AWS_DEFAULT_REGION", "value": "us-east-1"},
            {
                "name": "AWS_ACCESS_KEY_ID",
                "valueFrom": {"secretKeyRef": {"name": "s3-keys", "key": "AWS_ACCESS_KEY_ID"}},
            },
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "ADDRESS", "value": "$(POD_IP):8000"},  # an earlier variable, expanded as the kubelet does
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "ZONE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.annotations['zone']"}}},  # unset
        ],
    }
    env = ctr.environment(FakeApi(), POD, container, "10.244.128.7")
    assert env == {
        "CFG_mode": "fast",
        "CFG_rules.yaml": "groups: []\n",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIA",
        "POD_IP": "10.244.128.7",
        "NODE": "gpu-node-1",
        "ADDRESS": "10.244.128.7:8000",
        "APP": "triton",
        "ZONE": "",
    }


def test_the_pod_user_and_groups_apply_unless_python_is_private_to_root() -> None:
    user = ctr.identity(POD, {"name": "c"})
    assert user[:4] == ["setpriv", "--reuid=1000", "--regid=1000", "--groups=1000,2000"]
    assert "--no-new-privs" in user and "--bounding-set=-all" in user
    assert ctr.identity(POD, {"name": "c", "securityContext": {"runAsUser": 7}})[1] == "--reuid=7"
    assert ctr.identity(POD, {"name": "c"}, switch_user=False) == ["setpriv", *ctr.NO_PRIVILEGES, "--"]


def test_a_path_under_a_private_home_is_not_usable_by_other_users(tmp_path: Path) -> None:
    private = tmp_path / "home"
    (private / "bin").mkdir(parents=True)
    program = private / "bin" / "python"
    program.write_text("")
    program.chmod(0o755)
    private.chmod(0o700)
    assert not ctr.usable_by_other_users(program)
    private.chmod(0o755)
    assert ctr.usable_by_other_users(program) == all(p.stat().st_mode & 0o001 for p in program.resolve().parents)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="mount namespaces need root")
def test_a_container_sees_its_volumes_where_it_expects_them_and_the_machine_is_untouched(tmp_path: Path) -> None:
    volumes = ctr.prepare_volumes(FakeApi(), POD, tmp_path / "pod")
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "rules", "mountPath": "/etc/inference-platform-test/rules", "readOnly": True},
            {"name": "cache", "mountPath": "/var/lib/inference-platform-test/cache"},
            {"name": "rules", "mountPath": "/etc/inference-platform-test/one/r.yaml", "subPath": "r.yaml"},
        ],
    }
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    probe = (
        "df -B1 --output=size /dev/shm | tail -1; cat /etc/inference-platform-test/rules/r.yaml; "
        "touch /etc/inference-platform-test/rules/x 2>/dev/null && echo writable || echo read-only; "
        "echo hello > /var/lib/inference-platform-test/cache/f; grep Cap[EP][fr][fm] /proc/self/status; "
        "cat /etc/inference-platform-test/one/r.yaml"
    )
    # The pod's mount namespace, with its Memory emptyDir a tmpfs, as local_cluster.sandbox makes it.
    dshm = volumes["dshm"]
    pod_mounts = f"mount -t tmpfs -o size={dshm.tmpfs_bytes} tmpfs {dshm.directory}"
    pod = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", f'{pod_mounts} && exec "$@"', "pod"]
    command = ctr.launch_command(
        ["sh", "-c", probe], ctr.mounts(container, volumes), scratch, ["setpriv", *ctr.NO_PRIVILEGES, "--"], pod
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.split("\n")
    assert int(lines[0]) == 2 * 2**30
    assert lines[1:3] == ["groups: []", "read-only"]
    assert len(lines[3:5]) == 2 and all(line.endswith("0000000000000000") for line in lines[3:5]), (
        lines
    )  # no capabilities at all
    assert lines[5] == "groups: []"  # one key of the ConfigMap, mounted by subPath as a file
    assert (tmp_path / "pod/volumes/cache/f").read_text() == "hello\n"  # the emptyDir, seen from outside
    assert not Path("/etc/inference-platform-test").exists() and not Path("/var/lib/inference-platform-test").exists()
