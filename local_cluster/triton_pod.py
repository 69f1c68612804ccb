"""What a Triton pod runs on the simulated cluster, in place of the image's ``tritonserver``.

    python -m local_cluster.triton_pod tritonserver --model-repository=s3://... [every other flag of the pod]

The CPU Triton here (the ``nvidia-pytriton`` wheel, 2.51) has neither the ONNX Runtime nor the TensorRT backend,
so this does what the image's Triton would do with an S3 repository - read it with the pod's own credentials (its
env, as Triton's S3 client does) into ``TRITON_AWS_MOUNT_DIRECTORY`` - then serves every model through the
python-backend ONNX Runtime wrapper ``local_serving`` generates (the same ``model.onnx``, names, tensors, batching).
Every other flag is the pod's own (it listens in the pod's own network namespace, as in the image).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import boto3

from local_serving.installation import find_triton
from local_serving.wrappers import write_serving_repository

# Triton's S3 syntax: s3://[http(s)://]host:port/bucket/prefix for a custom endpoint, else s3://bucket/prefix.
_ENDPOINT_URI = re.compile(
    r"^s3://(?P<scheme>https?://)?(?P<host>[^/:]+):(?P<port>\d+)/(?P<bucket>[^/]+)/?(?P<key>.*)$"
)
_AWS_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")


def split_s3_uri(uri: str) -> tuple[str | None, str, str]:
    """(endpoint URL or None for AWS, bucket, key prefix) of a ``--model-repository`` value."""
    match = _ENDPOINT_URI.match(uri)
    if match:
        scheme = "https://" if match.group("scheme") == "https://" else "http://"
        return f"{scheme}{match.group('host')}:{match.group('port')}", match.group("bucket"), match.group("key")
    match = _AWS_URI.match(uri)
    if not match:
        raise SystemExit(f"triton_pod: --model-repository {uri!r} is not an s3:// URI Triton reads")
    return None, match.group("bucket"), match.group("key")


def download(uri: str, target: Path) -> Path:
    """Every object under the repository's prefix, read with the credentials in this process's env."""
    endpoint, bucket, prefix = split_s3_uri(uri)
    client = boto3.client("s3", endpoint_url=endpoint, region_name=os.environ.get("AWS_DEFAULT_REGION"))
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    count = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            path = target / item["Key"][len(prefix) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, item["Key"], str(path))
            count += 1
    if count == 0:
        raise SystemExit(f"triton_pod: {uri} holds no objects")
    print(f"triton_pod: read {count} objects of {uri}", flush=True)
    return target


def server_command(args: list[str], repository: Path, work: Path) -> list[str]:
    """The pod's tritonserver flags, served from the wrapped repository."""
    installation = find_triton()
    kept = [a for a in args if not a.startswith(("--model-repository=", "--backend-directory="))]
    return [
        str(installation.server_binary),
        f"--model-repository={repository}",
        f"--backend-directory={installation.make_backend_directory(work / 'backends')}",
        *kept,
    ]


def main(argv: list[str]) -> None:
    args = argv[1:] if argv and Path(argv[0]).name == "tritonserver" else argv
    (uri,) = [a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")]
    work = Path(os.environ.get("TRITON_AWS_MOUNT_DIRECTORY") or tempfile.mkdtemp(prefix="triton-"))
    for previous in ("repository", "serving", "backends"):  # a restarted container finds its emptyDir as it left it
        shutil.rmtree(work / previous, ignore_errors=True)
    source = download(uri, work / "repository") if uri.startswith("s3://") else Path(uri)
    served = write_serving_repository(source, work / "serving")
    print(f"triton_pod: serving {', '.join(served)} through the python backend's ONNX Runtime wrapper", flush=True)
    command = server_command(args, work / "serving", work)
    environment = find_triton().server_environment()
    os.execve(command[0], command, environment)


if __name__ == "__main__":
    main(sys.argv[1:])
