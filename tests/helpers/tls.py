"""
TLS for tests: a private certificate authority, and a ``redis-server`` that speaks
only TLS.

:func:`make_pki` writes a CA and, signed by it, a server certificate (for
``127.0.0.1`` and ``localhost`` unless told otherwise) and a client certificate,
with the ``cryptography`` package. :class:`TlsRedisServer` is a
:class:`~tests.helpers.processes.RedisServer` on a TLS port only (``--port 0``);
the distribution's ``redis-server`` must be built with TLS, else starting it raises
:class:`TlsUnsupported` (a fixture skips on it, saying so).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.helpers.processes import RedisServer, TestSetupError

__all__ = ["Pki", "TlsRedisServer", "TlsUnsupported", "make_pki"]


class TlsUnsupported(TestSetupError):
    """This ``redis-server`` was built without TLS."""


@dataclass(frozen=True)
class Pki:
    """PEM files: the CA, the server's certificate and key, a client's certificate and key."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    *,
    ca: bool = False,
    names: tuple[str, ...] = (),
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if names:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def make_pki(folder: Path, server_names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> Pki:
    """A CA, a server certificate for ``server_names`` and a client certificate, in ``folder``."""
    pki = Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("quotes test CA")
    ca = _issue(ca_key, ca_name, ca_key, ca_name, ca=True)
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, subject, names, usage in (
        (pki.server_cert, pki.server_key, "redis", server_names, ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.client_cert, pki.client_key, "quotes-server", (), ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(ca_key, ca_name, key, _name(subject), names=names, usage=usage)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return pki


class TlsRedisServer(RedisServer):
    """
    A private ``redis-server`` listening only on a TLS port; ``auth_clients`` makes it
    ask for a client certificate signed by the CA. The helpers (``ping``, ``command``,
    ``publish``) speak TLS with the CA and the client certificate (whatever host name
    the server's certificate names).
    """

    def __init__(self, pki: Pki, *, auth_clients: bool = False) -> None:
        super().__init__()
        self.pki = pki
        self.auth_clients = auth_clients

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = super().argv()
        argv[argv.index("--port") + 1] = "0"  # no plain-text port at all
        return [
            *argv,
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.pki.server_cert),
            "--tls-key-file", str(self.pki.server_key),
            "--tls-ca-cert-file", str(self.pki.ca),
            "--tls-auth-clients", "yes" if self.auth_clients else "no",
        ]  # fmt: skip

    def connect(self, timeout: float) -> socket.socket:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        context.check_hostname = False  # the certificate may name another host, on purpose
        context.load_cert_chain(self.pki.client_cert, self.pki.client_key)
        raw = super().connect(timeout)
        try:
            return context.wrap_socket(raw, server_hostname="127.0.0.1")
        except BaseException:
            raw.close()
            raise

    def _ready(self) -> bool:
        try:
            return super()._ready()
        except TestSetupError as exc:
            if "tls" in str(exc).lower() and "bad directive" in str(exc).lower():
                raise TlsUnsupported(
                    f"{self.binary} was built without TLS (it refuses --tls-port): {exc}"
                ) from None
            raise
