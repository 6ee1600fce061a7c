"""The DER notAfter reader against cryptography's full X.509 parser (a test-only dependency).

Real certificates (every CA in the system store, fresh ones either side of 2050, where
RFC 5280 switches from UTCTime to GeneralizedTime) must read the same; anything else,
truncated or random bytes, reads as None and never raises.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.checks.certificate import not_after
from tests.conftest import require

CA_DIR = Path("/etc/ssl/certs")


def _cert(not_after_: dt.datetime) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge-agent test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(not_after_)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _reference(der: bytes) -> float:
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_every_ca_in_the_system_store_reads_as_cryptography_reads_it() -> None:
    pems = sorted(CA_DIR.glob("*.pem"))
    require(len(pems) >= 50, f"the system CA store ({CA_DIR}, Debian's ca-certificates)")
    for pem in pems:
        der = ssl.PEM_cert_to_DER_cert(pem.read_text())
        assert not_after(der) == _reference(der), pem


def test_times_either_side_of_2050() -> None:
    # before 2050: UTCTime (two-digit year); from 2050 on: GeneralizedTime
    for when in (
        dt.datetime(2049, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
        dt.datetime(2050, 1, 1, 0, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2031, 2, 28, 12, 30, 1, tzinfo=dt.UTC),
        dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC),
    ):
        der = _cert(when)
        assert not_after(der) == when.timestamp() == _reference(der)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=600), cut=st.integers(min_value=0, max_value=2000))
def test_garbage_and_truncations_read_as_none_or_a_time(data: bytes, cut: int) -> None:
    der = _cert(dt.datetime(2030, 6, 1, tzinfo=dt.UTC)) if cut % 2 else b""
    for blob in (data, der[: cut % (len(der) + 1)], der[:cut] + data):
        got = not_after(blob)
        assert got is None or isinstance(got, float)
    if der:
        assert not_after(der[:-1]) is None  # one byte short: the outer length runs past the end
