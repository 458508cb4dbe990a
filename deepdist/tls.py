"""TLS for the model server without a CA: a self-signed certificate per DeepDist context, pinned.

The driver makes a fresh key and certificate when a context starts; the certificate's SHA-256
fingerprint travels to executors inside the task closure, next to the bearer secret (Spark
ships closures over its own RPC, which its ``spark.authenticate``/``spark.io.encryption``
settings protect). A client completes the TLS handshake without any CA check, then compares the
server certificate's fingerprint with the pinned one and sends nothing, not even the secret,
when they differ. There is no certificate to distribute, renew or trust.

Example::

    >>> cert, key, fingerprint = self_signed("10.0.0.5")         # doctest: +SKIP
    >>> server_ctx = server_context(cert, key)                    # doctest: +SKIP
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import os
import ssl
import tempfile

from .errors import AuthenticationError


def self_signed(host: str) -> tuple[bytes, bytes, str]:
    """``(certificate PEM, key PEM, SHA-256 fingerprint hex)`` of a fresh ECDSA P-256 certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "deepdist model server")])
    try:
        alt = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host or "localhost")
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem, fingerprint(cert.public_bytes(serialization.Encoding.DER))


def fingerprint(der: bytes) -> str:
    """The SHA-256 of a DER certificate, as lowercase hex."""
    return hashlib.sha256(der).hexdigest()


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS 1.2+ server context holding this certificate and key (written to a private
    temporary file only for as long as ``ssl`` takes to load them)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.num_tickets = 0  # clients keep their connection: no session to resume
    fd, path = tempfile.mkstemp(prefix="deepdist-tls-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp: mode 0600
            f.write(key_pem + cert_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


def client_context() -> ssl.SSLContext:
    """A client context that checks no CA: the peer is authenticated by :func:`check_pinned`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_pinned(sock: ssl.SSLSocket, expected: str, url: str) -> None:
    """Raise :class:`AuthenticationError` unless the peer's certificate has the ``expected`` fingerprint."""
    der = sock.getpeercert(binary_form=True)
    got = fingerprint(der) if der else ""
    if not hmac.compare_digest(got, expected.lower()):
        raise AuthenticationError(
            f"{url}: the server's TLS certificate (SHA-256 {got[:16] or 'none'}...) is not the one of "
            f"this DeepDist context ({expected[:16]}...): refusing to send the secret. Another process "
            "may be listening on that address, or the traffic is being intercepted")
