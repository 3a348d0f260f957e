"""TLS for the kubelet API: a serving certificate and the client CA that authenticates
callers.

The API server presents a client certificate signed by the cluster CA (its
``--kubelet-client-certificate``); other callers may present none and send a bearer
token instead, so client certificates are optional at the TLS layer but always
verified when given. Without a configured serving certificate a self-signed one is
made for the advertised addresses, as kubelet does: the API server does not verify
kubelet certificates unless it is started with ``--kubelet-certificate-authority``.
"""

from __future__ import annotations

import dataclasses
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vk_fargate import errors, pki


@dataclasses.dataclass(frozen=True)
class Serving:
    """A server-side context and the PEM of the certificate it serves (to trust it)."""

    context: ssl.SSLContext
    cert: bytes


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
        if client_ca is not None:
            context.load_verify_locations(cafile=client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        where = ", ".join(str(p) for p in (cert_file, key_file, client_ca) if p is not None)
        raise errors.ConfigError(f"cannot load the kubelet TLS files ({where}): {exc}") from exc
    return Serving(context, cert)
