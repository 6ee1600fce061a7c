"""AES-GCM keyring: both encryption versions, key rotation, AAD, Serf key formats."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess

import pytest

from agent.membership.errors import DecodeError, ErrorKind
from agent.membership.keyring import Keyring, encrypted_length, generate_key

K1 = bytes(range(16))
K2 = bytes(range(32))
K3 = bytes(range(24))


def counter_nonces() -> object:
    """Deterministic nonce source: 12-byte big-endian counter."""
    counter = itertools.count(1)
    return lambda n: next(counter).to_bytes(n, "big")


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000])
def test_round_trip_both_versions(version: int, size: int) -> None:
    ring = Keyring([K1], random_bytes=counter_nonces())  # type: ignore[arg-type]
    plain = bytes(range(256)) * 4
    plain = plain[:size]
    blob = ring.encrypt(plain, version=version)
    assert blob[0] == version
    assert blob[1:13] == (1).to_bytes(12, "big")
    assert len(blob) == encrypted_length(version, size)
    assert ring.decrypt(blob) == plain


def test_deterministic_with_injected_nonce() -> None:
    a = Keyring([K2], random_bytes=lambda n: b"\x00" * n).encrypt(b"hello")
    b = Keyring([K2], random_bytes=lambda n: b"\x00" * n).encrypt(b"hello")
    assert a == b
    assert len(a) == 1 + 12 + 5 + 16


def test_overheads_match_memberlist() -> None:
    assert encrypted_length(1, 100) - 100 == 29
    assert encrypted_length(0, 16) - 16 == 45  # a full pad block
    assert encrypted_length(0, 0) == 45


def test_primary_encrypts_all_decrypt() -> None:
    old = Keyring([K1])
    rotated = Keyring([K2, K1])
    assert rotated.decrypt(old.encrypt(b"x")) == b"x"
    assert rotated.primary_key == K2
    with pytest.raises(DecodeError) as info:
        old.decrypt(rotated.encrypt(b"x"))
    assert info.value.kind is ErrorKind.DECRYPT_FAILED


def test_rotation_helpers() -> None:
    ring = Keyring([K1]).with_key(K2).with_key(K3)
    assert ring.keys == (K1, K2, K3)
    assert ring.with_primary(K3).keys == (K3, K1, K2)
    assert ring.without_key(K2).keys == (K1, K3)
    with pytest.raises(ValueError):
        ring.without_key(K1)
    with pytest.raises(ValueError):
        ring.with_primary(b"\x00" * 16)
    assert repr(ring) == "Keyring(<3 keys>)"


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (b"", "empty"),
        (b"\x02" + bytes(40), "unsupported version"),
        (b"\x01" + bytes(27), "too short for v1"),
        (b"\x00" + bytes(40), "too short for v0"),
        (b"\x01" + bytes(60), "garbage"),
    ],
)
def test_bad_blobs_fail_cleanly(blob: bytes, why: str) -> None:
    with pytest.raises(DecodeError) as info:
        Keyring([K1]).decrypt(blob)
    assert info.value.kind is ErrorKind.DECRYPT_FAILED, why


def test_tampering_and_wrong_key_fail() -> None:
    ring = Keyring([K1])
    blob = bytearray(ring.encrypt(b"payload"))
    blob[-1] ^= 1
    with pytest.raises(DecodeError):
        ring.decrypt(bytes(blob))
    with pytest.raises(DecodeError):
        Keyring([K2]).decrypt(ring.encrypt(b"payload"))


def test_stream_aad_is_bound() -> None:
    ring = Keyring([K1])
    header = b"\x0a" + (29 + 3).to_bytes(4, "big")
    blob = ring.encrypt(b"abc", header)
    assert ring.decrypt(blob, header) == b"abc"
    with pytest.raises(DecodeError):
        ring.decrypt(blob)  # UDP-style (no AAD) must not accept a stream blob
    with pytest.raises(DecodeError):
        ring.decrypt(blob, b"\x0a\x00\x00\x00\x21")


def test_v0_bad_padding_is_refused() -> None:
    # Authenticated but with an impossible pad byte: refuse instead of slicing like Go.
    ring = Keyring([K1], random_bytes=lambda n: bytes(n))
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sealed = AESGCM(K1).encrypt(bytes(12), b"x" * 15 + b"\x00", None)
    with pytest.raises(DecodeError):
        ring.decrypt(b"\x00" + bytes(12) + sealed)
    sealed = AESGCM(K1).encrypt(bytes(12), b"x" * 15 + b"\x01", None)
    assert ring.decrypt(b"\x00" + bytes(12) + sealed) == b"x" * 15


def test_key_validation() -> None:
    for size in (16, 24, 32):
        Keyring([bytes(size)])
    for size in (0, 15, 33):
        with pytest.raises(ValueError):
            Keyring([bytes(size)])
    with pytest.raises(ValueError):
        Keyring([])
    with pytest.raises(ValueError):
        Keyring([K1, K1])
    with pytest.raises(ValueError):
        Keyring.from_base64(["not base64!"])


def test_generate_key_matches_serf_keygen_format() -> None:
    key = generate_key(lambda n: b"\xab" * n)
    assert key == base64.b64encode(b"\xab" * 32).decode()
    assert len(base64.b64decode(key)) == 32
    assert Keyring.from_base64([generate_key()]).primary_key != b""
    serf = shutil.which("serf")
    if serf is not None:
        printed = subprocess.run([serf, "keygen"], capture_output=True, text=True, check=True)
        theirs = printed.stdout.strip()
        assert len(theirs) == len(key) == 44 and theirs.endswith("=")
        assert len(Keyring.from_base64([theirs]).primary_key) == 32


def test_keyring_file_format() -> None:
    ring = Keyring([K2, K1])
    text = ring.to_keyring_json()
    # Same shape as Go's json.MarshalIndent(keys, "", "  ").
    k2, k1 = (base64.b64encode(k).decode() for k in (K2, K1))
    assert text == f'[\n  "{k2}",\n  "{k1}"\n]'
    assert Keyring.from_keyring_json(text).keys == (K2, K1)
    for bad in ("{}", "[]", "[1]", "nope"):
        with pytest.raises(ValueError):
            Keyring.from_keyring_json(bad)
    assert json.loads(text) == [k2, k1]
