"""The environment a command gets inside the simulated cluster: the built toolchain first on PATH (the program's
virtualenv comes from Pulumi.yaml's runtime options, as for any user's CLI), a Pulumi home and a file backend of the
cluster's own (state lives and dies with the cluster), and throw-away credentials for the local S3 store."""

from __future__ import annotations

import os
import subprocess

from local_cluster.control_plane import BIN, ROOT, Cluster, ClusterError

PULUMI_HOME = ROOT / ".cache" / "pulumi-home"  # plugins installed by `make toolchain`; kept between clusters
LOCAL_PASSPHRASE = "local-cluster-only"  # encrypts the local stack's secrets; never used for a real stack


def command_environment(cluster: Cluster) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
            "KUBECONFIG": str(cluster.kubeconfig),
            "PULUMI_HOME": str(PULUMI_HOME),
            "PULUMI_BACKEND_URL": f"file://{cluster.directory / 'state'}",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_REGION": "us-east-1",
            "LOCAL_CLUSTER_DIR": str(cluster.directory),
            "LOCAL_CLUSTER_S3": cluster.s3_endpoint,
        }
    )
    env.setdefault("PULUMI_CONFIG_PASSPHRASE", LOCAL_PASSPHRASE)
    env.pop("AWS_PROFILE", None)
    return env


def prepare_pulumi(env: dict[str, str], stack: str) -> None:
    """A fresh stack in the cluster's backend, so `pulumi stack select <stack>` works at once."""
    (ROOT / ".cache").mkdir(exist_ok=True)
    (PULUMI_HOME).mkdir(parents=True, exist_ok=True)
    state = env["PULUMI_BACKEND_URL"].removeprefix("file://")
    os.makedirs(state, exist_ok=True)
    result = subprocess.run(
        ["pulumi", "stack", "init", stack, "--non-interactive"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ClusterError(f"pulumi stack init {stack} failed: {result.stderr.strip() or result.stdout.strip()}")
