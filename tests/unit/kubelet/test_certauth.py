"""Client certificates are checked after the handshake, as the API server's x509
authenticator checks them."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from vk_fargate import pki
from vk_fargate.kubelet import certauth


def now() -> datetime.datetime:
    """The time now: certificates are issued as each test runs (not at collection)."""
    return datetime.datetime.now(datetime.UTC)


CA = pki.new_ca("cluster-ca")
CAS = (x509.load_pem_x509_certificate(CA.cert),)


def der(pair: pki.KeyPair) -> bytes:
    cert = x509.load_pem_x509_certificate(pair.cert)
    return cert.public_bytes(serialization.Encoding.DER)


def test_subject_gives_user_and_groups() -> None:
    leaf = pki.issue(
        CA, "kube-apiserver-kubelet-client", organizations=("system:masters", "ops"), client=True
    )
    found = certauth.identity(der(leaf), CAS, now())
    assert found.user == "kube-apiserver-kubelet-client"
    assert found.groups == ("system:masters", "ops")


def test_another_ca_is_rejected_even_with_the_same_name() -> None:
    impostor = pki.new_ca("cluster-ca")
    leaf = pki.issue(impostor, "admin", client=True)
    with pytest.raises(certauth.Rejected, match="signed by unknown authority"):
        certauth.identity(der(leaf), CAS, now())


def test_outside_its_validity_is_rejected() -> None:
    leaf = pki.issue(CA, "admin", client=True)
    with pytest.raises(certauth.Rejected, match="expired or is not yet valid"):
        certauth.identity(der(leaf), CAS, now() + datetime.timedelta(days=400))


def test_a_server_only_certificate_is_rejected() -> None:
    leaf = pki.issue(CA, "admin", server=True)
    with pytest.raises(certauth.Rejected, match="incompatible key usage"):
        certauth.identity(der(leaf), CAS, now())


def test_garbage_and_no_common_name_are_rejected() -> None:
    with pytest.raises(certauth.Rejected, match="malformed"):
        certauth.identity(b"not a certificate", CAS, now())
    key = ec.generate_private_key(ec.SECP256R1())
    ca_key = serialization.load_pem_private_key(CA.key, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    nameless = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ops")]))
        .issuer_name(CAS[0].subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now() - datetime.timedelta(hours=1))
        .not_valid_after(now() + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )
    with pytest.raises(certauth.Rejected, match="no common name"):
        certauth.identity(nameless.public_bytes(serialization.Encoding.DER), CAS, now())


def test_no_client_ca_trusts_nothing() -> None:
    with pytest.raises(certauth.Rejected, match="unknown authority"):
        certauth.identity(der(pki.issue(CA, "admin", client=True)), (), now())
