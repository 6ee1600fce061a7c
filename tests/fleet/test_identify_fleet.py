"""Identify across real hosts: asked on one host, another host's pins blink (issue 8).

The target's LEDs are gpiozero mock pins (no GPIO here); /v1/health reads their levels
back from gpiozero, and the test samples them from outside to see the blink.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_harness.fleet import Fleet, wait

MakeFleet = Callable[..., Fleet]


def test_identify_aimed_at_another_host_blinks_its_pins(fleet: MakeFleet) -> None:
    f = fleet()
    hosts = f.add_many(3)
    for h in hosts:
        h.leds_toml = "[leds]\ngreen = 17\namber = 27\nred = 22\n"
    f.start()
    f.wait_converged(30)
    asker, target = hosts[0], hosts[2]
    status, body = asker.call("POST", "/v1/identify", {"node": target.name, "seconds": 20})
    assert status == 202, body
    wait(lambda: target.health()["led"]["state"] == "identify", 10, "the target identifies")
    seen: set[tuple[float, ...]] = set()
    end = time.monotonic() + 10
    while not {(1.0, 1.0, 1.0), (0.0, 0.0, 0.0)} <= seen:
        assert time.monotonic() < end, f"no blink seen on {target.name}'s pins: {seen}"
        pins = target.health()["led"]["pins"]
        seen.add((pins["green"], pins["amber"], pins["red"]))
        time.sleep(0.03)  # pacing of the samples
    for other in hosts[:2]:
        assert other.health()["led"]["state"] != "identify"
