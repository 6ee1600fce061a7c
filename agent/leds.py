"""The node's health on GPIO LEDs, so a field tech can read a Pi at a glance.

Three steps, each replaceable on its own:

1. :func:`led_state` turns what the agent knows (its health status, how many origins are
   up and down) into one :class:`LedState`. It is pure, so the rules are easy to test.
2. :data:`PATTERNS` says what each LED does in each state (:class:`Pattern`: off, on, or
   blinking). docs/leds.md's table is generated from it (``python -m agent.leds``) and a
   test keeps the two equal.
3. :class:`Leds` drives gpiozero LEDs on the BCM pins from ``[leds]``. Off a Pi (no GPIO
   chip) it drives gpiozero's mock pins instead, so the agent runs the same on a laptop.

Adding a state later (searching for peers, disputed, an identify blink, a storage
fault…) means: a member in :class:`LedState`, a row in :data:`PATTERNS` and in
:data:`DESCRIPTIONS`, a rule in :func:`led_state`, and regenerating the docs table.
Another LED layout (one RGB LED) is another mapping with the same keys.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from agent.config import LEDS_COLOURS, LedsConfig
from agent.health import Status

log = logging.getLogger(__name__)


class LedState(StrEnum):
    """What the LEDs show, most urgent first. Values are stable names for APIs and docs."""

    FAILING = "failing"
    STARTING = "starting"
    SOME_DOWN = "some-down"
    ALL_UP = "all-up"


@dataclass(frozen=True, slots=True)
class Pattern:
    """What one LED does: ``off``, ``on``, or ``blink`` with its on and off times (seconds)."""

    mode: Literal["off", "on", "blink"] = "off"
    on_time: float = 0.0
    off_time: float = 0.0

    def __post_init__(self) -> None:
        if self.mode not in ("off", "on", "blink"):
            raise ValueError(f"unknown LED mode {self.mode!r}")
        if self.mode == "blink" and not (self.on_time > 0 and self.off_time > 0):
            raise ValueError("a blink needs positive on and off times")

    def describe(self) -> str:
        """How an operator would say it: "off", "on", "blinking (0.5 s on, 0.5 s off)"."""
        if self.mode == "blink":
            return f"blinking ({self.on_time:g} s on, {self.off_time:g} s off)"
        return self.mode


OFF = Pattern("off")
ON = Pattern("on")


def blink(on_time: float, off_time: float) -> Pattern:
    """A blinking LED: on for ``on_time`` seconds, off for ``off_time``, repeating."""
    return Pattern("blink", on_time, off_time)


#: The colours, in the order the LEDs sit on the board and the docs list them.
COLOURS: tuple[str, ...] = LEDS_COLOURS

#: For each state, the pattern of each colour; a colour not named is off.
PATTERNS: Mapping[LedState, Mapping[str, Pattern]] = MappingProxyType(
    {
        LedState.STARTING: MappingProxyType({"amber": blink(0.5, 0.5)}),
        LedState.ALL_UP: MappingProxyType({"green": ON}),
        LedState.SOME_DOWN: MappingProxyType({"amber": ON}),
        LedState.FAILING: MappingProxyType({"red": ON}),
    }
)

#: For each state: what it means, and what a field tech should do about it.
DESCRIPTIONS: Mapping[LedState, tuple[str, str]] = MappingProxyType(
    {
        LedState.STARTING: (
            "The agent is starting: loading its state, joining the cluster.",
            "Wait. It normally takes under a minute; if it blinks for more than five, "
            "check the network cable and `journalctl -u edge-agent`.",
        ),
        LedState.ALL_UP: (
            "This Pi is healthy and every origin it knows of is up "
            "(also when it has no origins to check yet).",
            "Nothing.",
        ),
        LedState.SOME_DOWN: (
            "This Pi works, but at least one origin is down, or the Pi reports a fault "
            "it can work around (degraded).",
            "Nothing on site: the Pi is doing its job. Tell the service owner; "
            "`edge-agent status` and `edge-agent origins` say which.",
        ),
        LedState.FAILING: (
            "This Pi cannot do its job (for example it cannot bind its ports or use its storage).",
            "Run `edge-agent status` or `journalctl -u edge-agent` for the reason; "
            "power-cycle once; if it stays red, replace the SD card or the Pi.",
        ),
    }
)


def led_state(health_status: Status | str, origins_up: int, origins_down: int) -> LedState:
    """The LED state for a node's health and its origins' verdicts.

    Red is about this Pi, never about the origins: a healthy node whose every origin is
    down shows amber. A healthy node with no origins shows green: there is nothing wrong
    to report. ``degraded`` shows amber until the LEDs get a state of their own for it.
    Origins whose verdict is unknown or disputed count neither way.
    """
    status = Status(health_status)
    if status is Status.FAILING:
        return LedState.FAILING
    if status is Status.STARTING:
        return LedState.STARTING
    if status is Status.DEGRADED or origins_down > 0:
        return LedState.SOME_DOWN
    return LedState.ALL_UP


def markdown_table(
    patterns: Mapping[LedState, Mapping[str, Pattern]] = PATTERNS,
    descriptions: Mapping[LedState, tuple[str, str]] = DESCRIPTIONS,
) -> str:
    """docs/leds.md's table: one row per state, one column per colour."""
    head = ["State", *(c.capitalize() for c in COLOURS), "What it means", "What to do"]
    rows = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for state in LedState:
        cells = [f"`{state.value}`"]
        for colour in COLOURS:
            pattern = patterns[state].get(colour, OFF)
            cells.append(f"**{pattern.describe()}**" if pattern != OFF else "off")
        cells.extend(descriptions[state])
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


