"""TLS for the kubelet API: a serving certificate and the client CA that authenticates
callers.

The API server presents a client certificate signed by the cluster CA (its
``--kubelet-client-certificate``); other callers may present none and send a bearer
token instead. As the kubelet (Go's ``tls.RequestClientCert``), the handshake asks for
a certificate and accepts any: ``auth`` verifies it against the client CA afterwards,
so a certificate from another CA gets ``401 Unauthorized`` (or falls back to a bearer
token), not a failed handshake. Python's ``ssl`` has no switch for that, so
``_accept_any_certificate`` installs an accept-all verify callback on the OpenSSL
context through ctypes, after checking that it has found the right context; where that
check fails, the context verifies during the handshake as before (logged).

Without a configured serving certificate a self-signed one is made for the advertised
addresses, as kubelet does: the API server does not verify kubelet certificates unless
it is started with ``--kubelet-certificate-authority``.
"""

from __future__ import annotations

import _ssl
import ctypes
import dataclasses
import logging
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509

from vk_fargate import errors, pki

log = logging.getLogger(__name__)

SSL_VERIFY_PEER = 0x01
_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_ACCEPT_ANY = _VerifyCallback(lambda _ok, _store: 1)  # kept alive: OpenSSL holds the pointer


@dataclasses.dataclass(frozen=True)
class Serving:
    """A server-side context and the PEM of the certificate it serves (to trust it)."""

    context: ssl.SSLContext
    cert: bytes
    # The CAs a client certificate must be signed by (empty: certificates are not asked for).
    client_cas: tuple[x509.Certificate, ...] = ()


def self_signed(
    hosts: Sequence[str], *, common_name: str = "vk-fargate-kubelet"
) -> tuple[bytes, bytes]:
    """A self-signed serving certificate for ``hosts`` (IPs or DNS names): (cert, key) PEM."""
    if not hosts:
        raise errors.ConfigError("a self-signed serving certificate needs at least one host")
    pair = pki.self_signed(tuple(hosts), common_name)
    return pair.cert, pair.key


def server_context(
    *,
    client_ca: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    hosts: Sequence[str] = ("127.0.0.1",),
) -> Serving:
    """A TLS 1.2+ server context.

    Serves ``cert_file``/``key_file`` when given, else a self-signed certificate for
    ``hosts``. Client certificates signed by ``client_ca`` are requested and verified
    (a caller without one may still authenticate with a bearer token); without
    ``client_ca`` none are requested.
    """
    if (cert_file is None) != (key_file is None):
        raise errors.ConfigError(
            "give both the kubelet serving certificate and its key, or neither"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if cert_file is not None and key_file is not None:
            context.load_cert_chain(cert_file, key_file)
            cert = cert_file.read_bytes()
        else:
            cert, key = self_signed(hosts)
            with tempfile.TemporaryDirectory(prefix="vk-fargate-kubelet-tls-") as tmp:
                (Path(tmp) / "tls.crt").write_bytes(cert)
                key_path = Path(tmp) / "tls.key"
                key_path.touch(mode=0o600)
                key_path.write_bytes(key)
                context.load_cert_chain(Path(tmp) / "tls.crt", key_path)
        client_cas: tuple[x509.Certificate, ...] = ()
        if client_ca is not None:
            client_cas = tuple(x509.load_pem_x509_certificates(client_ca.read_bytes()))
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
            _accept_any_certificate(context)
    except (OSError, ssl.SSLError, ValueError) as exc:
        where = ", ".join(str(p) for p in (cert_file, key_file, client_ca) if p is not None)
        raise errors.ConfigError(f"cannot load the kubelet TLS files ({where}): {exc}") from exc
    return Serving(context, cert, client_cas)


def _ssl_ctx(context: ssl.SSLContext) -> int | None:
    """The ``SSL_CTX *`` behind ``context`` (CPython keeps it right after the object
    header), or None unless OpenSSL's view of the verify mode follows Python's both ways."""
    lib = ctypes.CDLL(_ssl.__file__)
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    pointer = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    if not pointer:
        return None
    wanted = context.verify_mode
    seen = []
    for mode in (ssl.CERT_REQUIRED, ssl.CERT_NONE):
        context.verify_mode = mode
        seen.append(lib.SSL_CTX_get_verify_mode(pointer))
    context.verify_mode = wanted
    return pointer if seen == [3, 0] else None


def _accept_any_certificate(context: ssl.SSLContext) -> bool:
    """Ask callers for a certificate and accept whichever they send (verified later by
    ``auth``); False, with the handshake still verifying, where that cannot be done."""
    try:
        pointer = _ssl_ctx(context)
        if pointer is None:
            raise OSError("the OpenSSL context was not where CPython keeps it")
        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_set_verify.restype = None
        lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VerifyCallback]
        lib.SSL_CTX_set_verify(pointer, SSL_VERIFY_PEER, _ACCEPT_ANY)
    except (OSError, AttributeError) as exc:
        log.warning(
            "client certificates from another CA will fail the TLS handshake instead of "
            "answering 401: %s",
            exc,
        )
        return False
    return True
