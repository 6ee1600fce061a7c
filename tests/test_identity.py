"""Node names: the hostname, unless it is a factory default; then the board's serial."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.shell.config import Config, parse_config
from agent.shell.names import IdentitySources, NameGuard, board_id, is_default_hostname, node_name

CPUINFO_PI = """processor\t: 0
model name\t: ARMv7 Processor rev 4 (v7l)
Hardware\t: BCM2835
Revision\t: a02082
Serial\t\t: 00000000b1c2d3e4
Model\t\t: Raspberry Pi 3 Model B Rev 1.2
"""


def sources(
    tmp_path: Path,
    *,
    serial: bytes | None = None,
    cpuinfo: str | None = None,
    machine_id: str | None = None,
) -> IdentitySources:
    dt = tmp_path / "serial-number"
    if serial is not None:
        dt.write_bytes(serial)
    ci = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        ci.write_text(cpuinfo)
    mid = tmp_path / "machine-id"
    if machine_id is not None:
        mid.write_text(machine_id)
    return IdentitySources(serial_files=(dt, tmp_path / "absent"), cpuinfo=ci, machine_id=mid)


def cfg(name: str = "") -> Config:
    return parse_config({"node": {"name": name}} if name else {})


def test_configured_name_wins(tmp_path: Path) -> None:
    src = sources(tmp_path, serial=b"10000000abcdef01\0")
    assert node_name(cfg("kitchen"), hostname="raspberrypi", sources=src) == "kitchen"


def test_ordinary_hostname_is_used_short(tmp_path: Path) -> None:
    src = sources(tmp_path, serial=b"10000000abcdef01\0")
    assert node_name(cfg(), hostname="pi-kitchen.lab.example", sources=src) == "pi-kitchen"


@pytest.mark.parametrize(
    "host", ["raspberrypi", "RaspberryPi", "localhost", "", "debian", "localhost.localdomain"]
)
def test_default_hostnames_use_the_device_tree_serial(tmp_path: Path, host: str) -> None:
    src = sources(tmp_path, serial=b"10000000abcdef01\0", cpuinfo=CPUINFO_PI, machine_id="f" * 32)
    assert is_default_hostname(host.split(".")[0])
    assert node_name(cfg(), hostname=host, sources=src) == "pi-abcdef01"


def test_cpuinfo_serial_when_no_device_tree(tmp_path: Path) -> None:
    src = sources(tmp_path, cpuinfo=CPUINFO_PI, machine_id="0123456789abcdef0123456789abcdef")
    assert node_name(cfg(), hostname="raspberrypi", sources=src) == "pi-b1c2d3e4"
    assert board_id(src) == ("b1c2d3e4", f"{tmp_path / 'cpuinfo'} Serial")


def test_machine_id_off_pi_and_zero_serials_ignored(tmp_path: Path) -> None:
    # x86 cpuinfo has no Serial; a zeroed serial (some boards) is no identity at all
    src = sources(
        tmp_path,
        serial=b"0000000000000000\0",
        cpuinfo="processor: 0\n",
        machine_id="0123456789abcdef0123456789abcdef\n",
    )
    assert node_name(cfg(), hostname="localhost", sources=src) == "pi-89abcdef"


def test_two_boards_with_default_hostnames_get_different_stable_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sa = sources(a, serial=b"100000001111aaaa\0")
    sb = sources(b, serial=b"100000002222bbbb\0")
    names = [node_name(cfg(), hostname="raspberrypi", sources=s) for s in (sa, sb, sa)]
    assert names == ["pi-1111aaaa", "pi-2222bbbb", "pi-1111aaaa"]


def test_nothing_to_derive_from_keeps_the_hostname(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = sources(tmp_path)
    assert node_name(cfg(), hostname="raspberrypi", sources=src) == "raspberrypi"
    assert "set [node] name" in caplog.text


# --- NameGuard: the verdict logic (the live case is tests/fleet) -------------------------


def _guard(
    answers: dict[tuple[str, int], tuple[str, int] | None],
    monkeypatch: pytest.MonkeyPatch,
    witnesses: list[tuple[str, int]],
) -> tuple[NameGuard, list[object]]:
    faults: list[object] = []

    async def fake_ask(
        peer: tuple[str, int], name: str, keyring: object, timeout: float = 0
    ) -> object:
        return answers[peer]

    monkeypatch.setattr("agent.shell.names.ask_where", fake_ask)
    g = NameGuard("dup", lambda: ("10.0.0.9", 7946), lambda: witnesses, lambda: None, faults.append)
    g.rival = ("10.0.0.5", 7946)
    return g, faults


def test_guard_newcomer_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    w = [("10.0.0.1", 7946), ("10.0.0.2", 7946)]
    g, faults = _guard({a: ("10.0.0.5", 7946) for a in w}, monkeypatch, w)
    assert asyncio.run(g.judge()) == "newcomer"
    level, reason = faults[-1]  # type: ignore[misc]
    assert level == "failing" and "already belongs to the node at 10.0.0.5:7946" in reason


def test_guard_original_keeps_name_and_newcomer_clears_once_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = [("10.0.0.1", 7946), ("10.0.0.5", 7946)]  # the rival is never asked about itself
    g, faults = _guard({("10.0.0.1", 7946): ("10.0.0.9", 7946)}, monkeypatch, w)
    assert asyncio.run(g.judge()) == "original"
    assert faults[-1][0] == "degraded"  # type: ignore[index]
    g.verdict = "newcomer"
    assert asyncio.run(g.judge()) == "cleared"
    assert faults[-1] is None


def test_guard_without_witnesses_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    g, faults = _guard({}, monkeypatch, [("10.0.0.5", 7946)])
    assert asyncio.run(g.judge()) == "unknown"
    assert faults[-1][0] == "failing"  # type: ignore[index]
