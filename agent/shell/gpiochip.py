"""Which /dev/gpiochipN is the Raspberry Pi's 40-pin header: found by its label, not its number.

The number moves: on a Pi 5 the header (the RP1 I/O chip) is ``/dev/gpiochip4`` on older
kernels and ``gpiochip0`` on newer ones, and Debian's kernel numbers chips in probe order.
The label does not: it is the ``gpio_chip.label`` of the pin controller's driver, which the
kernel hands out through the GPIO character device (``GPIO_GET_CHIPINFO_IOCTL``):

===============  ==================================  ===================================
label            boards                              driver (Linux source, drivers/)
===============  ==================================  ===================================
pinctrl-rp1      Pi 5, CM5, Pi 500 (the RP1 chip)    pinctrl/pinctrl-rp1.c
pinctrl-bcm2711  Pi 4, Pi 400, CM4                   pinctrl/bcm/pinctrl-bcm2835.c
pinctrl-bcm2835  Pi 3, Zero 2 W, CM3 (BCM283x)       pinctrl/bcm/pinctrl-bcm2835.c
===============  ==================================  ===================================

:func:`choose` is pure (a list of :class:`ChipInfo` and the ``[leds] gpiochip`` setting in,
a :class:`Choice` out), so every board's case is unit-tested; :func:`list_chips` reads the
real chips with one ioctl each (python's fcntl: no library needed). The LEDs hand the
chosen number to gpiozero's ``LGPIOFactory(chip=N)`` (docs/leds.md, "Which GPIO chip").
``python -m agent.shell.gpiochip`` prints what it finds (``--json`` for scripts); the image
boot test runs it against simulated chips (image/pi_checks.py).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import struct
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

#: Header pin controllers by label, most recent board first, with the boards that have them.
KNOWN_LABELS: dict[str, str] = {
    "pinctrl-rp1": "Raspberry Pi 5 / CM5 / Pi 500 (RP1)",
    "pinctrl-bcm2711": "Raspberry Pi 4 / Pi 400 / CM4 (BCM2711)",
    "pinctrl-bcm2835": "Raspberry Pi 3 / Zero 2 W / CM3 (BCM2835 family)",
}

#: The header's GPIO0..27 need this many lines; a smaller chip with a known label is not it.
HEADER_LINES = 28

# struct gpiochip_info { char name[32]; char label[32]; __u32 lines; } (linux/gpio.h)
_INFO = struct.Struct("=32s32sI")
# _IOR(0xB4, 0x01, struct gpiochip_info)
GPIO_GET_CHIPINFO_IOCTL = (2 << 30) | (_INFO.size << 16) | (0xB4 << 8) | 0x01

_CHIP_NAME = re.compile(r"gpiochip(\d+)")


@dataclass(frozen=True, slots=True)
class ChipInfo:
    """One GPIO chip as the kernel describes it; ``error`` when it could not be asked."""

    path: str  # /dev/gpiochipN
    number: int  # N: what lgpio.gpiochip_open() and LGPIOFactory(chip=) take
    label: str = ""
    lines: int = 0
    error: str | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"{self.path} ({self.error})"
        return f"{self.path} ({self.label or 'no label'}, {self.lines} lines)"


@dataclass(frozen=True, slots=True)
class Choice:
    """The chip to drive the LEDs on, or why there is none.

    ``number`` None: no header chip. Then ``problem`` says why, and ``fault`` whether that is
    worth a standing fault (an explicit setting that does not match, or a machine that says
    it is a Pi) or just "not a Pi" (a laptop with some other GPIO chip: mock pins, quietly).
    """

    number: int | None
    why: str
    problem: str | None = None
    fault: bool = False
    label: str = ""


def chip_number(path: str) -> int | None:
    """N of ``/dev/gpiochipN`` (None for any other name)."""
    m = _CHIP_NAME.fullmatch(Path(path).name)
    return int(m.group(1)) if m else None


def read_chip_info(path: str) -> ChipInfo:
    """Ask the kernel about one chip (GPIO_GET_CHIPINFO_IOCTL): its label and line count.
    Needs read access to the device (the ``gpio`` group on the image and with Ansible)."""
    number = chip_number(path)
    assert number is not None, path
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        return ChipInfo(path, number, error=f"cannot open: {e.strerror or e}")
    try:
        buf = fcntl.ioctl(fd, GPIO_GET_CHIPINFO_IOCTL, bytes(_INFO.size))
    except OSError as e:
        return ChipInfo(path, number, error=f"not a GPIO chip ({e.strerror or e})")
    finally:
        os.close(fd)
    _name, label, lines = _INFO.unpack(buf)
    return ChipInfo(path, number, label.split(b"\0", 1)[0].decode(errors="replace"), int(lines))


def list_chips(
    dev: Path = Path("/dev"), read: Callable[[str], ChipInfo] = read_chip_info
) -> list[ChipInfo]:
    """Every /dev/gpiochipN, in number order, as the kernel describes it."""
    paths = [p for p in dev.glob("gpiochip*") if chip_number(str(p)) is not None]
    return [read(str(p)) for p in sorted(paths, key=lambda p: chip_number(str(p)) or 0)]


def parse_setting(value: object) -> int | str:
    """``[leds] gpiochip``: "auto", a chip number (4, "4", "gpiochip4", "/dev/gpiochip4"),
    or a label ("pinctrl-rp1"). Raises ValueError with the reason for anything else."""
    if isinstance(value, bool):
        raise ValueError('must be "auto", a chip number or a label, not a boolean')
    if isinstance(value, int):
        if not 0 <= value <= 1023:
            raise ValueError(f"{value} is not a chip number (0..1023)")
        return value
    if not isinstance(value, str) or not value.strip():
        raise ValueError('must be "auto", a chip number (4, "/dev/gpiochip4") or a label')
    text = value.strip()
    if text == "auto":
        return text
    if text.isdigit():
        return parse_setting(int(text))
    n = chip_number(text)
    if n is not None and (text.startswith("/dev/") or "/" not in text):
        return parse_setting(n)
    if len(text) > 31 or any(c.isspace() for c in text) or "/" in text:
        raise ValueError(f"{text!r} is neither a chip number nor a label (at most 31 characters)")
    return text


def choose(
    chips: Iterable[ChipInfo], setting: int | str = "auto", *, says_pi: bool = False
) -> Choice:
    """The header chip among ``chips`` for the ``[leds] gpiochip`` ``setting``.

    "auto": the first chip (lowest number) whose label is one of :data:`KNOWN_LABELS` and
    which has the header's lines. A number or a label: that chip, or a fault saying what
    is there instead. ``says_pi``: the machine says it is a Raspberry Pi (device-tree
    model), so finding no header chip is a fault rather than "not a Pi".
    """
    chips = list(chips)
    seen = ", ".join(c.describe() for c in chips) or "no /dev/gpiochip* at all"
    if isinstance(setting, int):
        for c in chips:
            if c.number == setting and c.error is None:
                return Choice(
                    c.number, f"[leds] gpiochip = {setting}: {c.describe()}", label=c.label
                )
        return Choice(
            None,
            "",
            f"[leds] gpiochip = {setting}, but there is no usable /dev/gpiochip{setting} "
            f"(found: {seen})",
            fault=True,
        )
    if setting != "auto":
        for c in chips:
            if c.label == setting and c.error is None:
                return Choice(
                    c.number, f'[leds] gpiochip = "{setting}": {c.describe()}', label=c.label
                )
        return Choice(
            None,
            "",
            f'[leds] gpiochip = "{setting}", but no chip has that label (found: {seen})',
            fault=True,
        )
    for label, board in KNOWN_LABELS.items():
        for c in chips:
            if c.error is None and c.label == label and c.lines >= HEADER_LINES:
                return Choice(c.number, f"{board}: {c.describe()}", label=c.label)
    known = ", ".join(KNOWN_LABELS)
    unreadable = [c for c in chips if c.error is not None]
    problem = (
        f"no Raspberry Pi GPIO header chip (a label of {known}) among {seen}"
        + ("; is the user in the gpio group?" if unreadable else "")
        + "; set [leds] gpiochip to its number or label (docs/leds.md)"
    )
    return Choice(None, "", problem, fault=says_pi or bool(unreadable))


def says_raspberry_pi(model: Path = Path("/proc/device-tree/model")) -> bool:
    """The device tree's model names a Raspberry Pi."""
    try:
        return "Raspberry Pi" in model.read_text(errors="replace")
    except OSError:
        return False


