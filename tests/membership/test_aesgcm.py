"""AES-GCM through the system libcrypto, checked against cryptography's (test-only) AESGCM.

Same bytes for every key size, nonce, plaintext and additional data; a tampered tag,
ciphertext, nonce or AAD opens as None; one instance shared by threads stays correct.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.membership.aesgcm import AesGcm, libcrypto_path

keys = st.sampled_from((16, 24, 32)).flatmap(lambda n: st.binary(min_size=n, max_size=n))
nonces = st.binary(min_size=12, max_size=12)
aads = st.one_of(st.none(), st.binary(max_size=40))


@settings(max_examples=300, deadline=None)
@given(key=keys, nonce=nonces, plain=st.binary(max_size=3000), aad=aads)
def test_seal_and_open_match_the_reference(
    key: bytes, nonce: bytes, plain: bytes, aad: bytes | None
) -> None:
    ours, ref = AesGcm(key), AESGCM(key)
    sealed = ours.seal(nonce, plain, aad)
    assert sealed == ref.encrypt(nonce, plain, aad)
    assert ours.open(nonce, sealed, aad) == plain
    # the reference opens ours and we open the reference's: the same wire format
    assert ours.open(nonce, ref.encrypt(nonce, plain, aad), aad) == plain
    # a second message on the same contexts does not inherit the first one's state
    assert ours.seal(nonce, plain[::-1], aad) == ref.encrypt(nonce, plain[::-1], aad)


@settings(max_examples=200, deadline=None)
@given(key=keys, nonce=nonces, plain=st.binary(max_size=200), aad=aads, flip=st.integers(0, 10_000))
def test_any_tampering_opens_as_none(
    key: bytes, nonce: bytes, plain: bytes, aad: bytes | None, flip: int
) -> None:
    box = AesGcm(key)
    sealed = bytearray(box.seal(nonce, plain, aad))
    i = flip % len(sealed)
    sealed[i] ^= 1 << (flip % 8)
    assert box.open(nonce, bytes(sealed), aad) is None
    good = box.seal(nonce, plain, aad)
    wrong_nonce = bytes((nonce[0] ^ 1,)) + nonce[1:]
    assert box.open(wrong_nonce, good, aad) is None
    assert box.open(nonce, good, (aad or b"") + b"x") is None
    assert box.open(nonce, good[:-1], aad) is None
    assert box.open(nonce, good[:15], aad) is None  # shorter than a tag
    assert AesGcm(bytes(b ^ 0xFF for b in key)).open(nonce, good, aad) is None


def test_bad_sizes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        AesGcm(b"k" * 20)
    with pytest.raises(ValueError, match="nonce must be 12"):
        AesGcm(b"k" * 16).seal(b"n" * 8, b"x")
    assert AesGcm(b"k" * 16).open(b"n" * 8, b"x" * 32) is None


def test_one_instance_shared_by_threads() -> None:
    key = os.urandom(32)
    box, ref = AesGcm(key), AESGCM(key)
    errors: list[str] = []

    def work(seed: int) -> None:
        for i in range(300):
            nonce = (seed * 1000 + i).to_bytes(12, "big")
            plain = os.urandom((seed * 37 + i) % 1500)
            sealed = box.seal(nonce, plain, b"aad")
            if (
                sealed != ref.encrypt(nonce, plain, b"aad")
                or box.open(nonce, sealed, b"aad") != plain
            ):
                errors.append(f"thread {seed} message {i}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_it_binds_the_libcrypto_python_already_maps() -> None:
    path = libcrypto_path()
    assert path is not None and "libcrypto.so" in path
    maps = Path("/proc/self/maps").read_text()
    assert maps.count(path) >= 1
