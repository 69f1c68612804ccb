"""Fresh PKI for one simulated cluster: a cluster CA, the API server's serving certificate, client certificates
for the admin and each control-plane component, the aggregation layer's front proxy and the ServiceAccount key."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=2)  # a simulated cluster lives for one session
SERVICE_IP = "10.96.0.1"  # first address of the service CIDR: the in-cluster `kubernetes` Service


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Pair:
    pair = Pair(directory / f"{name}.crt", directory / f"{name}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pair.key.chmod(0o600)
    return pair


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        parts.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(parts)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


class Authority:
    """A self-signed CA that issues leaf certificates into one folder."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self._key = _key()
        self._subject = _name(name)
        cert = (
            _builder(self._subject, self._subject, self._key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.pair = _write(directory, name, self._key, cert)

    def issue(
        self,
        name: str,
        common_name: str,
        organization: str | None = None,
        *,
        server: bool = False,
        hosts: tuple[str, ...] = (),
    ) -> Pair:
        key = _key()
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            _builder(_name(common_name, organization), self._subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(self.directory, name, key, builder.sign(self._key, hashes.SHA256()))


@dataclass(frozen=True)
class ClusterPki:
    ca: Pair
    apiserver: Pair
    admin: Pair
    controller_manager: Pair
    scheduler: Pair
    kube_proxy: Pair
    kwok: Pair
    front_proxy_ca: Pair
    front_proxy_client: Pair
    service_account_key: Path
    service_account_public: Path


def create_pki(directory: Path) -> ClusterPki:
    """Every certificate and key the control plane needs, in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Authority(directory, "cluster-ca")
    front_proxy = Authority(directory, "front-proxy-ca")
    sa_key = _key()
    sa_private = directory / "service-account.key"
    sa_private.write_bytes(
        sa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    sa_public = directory / "service-account.pub"
    sa_public.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    hosts = (
        "127.0.0.1",
        SERVICE_IP,
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    )
    return ClusterPki(
        ca=ca.pair,
        apiserver=ca.issue("apiserver", "kube-apiserver", server=True, hosts=hosts),
        admin=ca.issue("admin", "kubernetes-admin", "system:masters"),
        controller_manager=ca.issue("controller-manager", "system:kube-controller-manager"),
        scheduler=ca.issue("scheduler", "system:kube-scheduler"),
        kube_proxy=ca.issue("kube-proxy", "system:kube-proxy"),  # bound to system:node-proxier by default
        # kwok plays every kubelet (node status, leases, pod status): it acts as a cluster administrator.
        kwok=ca.issue("kwok", "kwok", "system:masters"),
        front_proxy_ca=front_proxy.pair,
        front_proxy_client=front_proxy.issue("front-proxy-client", "front-proxy-client"),
        service_account_key=sa_private,
        service_account_public=sa_public,
    )