def find(setting: int | str = "auto", dev: Path = Path("/dev")) -> tuple[Choice, list[ChipInfo]]:
    """The header chip on this machine for ``setting`` (see :func:`choose`), and every chip seen."""
    chips = list_chips(dev)
    return choose(chips, setting, says_pi=says_raspberry_pi()), chips


def main(argv: list[str] | None = None) -> int:
    """Print the chips and the one the LEDs would use; exit 1 when there is none."""
    ap = argparse.ArgumentParser(
        prog="python -m agent.shell.gpiochip", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--gpiochip", default="auto", help='as [leds] gpiochip (default "auto")')
    ap.add_argument("--dev", default="/dev", help="where the gpiochip devices are")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        setting = parse_setting(args.gpiochip)
    except ValueError as e:
        print(f"--gpiochip: {e}", file=sys.stderr)
        return 2
    choice, chips = find(setting, Path(args.dev))
    if args.json:
        print(json.dumps({"choice": asdict(choice), "chips": [asdict(c) for c in chips]}))
    else:
        for c in chips:
            print(c.describe())
        print(
            f"LEDs: gpiochip{choice.number} ({choice.why})"
            if choice.number is not None
            else f"LEDs: {choice.problem}"
        )
    return 0 if choice.number is not None else 1


if __name__ == "__main__":
    sys.exit(main())
