"""The gossip keyring file an operator (or Ansible) writes: what it may hold, read once
at start and again on SIGHUP (key rotation without a restart, as `serf keys`)."""

from __future__ import annotations

from pathlib import Path

from agent.membership import CryptoUnavailable, Keyring


class KeyringError(Exception):
    """The keyring file cannot be used; the message names the file and the problem."""


def load_keyring(path: Path) -> Keyring:
    """Keys from a file: one base64 key per line (first = primary), or Serf's JSON array."""
    try:
        text = path.read_text()
    except OSError as e:
        raise KeyringError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        if text.lstrip().startswith("["):
            return Keyring.from_keyring_json(text)
        keys = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        if not keys:
            raise ValueError("no keys in the file")
        return Keyring.from_base64(keys)
    except ValueError as e:
        raise KeyringError(f"{path}: {e}") from None
    except CryptoUnavailable as e:
        raise KeyringError(f"{path}: cannot encrypt on this machine: {e}") from None
