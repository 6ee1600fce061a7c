"""The LEDs find each board's header chip by label on real (simulated) kernel GPIO chips.

image/gpiosim_vm.sh boots Debian's trixie-backports kernel under QEMU (the build machine's
kernel has no gpio-sim) and runs image/pi_checks.py's check_gpiochip_by_label there: a
gpio-sim chip labelled pinctrl-rp1, pinctrl-bcm2711 and pinctrl-bcm2835 in turn, each
numbered after a decoy chip. Opt-in like the rest of tests/image (EDGE_AGENT_IMAGE_TEST=1):
it needs root, QEMU and Debian's mirror, and takes minutes under TCG.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow]


@pytest.mark.timeout(1200)
def test_each_boards_label_is_found_on_a_gpio_sim_chip() -> None:
    assert os.geteuid() == 0, "the gpio-sim VM test runs as root"
    r = subprocess.run(
        ["bash", str(ROOT / "image" / "gpiosim_vm.sh")],
        capture_output=True,
        text=True,
        timeout=1150,
        check=False,
    )
    print(r.stdout)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    for board in ("Raspberry Pi 5", "Raspberry Pi 4", "Raspberry Pi 3 / Zero 2 W"):
        assert f"ok    {board}: healthy lights GPIO17" in r.stdout
