"""The dev PKI issues certificates that chain to their CA with the right names."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vk_fargate import pki


def test_leaf_is_signed_by_ca_with_sans_and_usages() -> None:
    ca = pki.new_ca()
    leaf = pki.issue(ca, "kube-apiserver", hosts=("127.0.0.1", "kubernetes"), server=True)
    ca_cert = x509.load_pem_x509_certificate(ca.cert)
    cert = x509.load_pem_x509_certificate(leaf.cert)
    cert.verify_directly_issued_by(ca_cert)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["kubernetes"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_cert_carries_groups_as_organizations() -> None:
    ca = pki.new_ca()
    admin = pki.issue(ca, "kubernetes-admin", organizations=("system:masters",), client=True)
    subject = x509.load_pem_x509_certificate(admin.cert).subject
    assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "kubernetes-admin"
    assert [a.value for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]


def test_ca_may_sign_but_leaf_may_not() -> None:
    ca = pki.new_ca()
    leaf = pki.issue(ca, "x", client=True)
    ca_constraints = x509.load_pem_x509_certificate(ca.cert).extensions.get_extension_for_class(
        x509.BasicConstraints
    )
    leaf_constraints = x509.load_pem_x509_certificate(leaf.cert).extensions.get_extension_for_class(
        x509.BasicConstraints
    )
    assert ca_constraints.value.ca is True
    assert leaf_constraints.value.ca is False


def test_signing_key_public_half_matches_private() -> None:
    from cryptography.hazmat.primitives import serialization

    pair = pki.new_signing_key()
    private = serialization.load_pem_private_key(pair.key, password=None)
    public = serialization.load_pem_public_key(pair.cert)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()
