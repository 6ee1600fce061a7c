"""AES-GCM from the OpenSSL that Python's own ``ssl`` module already has in memory.

Why not the ``cryptography`` package: its Rust extension carries a second, statically
linked OpenSSL, about 8 MiB of RSS on top of the one ``ssl`` maps (aiohttp imports
``ssl``, so that one is always there). On a Pi Zero 2 W with 512 MB that was the largest
single item in an idle node's memory. The gossip keyring needs exactly two operations,
seal and open with a 12-byte nonce and a 16-byte tag, which OpenSSL's EVP interface
provides in every supported version (1.1.1 and 3.x); this module binds those few
functions with ctypes and nothing else.

Each :class:`AesGcm` keeps one encrypt and one decrypt context with the key schedule
already done, and re-initialises only the nonce per message (the pattern OpenSSL
documents for GCM). A lock makes an instance safe to share between the loop and the
worker threads that decode large messages.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from pathlib import Path
from typing import Any

__all__ = ["NONCE_SIZE", "TAG_SIZE", "AesGcm", "CryptoUnavailable", "libcrypto_path"]

NONCE_SIZE = 12
TAG_SIZE = 16
_KEY_SIZES = (16, 24, 32)
# EVP_CIPHER_CTX_ctrl commands (openssl/evp.h; the same in 1.1.1 and 3.x)
_CTRL_GCM_GET_TAG = 0x10
_CTRL_GCM_SET_TAG = 0x11


class CryptoUnavailable(RuntimeError):
    """No usable OpenSSL libcrypto in this process (names what was tried)."""


def libcrypto_path() -> str | None:
    """The libcrypto Python's ``_hashlib``/``_ssl`` linked, as mapped in this process.

    Binding the very library that is already mapped costs no memory and cannot pick up
    a second, different OpenSSL from the library path.
    """
    with contextlib.suppress(ImportError):
        import _hashlib  # noqa: F401  (maps libcrypto when Python links it dynamically)
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.rpartition(" ")[2]
        if "/libcrypto.so" in path:
            return path
    return None


class _Lib:
    """The handful of EVP functions, with their C signatures declared."""

    def __init__(self) -> None:
        tried: list[str] = []
        found = libcrypto_path()
        names = [found] if found else []
        names += ["libcrypto.so.3", "libcrypto.so.1.1"]
        lib = None
        for name in names:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError as exc:
                tried.append(f"{name}: {exc}")
        if lib is None:
            raise CryptoUnavailable(
                "AES-GCM needs OpenSSL's libcrypto (1.1.1 or 3.x); tried " + "; ".join(tried)
            )
        vp, ip, i, cp = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int, ctypes.c_char_p
        self.new = _fn(lib, "EVP_CIPHER_CTX_new", vp, [])
        self.free = _fn(lib, "EVP_CIPHER_CTX_free", None, [vp])
        self.ctrl = _fn(lib, "EVP_CIPHER_CTX_ctrl", i, [vp, i, i, vp])
        init = [vp, vp, vp, cp, cp]
        self.enc_init = _fn(lib, "EVP_EncryptInit_ex", i, init)
        self.dec_init = _fn(lib, "EVP_DecryptInit_ex", i, init)
        update = [vp, vp, ip, cp, i]
        self.enc_update = _fn(lib, "EVP_EncryptUpdate", i, update)
        self.dec_update = _fn(lib, "EVP_DecryptUpdate", i, update)
        final = [vp, vp, ip]
        self.enc_final = _fn(lib, "EVP_EncryptFinal_ex", i, final)
        self.dec_final = _fn(lib, "EVP_DecryptFinal_ex", i, final)
        self.ciphers = {
            16: _fn(lib, "EVP_aes_128_gcm", vp, [])(),
            24: _fn(lib, "EVP_aes_192_gcm", vp, [])(),
            32: _fn(lib, "EVP_aes_256_gcm", vp, [])(),
        }


def _fn(lib: ctypes.CDLL, name: str, restype: Any, argtypes: list[Any]) -> Any:
    try:
        f = getattr(lib, name)
    except AttributeError:
        raise CryptoUnavailable(f"libcrypto has no {name}") from None
    f.restype = restype
    f.argtypes = argtypes
    return f


_lib: _Lib | None = None
_lib_lock = threading.Lock()


def _load() -> _Lib:
    global _lib
    with _lib_lock:
        if _lib is None:
            _lib = _Lib()
        return _lib


class AesGcm:
    """One AES key (16, 24 or 32 bytes); seal and open with 12-byte nonces, 16-byte tags."""

    __slots__ = ("__weakref__", "_dec", "_enc", "_lib", "_lock")

    def __init__(self, key: bytes) -> None:
        if len(key) not in _KEY_SIZES:
            raise ValueError(f"AES key must be 16, 24 or 32 bytes, not {len(key)}")
        lib = self._lib = _load()
        self._lock = threading.Lock()
        self._enc: int | None = None
        self._dec: int | None = None
        cipher = lib.ciphers[len(key)]
        self._enc = self._context(lib.enc_init, cipher, bytes(key))
        self._dec = self._context(lib.dec_init, cipher, bytes(key))

    def _context(self, init: Any, cipher: int, key: bytes) -> int:
        ctx = self._lib.new()
        if not ctx:
            raise MemoryError("EVP_CIPHER_CTX_new failed")
        if init(ctx, cipher, None, key, None) != 1:
            self._lib.free(ctx)
            raise CryptoUnavailable("EVP init with an AES-GCM key failed")
        return int(ctx)

    def seal(self, nonce: bytes, plaintext: bytes, aad: bytes | None = None) -> bytes:
        """``ciphertext || tag`` of ``plaintext`` under ``nonce``, authenticating ``aad``."""
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce must be {NONCE_SIZE} bytes, not {len(nonce)}")
        lib, n = self._lib, len(plaintext)
        out = ctypes.create_string_buffer(n + TAG_SIZE)
        outl = ctypes.c_int(0)
        ref = ctypes.byref(outl)
        with self._lock:
            ctx = self._enc
            if (
                lib.enc_init(ctx, None, None, None, bytes(nonce)) != 1
                or (aad and lib.enc_update(ctx, None, ref, bytes(aad), len(aad)) != 1)
                or (n and lib.enc_update(ctx, out, ref, bytes(plaintext), n) != 1)
                or lib.enc_final(ctx, ctypes.byref(out, n), ref) != 1
                or lib.ctrl(ctx, _CTRL_GCM_GET_TAG, TAG_SIZE, ctypes.byref(out, n)) != 1
            ):
                raise CryptoUnavailable("AES-GCM encryption failed in libcrypto")
        return out.raw

    def open(self, nonce: bytes, sealed: bytes, aad: bytes | None = None) -> bytes | None:
        """The plaintext, or None when the tag does not verify (wrong key or tampering)."""
        if len(nonce) != NONCE_SIZE or len(sealed) < TAG_SIZE:
            return None
        lib, n = self._lib, len(sealed) - TAG_SIZE
        sealed = bytes(sealed)
        out = ctypes.create_string_buffer(n + TAG_SIZE)
        tag = ctypes.create_string_buffer(sealed[n:], TAG_SIZE)
        outl = ctypes.c_int(0)
        ref = ctypes.byref(outl)
        with self._lock:
            ctx = self._dec
            if (
                lib.dec_init(ctx, None, None, None, bytes(nonce)) != 1
                or (aad and lib.dec_update(ctx, None, ref, bytes(aad), len(aad)) != 1)
                or (n and lib.dec_update(ctx, out, ref, sealed[:n], n) != 1)
                or lib.ctrl(ctx, _CTRL_GCM_SET_TAG, TAG_SIZE, tag) != 1
            ):
                raise CryptoUnavailable("AES-GCM decryption failed in libcrypto")
            ok = lib.dec_final(ctx, ctypes.byref(out, n), ref) == 1
        return out.raw[:n] if ok else None

    def __del__(self) -> None:
        lib = getattr(self, "_lib", None)
        for name in ("_enc", "_dec"):
            ctx = getattr(self, name, None)
            if lib is not None and ctx:
                lib.free(ctx)
                setattr(self, name, None)

    def __repr__(self) -> str:  # never print key material
        return "AesGcm(<key>)"
