"""The LEDs find the header's gpiochip by label (agent/shell/gpiochip.py).

Pure cases here; the same code against real simulated chips (gpio-sim, one per board's
label) runs in a QEMU guest: image/pi_checks.py, called from image/boot_test.py.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from gpiozero import Device

from agent.domain import ConfigError
from agent.shell import gpiochip
from agent.shell import leds as leds_mod
from agent.shell.config import LedsConfig, parse_config_bytes
from agent.shell.gpiochip import ChipInfo, Choice, choose, parse_setting
from agent.shell.leds import Leds, LedState


def chip(n: int, label: str, lines: int = 54) -> ChipInfo:
    return ChipInfo(f"/dev/gpiochip{n}", n, label, lines)


# What each board's kernel shows (the SoC's own chips around the header's).
PI5_OLD = [
    chip(0, "gpio-brcmstb@107d508500", 32),
    chip(1, "gpio-brcmstb@107d508520", 4),
    chip(2, "gpio-brcmstb@107d517c00", 17),
    chip(3, "gpio-brcmstb@107d517c20", 6),
    chip(4, "pinctrl-rp1", 54),
]
PI5_NEW = [
    chip(0, "pinctrl-rp1", 54),
    chip(10, "gpio-brcmstb@107d508500", 32),
    chip(11, "gpio-brcmstb@107d517c00", 17),
]
PI4 = [chip(0, "pinctrl-bcm2711", 58), chip(1, "raspberrypi-exp-gpio", 8)]
PI3 = [chip(0, "pinctrl-bcm2835", 54), chip(1, "raspberrypi-exp-gpio", 8)]


@pytest.mark.parametrize(
    ("chips", "number", "label"),
    [
        (PI5_OLD, 4, "pinctrl-rp1"),
        (PI5_NEW, 0, "pinctrl-rp1"),
        (PI4, 0, "pinctrl-bcm2711"),
        (PI3, 0, "pinctrl-bcm2835"),
        (list(reversed(PI5_OLD)), 4, "pinctrl-rp1"),
    ],
    ids=["pi5-old-kernel", "pi5-new-kernel", "pi4", "pi3-zero2w", "any-order"],
)
def test_auto_finds_the_header_by_label_whatever_its_number(
    chips: list[ChipInfo], number: int, label: str
) -> None:
    c = choose(chips)
    assert (c.number, c.label, c.problem) == (number, label, None)
    assert f"/dev/gpiochip{number}" in c.why and gpiochip.KNOWN_LABELS[label] in c.why


def test_a_known_label_on_a_chip_too_small_for_the_header_is_not_it() -> None:
    c = choose([chip(0, "pinctrl-bcm2835", 8)])
    assert c.number is None and not c.fault


def test_no_known_label_off_a_pi_is_not_a_fault_but_on_a_pi_it_is() -> None:
    laptop = [chip(0, "INT34C5:00", 360)]
    quiet = choose(laptop)
    assert quiet.number is None and not quiet.fault
    assert "INT34C5:00" in (quiet.problem or "")
    loud = choose(laptop, says_pi=True)
    assert loud.fault and "[leds] gpiochip" in (loud.problem or "")
    assert choose([], says_pi=True).fault
    assert "no /dev/gpiochip* at all" in (choose([]).problem or "")


def test_an_unreadable_chip_is_a_fault_that_names_the_gpio_group() -> None:
    c = choose([ChipInfo("/dev/gpiochip0", 0, error="cannot open: Permission denied")])
    assert (
        c.fault and "gpio group" in (c.problem or "") and "Permission denied" in (c.problem or "")
    )


def test_an_explicit_number_or_label_wins_and_a_missing_one_is_a_fault() -> None:
    assert choose(PI5_OLD, 2).number == 2
    assert choose(PI5_OLD, "gpio-brcmstb@107d517c00").number == 2
    missing = choose(PI5_NEW, 4)
    assert missing.number is None and missing.fault
    assert "gpiochip4" in (missing.problem or "") and "pinctrl-rp1" in (missing.problem or "")
    nolabel = choose(PI4, "pinctrl-rp1")
    assert nolabel.fault and "pinctrl-bcm2711" in (nolabel.problem or "")


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("auto", "auto"),
        (4, 4),
        ("4", 4),
        ("gpiochip4", 4),
        ("/dev/gpiochip4", 4),
        ("pinctrl-rp1", "pinctrl-rp1"),
    ],
)
def test_setting_forms(value: object, want: int | str) -> None:
    assert parse_setting(value) == want


@pytest.mark.parametrize("value", [True, -1, 5000, "", "a label with spaces", "/sys/x", 1.5])
def test_bad_settings_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_setting(value)


def test_config_takes_gpiochip_and_names_a_bad_one() -> None:
    cfg = parse_config_bytes(b'[leds]\ngreen = 17\ngpiochip = "/dev/gpiochip4"\n', "t.toml")
    assert cfg.leds.gpiochip == 4
    assert parse_config_bytes(b"", "t.toml").leds.gpiochip == "auto"
    with pytest.raises(ConfigError) as e:
        parse_config_bytes(b"[leds]\ngpiochip = true\n", "t.toml")
    assert "leds.gpiochip" in str(e.value)


def test_the_real_ioctl_tells_a_gpio_chip_from_another_device(tmp_path: Path) -> None:
    # /dev/null answers GPIO_GET_CHIPINFO_IOCTL with ENOTTY: the same call that reads a
    # real chip's label (exercised on gpio-sim chips in image/pi_checks.py)
    (tmp_path / "gpiochip3").symlink_to("/dev/null")
    (tmp_path / "gpiochip12").symlink_to(tmp_path / "absent")
    (tmp_path / "gpiochipX").symlink_to("/dev/null")
    chips = gpiochip.list_chips(tmp_path)
    assert [c.number for c in chips] == [3, 12]
    assert chips[0].error is not None and "not a GPIO chip" in chips[0].error
    assert chips[1].error is not None and "cannot open" in chips[1].error
    assert gpiochip.GPIO_GET_CHIPINFO_IOCTL == 0x8044B401


def test_the_cli_says_what_it_would_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gpiochip.main(["--dev", str(tmp_path)]) == 1
    assert "no /dev/gpiochip* at all" in capsys.readouterr().out
    assert gpiochip.main(["--gpiochip", "a b"]) == 2


@pytest.fixture
def no_global_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)


def test_leds_on_a_pi_without_a_header_chip_report_a_fault(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, no_global_factory: None
) -> None:
    fault = Choice(None, "", "no Raspberry Pi GPIO header chip (…) among /dev/gpiochip0 (x)", True)
    monkeypatch.setattr(leds_mod, "find_gpiochip", lambda setting: (fault, [chip(0, "x")]))
    with caplog.at_level(logging.WARNING, logger="agent.shell.leds"), Leds(LedsConfig()) as leds:
        leds.set(LedState.HEALTHY)
        assert leds.mock and leds.kind == "mock"
        assert leds.faults() == {
            "leds": ("degraded", f"{fault.problem}; the other LEDs and the node carry on")
        }
    assert "no Raspberry Pi GPIO header chip" in caplog.text


def test_leds_pass_the_chip_found_to_lgpio_and_report_when_it_cannot_open(
    monkeypatch: pytest.MonkeyPatch, no_global_factory: None
) -> None:
    asked: list[object] = []
    found = Choice(4, "Raspberry Pi 5: /dev/gpiochip4 (pinctrl-rp1, 54 lines)", label="pinctrl-rp1")

    def find(setting: int | str) -> tuple[Choice, list[ChipInfo]]:
        asked.append(setting)
        return found, PI5_OLD

    def refuse(number: int, label: str) -> None:
        asked.append((number, label))
        raise OSError("no lgpio here")

    monkeypatch.setattr(leds_mod, "find_gpiochip", find)
    monkeypatch.setattr(leds_mod, "lgpio_factory", refuse)
    with Leds(LedsConfig(gpiochip="pinctrl-rp1")) as leds:
        assert asked == ["pinctrl-rp1", (4, "pinctrl-rp1")]
        problem = leds.faults()["leds"][1]
        assert "/dev/gpiochip4" in problem and "no lgpio here" in problem