# --- the driver ----------------------------------------------------------------------------


def looks_like_pi() -> bool:
    """True when this machine has a GPIO chip or says it is a Raspberry Pi."""
    if any(Path("/dev").glob("gpiochip*")) or Path("/dev/gpiomem").exists():
        return True
    try:
        return "Raspberry Pi" in Path("/proc/device-tree/model").read_text(errors="replace")
    except OSError:
        return False


_told_no_gpio = False


def default_pin_factory() -> Any:
    """None to use gpiozero's own pin factory (on a Pi), else a new MockFactory to own.

    ``GPIOZERO_PIN_FACTORY`` is honoured as gpiozero documents it. Failing to load a real
    factory on something that looks like a Pi is a warning (lgpio missing, or the unit's
    device sandbox); off a Pi mock pins are expected, and said once per process.
    """
    global _told_no_gpio
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    if Device.pin_factory is not None:
        return None
    if looks_like_pi() or os.environ.get("GPIOZERO_PIN_FACTORY"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gpiozero warns about each fallback it tries
                Device.ensure_pin_factory()
            return None
        except Exception as e:
            log.warning("GPIO present but unusable (%s): LEDs drive mock pins", e)
            return MockFactory()
    if not _told_no_gpio:
        _told_no_gpio = True
        log.info("no GPIO here: LEDs drive mock pins")
    return MockFactory()


class Leds:
    """Shows a :class:`LedState` on the LEDs configured in ``[leds]``.

    A colour whose pin is None is absent: its patterns are skipped. Errors from the GPIO
    layer are logged once and never raised, so a broken LED cannot stop the agent.
    """

    def __init__(
        self,
        config: LedsConfig,
        *,
        pin_factory: Any = None,
        patterns: Mapping[LedState, Mapping[str, Pattern]] = PATTERNS,
    ) -> None:
        """``pin_factory``: a gpiozero pin factory (tests pass a MockFactory); None picks one."""
        self.patterns = patterns
        self.state: LedState | None = None
        self.mock = False
        self._leds: dict[str, Any] = {}
        self._shown: dict[str, Pattern] = {}
        self._failed = False
        self._own_factory: Any = None
        pins = {c: getattr(config, c) for c in COLOURS} if config.enabled else {}
        pins = {c: p for c, p in pins.items() if p is not None}
        if not pins:
            return
        try:
            from gpiozero import LED, Device
            from gpiozero.pins.mock import MockFactory

            if pin_factory is None:
                pin_factory = self._own_factory = default_pin_factory()
            self.mock = isinstance(pin_factory or Device.pin_factory, MockFactory)
        except Exception as e:
            self._error("cannot load gpiozero", e)
            return
        for colour, pin in pins.items():
            try:
                self._leds[colour] = LED(pin, pin_factory=pin_factory)
            except Exception as e:
                self._error(f"cannot use GPIO{pin} for the {colour} LED", e)

    @property
    def colours(self) -> tuple[str, ...]:
        """The colours that have a working LED."""
        return tuple(self._leds)

    def describe(self) -> str:
        """What the LEDs show right now, in words: "green on", "amber blinking (…)"."""
        if not self._leds:
            return "none configured" if not self._failed else "unavailable (see the log)"
        shown = ((c, self._shown.get(c, OFF)) for c in self._leds)
        lit = [f"{c} {p.describe()}" for c, p in shown if p != OFF]
        text = ", ".join(lit) if lit else "all off"
        return f"{text} (mock pins)" if self.mock else text

    def _error(self, what: str, e: BaseException) -> None:
        if not self._failed:
            self._failed = True
            log.error("LEDs: %s: %s (carrying on without them)", what, e)
        else:
            log.debug("LEDs: %s: %s", what, e)

    def set(self, state: LedState) -> None:
        """Show ``state``. Cheap to call on every tick: LEDs change only when their pattern
        does, so a blink keeps its rhythm instead of restarting."""
        if state == self.state:
            return
        self.state = state
        wanted = self.patterns.get(state, {})
        for colour, led in self._leds.items():
            pattern = wanted.get(colour, OFF)
            if self._shown.get(colour) == pattern:
                continue
            try:
                if pattern.mode == "on":
                    led.on()
                elif pattern.mode == "blink":
                    led.blink(on_time=pattern.on_time, off_time=pattern.off_time)
                else:
                    led.off()
                self._shown[colour] = pattern
            except Exception as e:
                self._shown.pop(colour, None)
                self._error(f"cannot drive the {colour} LED", e)

    def close(self) -> None:
        """Turn the LEDs off and release their pins (safe to call twice)."""
        leds, self._leds = self._leds, {}
        for led in leds.values():
            try:
                led.off()
                led.close()
            except Exception as e:
                self._error("cannot release an LED", e)
        self._shown.clear()
        self.state = None
        if self._own_factory is not None:
            factory, self._own_factory = self._own_factory, None
            try:
                factory.close()
            except Exception as e:
                self._error("cannot close the mock pin factory", e)

    def __enter__(self) -> Leds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    # Regenerate docs/leds.md's table: python -m agent.leds
    print(markdown_table(), end="")
