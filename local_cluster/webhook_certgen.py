"""What a kube-webhook-certgen pod runs on the simulated cluster, in place of the image's program.

    python -m local_cluster.webhook_certgen create --host=a,b --namespace=NS --secret-name=NAME [--cert-name=cert]
    python -m local_cluster.webhook_certgen patch --webhook-name=NAME --namespace=NS --secret-name=NAME
        [--patch-failure-policy=Fail|Ignore] [--patch-validating=true] [--patch-mutating=true]

kube-prometheus-stack's and HAMi's admission Jobs run kube-webhook-certgen (jkroepke's, jettech's), whose modules
the Go proxy does not serve; this does what it does, with the same flags, from inside the pod (its service-account
token, through the kubernetes Service): ``create`` makes a CA and a serving certificate for the hosts into a Secret
(keys ``ca``, ``cert``, ``key`` unless renamed) unless the Secret exists; ``patch`` puts that CA into the webhook
configurations' caBundle.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from pathlib import Path

from local_cluster.kube_api import ApiError, KubeApi
from local_cluster.pki import Authority

WEBHOOK_KINDS = {
    "validating": "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
    "mutating": "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
}


def certificate_data(hosts: list[str], names: dict[str, str]) -> dict[str, str]:
    """A new CA and a serving certificate for ``hosts``, base64 under the Secret keys ``names`` gives."""
    with tempfile.TemporaryDirectory() as directory:
        authority = Authority(Path(directory), "webhook-ca")
        serving = authority.issue("serving", hosts[0], server=True, hosts=tuple(hosts))
        files = {"ca": authority.pair.cert, "cert": serving.cert, "key": serving.key}
        return {names[key]: base64.b64encode(path.read_bytes()).decode() for key, path in files.items()}


def create(api: KubeApi, namespace: str, secret_name: str, hosts: list[str], names: dict[str, str]) -> None:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    try:
        api.get(f"{path}/{secret_name}")
        print(f"webhook_certgen: secret {namespace}/{secret_name} exists; nothing to do", flush=True)
        return
    except ApiError as error:
        if error.status != 404:
            raise
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name}, "type": "Opaque"}
    api.request("POST", path, {**secret, "data": certificate_data(hosts, names)})
    print(f"webhook_certgen: created secret {namespace}/{secret_name} for {', '.join(hosts)}", flush=True)


def patch(api: KubeApi, namespace: str, secret_name: str, webhook: str, kinds: list[str], policy: str) -> None:
    ca = api.get(f"/api/v1/namespaces/{namespace}/secrets/{secret_name}")["data"]["ca"]  # base64 already
    for kind in kinds:
        path = f"{WEBHOOK_KINDS[kind]}/{webhook}"
        configuration = api.get(path)
        for hook in configuration.get("webhooks", []):
            hook["clientConfig"]["caBundle"] = ca
            if policy:
                hook["failurePolicy"] = policy
        api.request("PUT", path, configuration)
        print(f"webhook_certgen: patched the {kind} webhook configuration {webhook}", flush=True)


def _flag(value: str) -> bool:
    return value.lower() in ("true", "1", "yes")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m local_cluster.webhook_certgen")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "patch"):
        command = commands.add_parser(name)
        command.add_argument("--namespace", required=True)
        command.add_argument("--secret-name", required=True)
    creating = commands.choices["create"]
    creating.add_argument("--host", required=True, help="comma-separated DNS names")
    for key in ("ca", "cert", "key"):
        creating.add_argument(f"--{key}-name", default=key, help=f"the Secret key of the {key}")
    patching = commands.choices["patch"]
    patching.add_argument("--webhook-name", required=True)
    patching.add_argument("--patch-failure-policy", default="")
    patching.add_argument("--patch-validating", default="true")
    patching.add_argument("--patch-mutating", default="true")
    args = parser.parse_args(argv[1:] if argv and Path(argv[0]).name == "kube-webhook-certgen" else argv)
    api = KubeApi.in_cluster()
    if args.command == "create":
        names = {"ca": args.ca_name, "cert": args.cert_name, "key": args.key_name}
        create(api, args.namespace, args.secret_name, args.host.split(","), names)
    else:
        kinds = [
            k
            for k, wanted in (("validating", args.patch_validating), ("mutating", args.patch_mutating))
            if _flag(wanted)
        ]
        patch(api, args.namespace, args.secret_name, args.webhook_name, kinds, args.patch_failure_policy)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
