"""TLS identities: generated certificates must suit browser pinning; PEM files round-trip."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography import x509

from relay.tls import GENERATED_VALIDITY, TlsError, generate_self_signed, load_identity, write_pem


def test_generated_certificate_is_pinnable() -> None:
    ident = generate_self_signed(["localhost", "127.0.0.1", "::1"])
    leaf = ident.leaf
    # Browsers accept serverCertificateHashes only for certificates valid at most 14 days.
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= GENERATED_VALIDITY
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(sans.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    assert len(ident.fingerprint) == 64 and int(ident.fingerprint, 16) >= 0


def test_pem_round_trip_and_mismatch(tmp_path) -> None:
    a = generate_self_signed(["a.example"])
    b = generate_self_signed(["b.example"])
    write_pem(a, str(tmp_path / "a.pem"), str(tmp_path / "a.key"))
    write_pem(b, str(tmp_path / "b.pem"), str(tmp_path / "b.key"))
    loaded = load_identity(str(tmp_path / "a.pem"), str(tmp_path / "a.key"))
    assert loaded.fingerprint == a.fingerprint
    with pytest.raises(TlsError):
        load_identity(str(tmp_path / "a.pem"), str(tmp_path / "b.key"))
    with pytest.raises(TlsError):
        generate_self_signed([])
