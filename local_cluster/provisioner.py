"""The simulated cluster's storage: ``python -m local_cluster.provisioner --kubeconfig FILE --dir DIR``.

Prod's StorageClasses name the EBS CSI driver, which does not run here. This provisions for every claim an
external provisioner is asked to serve (the ``volume.kubernetes.io/storage-provisioner`` annotation the PV
controller sets), once the scheduler has picked the pod's node for a WaitForFirstConsumer class: a hostPath
PersistentVolume under DIR with the claim's size and access modes, pinned to that node and bound to the claim.
When the claim goes, its volume is Released; volumes whose class says Delete are then deleted with their files,
as the driver deletes the EBS volume. The pod runner mounts the directory into the pods that claim it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from local_cluster.kube_api import ApiError, KubeApi, poll_until_terminated

PROVISIONER_ANNOTATION = "volume.kubernetes.io/storage-provisioner"
SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"
OURS = "local-cluster.inference-platform/provisioned"  # the volumes this made, and may delete


def wanted(claim: dict[str, Any], classes: dict[str, dict[str, Any]]) -> bool:
    """A pending claim for an external provisioner, whose node is known if its class waits for the consumer."""
    annotations = claim["metadata"].get("annotations") or {}
    if claim.get("status", {}).get("phase") != "Pending" or claim["spec"].get("volumeName"):
        return False
    if PROVISIONER_ANNOTATION not in annotations:
        return False
    storage_class = classes.get(claim["spec"].get("storageClassName") or "", {})
    waits = storage_class.get("volumeBindingMode") == "WaitForFirstConsumer"
    return not waits or SELECTED_NODE_ANNOTATION in annotations


def volume_for(claim: dict[str, Any], directory: Path, reclaim_policy: str) -> dict[str, Any]:
    """The PersistentVolume that serves ``claim``: a directory of its own, on the node the scheduler picked."""
    meta = claim["metadata"]
    name = f"pvc-{meta['uid']}"
    annotations = meta.get("annotations") or {}
    spec: dict[str, Any] = {
        "capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
        "accessModes": claim["spec"]["accessModes"],
        "persistentVolumeReclaimPolicy": reclaim_policy,
        "storageClassName": claim["spec"].get("storageClassName", ""),
        "volumeMode": claim["spec"].get("volumeMode", "Filesystem"),
        "claimRef": {"namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
        "hostPath": {"path": str(directory / name), "type": "DirectoryOrCreate"},
    }
    if SELECTED_NODE_ANNOTATION in annotations:
        term = {"key": "kubernetes.io/hostname", "operator": "In", "values": [annotations[SELECTED_NODE_ANNOTATION]]}
        spec["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [term]}]}}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": annotations[PROVISIONER_ANNOTATION], OURS: "true"},
        },
        "spec": spec,
    }


def tick(api: KubeApi, directory: Path) -> None:
    classes = {c["metadata"]["name"]: c for c in api.get("/apis/storage.k8s.io/v1/storageclasses")["items"]}
    for claim in api.get("/api/v1/persistentvolumeclaims")["items"]:
        if wanted(claim, classes):
            storage_class = classes.get(claim["spec"].get("storageClassName") or "", {})
            volume = volume_for(claim, directory, storage_class.get("reclaimPolicy", "Delete"))
            Path(volume["spec"]["hostPath"]["path"]).mkdir(parents=True, exist_ok=True)
            try:
                api.request("POST", "/api/v1/persistentvolumes", volume)
                print(f"provisioner: {volume['metadata']['name']} for {claim['metadata']['name']}", flush=True)
            except ApiError as error:
                if error.status != 409:  # made on an earlier tick, not yet bound
                    raise
    for volume in api.get("/api/v1/persistentvolumes")["items"]:
        released = volume.get("status", {}).get("phase") == "Released"
        ours = (volume["metadata"].get("annotations") or {}).get(OURS) == "true"
        if released and ours and volume["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            api.request("DELETE", f"/api/v1/persistentvolumes/{volume['metadata']['name']}")
            shutil.rmtree(volume["spec"]["hostPath"]["path"], ignore_errors=True)
            print(f"provisioner: deleted {volume['metadata']['name']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cluster.provisioner", description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="where the volumes' directories go")
    args = parser.parse_args(argv)
    api = KubeApi.from_kubeconfig(args.kubeconfig)
    return poll_until_terminated("provisioner", lambda: tick(api, args.dir))


if __name__ == "__main__":
    sys.exit(main())
