"""What `check-config` checks beyond the file's own syntax: the files it names.

A config can be valid TOML with valid values and still not run: a keyring file that is
missing or not base64 (the agent would then run with gossip off), a token file that
cannot be read (every write refused), a data_dir that is a regular file (the store
cannot open). An operator rolling a config out with Ansible wants to hear that before
the restart, with the key that names the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from agent.shell.config import DEFAULT_API_SOCKET, Config, api_socket_path, socket_path_problem
from agent.shell.keyring_file import KeyringError, load_keyring


def file_problems(cfg: Config) -> list[str]:
    """'key: problem' for each file the config names that the agent could not use."""
    problems: list[str] = []
    keyring = cfg.cluster.keyring_file
    if keyring is not None:
        try:
            load_keyring(keyring)
        except KeyringError as e:
            problems.append(f"cluster.keyring_file: {e}")
    token = cfg.api.token_file
    if token is not None:
        try:
            if not token.read_text().strip():
                problems.append(f"api.token_file: {token} is empty")
        except OSError as e:
            problems.append(f"api.token_file: {token}: cannot read ({e.strerror or e})")
    problem = _writable_dir(cfg.node.data_dir)
    if problem is not None:
        problems.append(f"node.data_dir: {cfg.node.data_dir} {problem}")
    problems.extend(_socket_problems(cfg))
    return problems


def _socket_problems(cfg: Config) -> list[str]:
    """The API's Unix socket: a path that fits sun_path, in a directory the agent can make.
    The packaged /run/edge-agent is systemd's to make (RuntimeDirectory=), not checked."""
    path = api_socket_path(cfg)
    key = "api.socket" if cfg.api.socket is not None else "api.socket (derived from node.data_dir)"
    problem = socket_path_problem(path)
    if problem is not None:
        return [f"{key}: {problem}"]
    if path == DEFAULT_API_SOCKET or path.parent == cfg.node.data_dir:
        return []  # systemd's to make; or data_dir's own check covers it
    problem = _writable_dir(path.parent)
    if problem is not None:
        return [f"{key}: its directory {path.parent} {problem}"]
    return []


def _writable_dir(path: Path) -> str | None:
    """None when ``path`` is a writable directory, or could be created as one."""
    if path.exists():
        if not path.is_dir():
            return "is not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return "is not writable by this user"
        return None
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created ({parent} is not a directory)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"does not exist and cannot be created ({parent} is not writable by this user)"
    return None
