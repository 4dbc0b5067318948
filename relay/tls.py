"""TLS identities: PEM loading, self-signed generation for development, fingerprints."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from relay.errors import LocalError

# Browsers accept serverCertificateHashes pinning only for certificates valid <= 14 days.
GENERATED_VALIDITY = datetime.timedelta(days=14)


class TlsError(LocalError):
    """A certificate or key that cannot be used."""


@dataclass
class Identity:
    """A certificate chain (leaf first) and its private key."""

    chain: list[x509.Certificate]
    private_key: object  # a cryptography private key
    generated: bool = False

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the leaf's DER bytes (64 chars, no colons)."""
        return fingerprint(self.leaf)

    @property
    def not_after(self) -> datetime.datetime:
        return self.leaf.not_valid_after_utc


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def generate_self_signed(names: list[str]) -> Identity:
    """A fresh ECDSA P-256 key and a certificate valid from now-1d for 14 days in total."""
    if not names:
        raise TlsError("generate needs at least one host name or IP")
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            sans.append(x509.DNSName(name))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + GENERATED_VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Identity(chain=[cert], private_key=key, generated=True)


def load_identity(cert_path: str, key_path: str) -> Identity:
    """Load a PEM chain and its PEM private key, checking that they belong together."""
    try:
        with open(cert_path, "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError) as e:
        raise TlsError(f"{cert_path}: {e}") from e
    if not chain:
        raise TlsError(f"{cert_path}: no certificate in PEM file")
    try:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise TlsError(f"{key_path}: {e}") from e
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != chain[0].public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise TlsError(f"{key_path}: private key does not match certificate {cert_path}")
    return Identity(chain=chain, private_key=key)


def write_pem(identity: Identity, cert_path: str, key_path: str) -> None:
    """Write an identity as PEM files (used by tests and examples)."""
    with open(cert_path, "wb") as f:
        for c in identity.chain:
            f.write(c.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            identity.private_key.private_bytes(  # type: ignore[attr-defined]
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
