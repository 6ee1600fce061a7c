"""memberlist's gossip keyring: AES-GCM with a primary key and fallbacks.

Wire format of an encrypted blob (security.go): ``[vsn:1][nonce:12][ciphertext||tag:16]``.
Version 0 PKCS#7-pads the plaintext to a 16-byte multiple first; version 1 does not.
Serf speaks memberlist protocol 2 so it sends version 1; we accept both and send 1.
Additional data: none for UDP packets, the 5-byte ``[0x0a][uint32 BE len]`` header
for streams (memberlist 0.2.2).

Keys are handled in Serf's formats: ``-encrypt`` and ``serf keygen`` use standard
base64 of the raw key (keygen: 32 random bytes), and a keyring file is a JSON array
of such strings with ``keys[0]`` the primary.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable, Iterable, Sequence

from .errors import DecodeError, ErrorKind

__all__ = [
    "ENCRYPTION_VERSION",
    "Keyring",
    "RandomBytes",
    "encrypted_length",
    "generate_key",
]

RandomBytes = Callable[[int], bytes]

#: What memberlist protocol >= 2 (i.e. every Serf agent) sends.
ENCRYPTION_VERSION = 1
_NONCE = 12
_TAG = 16
_BLOCK = 16
_KEY_SIZES = (16, 24, 32)


def encrypted_length(version: int, plain_len: int) -> int:
    """Size of the blob for a plaintext of ``plain_len`` bytes (memberlist encryptedLength)."""
    if version >= 1:
        return 1 + _NONCE + plain_len + _TAG
    return 1 + _NONCE + plain_len + (_BLOCK - plain_len % _BLOCK) + _TAG


def generate_key(random_bytes: RandomBytes = os.urandom) -> str:
    """A new key in ``serf keygen`` format: base64 (std, padded) of 32 random bytes."""
    return base64.b64encode(random_bytes(32)).decode("ascii")


def _validate(key: bytes) -> bytes:
    if len(key) not in _KEY_SIZES:
        raise ValueError(f"key size must be 16, 24 or 32 bytes, not {len(key)}")
    return bytes(key)


def _b64key(text: str) -> bytes:
    try:
        return _validate(base64.b64decode(text.strip(), validate=True))
    except binascii.Error as exc:
        raise ValueError(f"key is not valid base64: {exc}") from None


class Keyring:
    """Ordered AES keys; ``keys[0]`` encrypts, all are tried to decrypt.

    Immutable so one instance can be shared between the UDP and TCP paths without
    locks; "rotation" builds a new keyring (:meth:`with_primary` etc.).
    """

    __slots__ = ("_ciphers", "_keys", "_random_bytes")

    def __init__(self, keys: Iterable[bytes], *, random_bytes: RandomBytes = os.urandom) -> None:
        self._keys: tuple[bytes, ...] = tuple(_validate(k) for k in keys)
        if not self._keys:
            raise ValueError("a keyring needs at least one key")
        if len(set(self._keys)) != len(self._keys):
            raise ValueError("duplicate key in keyring")
        # imported here: a node that does not encrypt never binds libcrypto
        from .aesgcm import AesGcm

        self._ciphers = tuple(AesGcm(k) for k in self._keys)
        self._random_bytes = random_bytes

    # -- construction in Serf's formats -------------------------------------------
    @classmethod
    def from_base64(cls, keys: Sequence[str], *, random_bytes: RandomBytes = os.urandom) -> Keyring:
        """From ``-encrypt`` style base64 strings, primary first."""
        return cls((_b64key(k) for k in keys), random_bytes=random_bytes)

    @classmethod
    def from_keyring_json(cls, text: str, *, random_bytes: RandomBytes = os.urandom) -> Keyring:
        """From the contents of a Serf ``-keyring-file`` (a JSON array of base64 keys)."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"keyring file is not JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(k, str) for k in data):
            raise ValueError("keyring file must be a JSON array of base64 strings")
        if not data:
            raise ValueError("keyring file contains no keys")
        return cls.from_base64(data, random_bytes=random_bytes)

    def to_keyring_json(self) -> str:
        """Same layout as Serf's writeKeyringFile (json.MarshalIndent, two-space indent)."""
        return json.dumps([base64.b64encode(k).decode("ascii") for k in self._keys], indent=2)

    # -- rotation -----------------------------------------------------------------
    @property
    def keys(self) -> tuple[bytes, ...]:
        return self._keys

    @property
    def primary_key(self) -> bytes:
        return self._keys[0]

    def with_key(self, key: bytes) -> Keyring:
        """Add a secondary key (decrypt-only until made primary)."""
        if key in self._keys:
            return self
        return Keyring((*self._keys, key), random_bytes=self._random_bytes)

    def with_primary(self, key: bytes) -> Keyring:
        """Make an installed key the one that encrypts (memberlist UseKey)."""
        if key not in self._keys:
            raise ValueError("key is not installed")
        rest = tuple(k for k in self._keys if k != key)
        return Keyring((key, *rest), random_bytes=self._random_bytes)

    def without_key(self, key: bytes) -> Keyring:
        """Remove a secondary key; the primary cannot be removed (memberlist RemoveKey)."""
        if key == self._keys[0]:
            raise ValueError("cannot remove the primary key")
        return Keyring((k for k in self._keys if k != key), random_bytes=self._random_bytes)

    # -- crypto -------------------------------------------------------------------
    def encrypt(
        self, plaintext: bytes, aad: bytes | None = None, *, version: int = ENCRYPTION_VERSION
    ) -> bytes:
        """Encrypt with the primary key; returns ``[vsn][nonce][ct||tag]``."""
        if version not in (0, 1):
            raise ValueError(f"unsupported encryption version {version}")
        nonce = self._random_bytes(_NONCE)
        if len(nonce) != _NONCE:
            raise ValueError("random_bytes returned the wrong number of bytes")
        if version == 0:
            pad = _BLOCK - len(plaintext) % _BLOCK
            plaintext = bytes(plaintext) + bytes((pad,)) * pad
        sealed = self._ciphers[0].seal(nonce, bytes(plaintext), aad)
        return bytes((version,)) + nonce + sealed

    def decrypt(self, blob: bytes, aad: bytes | None = None) -> bytes:
        """Try every key in order; DecodeError('decrypt_failed') when none works."""
        if not blob:
            raise DecodeError(ErrorKind.DECRYPT_FAILED, "cannot decrypt empty payload")
        version = blob[0]
        if version > 1:
            raise DecodeError(ErrorKind.DECRYPT_FAILED, f"unsupported encryption version {version}")
        if len(blob) < encrypted_length(version, 0):
            raise DecodeError(ErrorKind.DECRYPT_FAILED, f"payload too small: {len(blob)}")
        nonce = bytes(blob[1 : 1 + _NONCE])
        sealed = bytes(blob[1 + _NONCE :])
        for cipher in self._ciphers:
            plain = cipher.open(nonce, sealed, aad)
            if plain is None:
                continue
            if version == 0:
                # Authenticated, so only a buggy peer gets here with bad padding; refuse
                # rather than emulate Go's unchecked slice (which can panic).
                pad = plain[-1] if plain else 0
                if not 1 <= pad <= _BLOCK or pad > len(plain):
                    raise DecodeError(ErrorKind.DECRYPT_FAILED, "bad PKCS#7 padding")
                return plain[:-pad]
            return plain
        raise DecodeError(ErrorKind.DECRYPT_FAILED, "no installed key could decrypt the message")

    def __repr__(self) -> str:  # never print key material
        return f"Keyring(<{len(self._keys)} keys>)"
