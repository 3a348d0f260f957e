"""Client certificates checked after the handshake, as the API server's x509
authenticator checks them for the kubelet: signed by a client CA, within its validity,
meant for client authentication. The user is the subject's CN, the groups its Os.

The TLS layer accepts any certificate (``tls``), so this check is the only one: a
certificate it rejects authenticates nobody, and the request may still carry a bearer
token, as Kubernetes' union of authenticators allows. Only a leaf signed directly by a
client CA is accepted (Python 3.11's ``ssl`` does not hand over the chain the client
sent); the cluster CA signs the API server's kubelet client certificate directly.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from cryptography import exceptions, x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vk_fargate.k8s import reviews


class Rejected(Exception):
    """The certificate authenticates nobody; the message says why, in Go's words."""


def identity(
    der: bytes, cas: Sequence[x509.Certificate], now: datetime.datetime
) -> reviews.Identity:
    """The identity in the client certificate ``der``, or ``Rejected``."""
    try:
        leaf = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise Rejected(f"x509: malformed certificate: {exc}") from None
    if not any(_signed_by(leaf, ca) for ca in cas):
        raise Rejected("x509: certificate signed by unknown authority")
    if now < leaf.not_valid_before_utc or now > leaf.not_valid_after_utc:
        raise Rejected(
            "x509: certificate has expired or is not yet valid: current time "
            f"{now:%Y-%m-%dT%H:%M:%SZ} is outside {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ}"
            f" to {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
        )
    try:
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and not {
        ExtendedKeyUsageOID.CLIENT_AUTH,
        ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
    } & set(usages):
        raise Rejected("x509: certificate specifies an incompatible key usage")
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    user = str(names[0].value) if names else ""
    if not user:
        raise Rejected("x509: the certificate's subject has no common name")
    groups = tuple(
        str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    )
    return reviews.Identity(user=user, groups=groups)


def _signed_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    if leaf.issuer != ca.subject:
        return False
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True
