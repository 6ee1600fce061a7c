"""The node's health on LEDs, so a field tech can read a Pi at a glance.

Three steps, each replaceable on its own:

1. :func:`led_state_for` turns what the agent knows about itself (a :class:`Condition`:
   starting, faults, cluster membership, its origins' verdicts, identify) into one
   :class:`LedState`. When several states hold, the most urgent wins (the order of
   :class:`LedState`). It is pure, so the rules are easy to test.
2. The pattern tables say what the LEDs do in each state: :data:`PATTERNS` for three
   single-colour LEDs (green, amber, red), :data:`RGB_PATTERNS` for one RGB LED, and
   :data:`ACT_PATTERNS` for the board's own ACT LED. docs/leds.md's tables are generated
   from them (``python -m agent.shell.leds``) and a test keeps docs and code equal.
3. :class:`Leds` drives gpiozero LEDs on the BCM pins from ``[leds]`` (and, when asked,
   the ACT LED through sysfs). Off a Pi (no GPIO chip) it drives gpiozero's mock pins
   instead, so the agent runs the same on a laptop.

Adding a state means: a member in :class:`LedState` (at its priority), a row in each
pattern table and in :data:`DESCRIPTIONS`, a rule in :func:`led_state_for`, and
regenerating the docs tables.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from agent.domain import HealthStatus as Status
from agent.shell.config import LEDS_COLOURS, LedsConfig
from agent.shell.gpiochip import find as find_gpiochip
from agent.shell.gpiochip import says_raspberry_pi

log = logging.getLogger(__name__)


class LedState(StrEnum):
    """What the LEDs show, most urgent first. Values are stable names for APIs and docs."""

    IDENTIFY = "identify"
    FAULT = "fault"
    STORAGE_FAULT = "storage-fault"
    STARTING = "starting"
    SUSPECTED = "suspected"
    SEARCHING = "searching"
    IMPAIRED = "impaired"
    DISPUTED = "disputed"
    SOME_DOWN = "some-down"
    HEALTHY = "healthy"


# --- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Condition:
    """Everything the LEDs may report about this node, as the runtime sees it right now."""

    starting: bool = False  # not READY yet
    fault: str | None = None  # config, keyring or name-conflict fault (node health failing)
    storage_fault: str | None = None
    suspected: bool = False  # others suspect us / our Lifeguard health score > 0 / degraded
    alone: bool = False  # no live peer
    impaired: bool = False  # an impaired vantage point: its checks fail, others see up
    owned: int = 0  # origins this node checks
    down: int = 0  # of those, verdict down
    disputed: int = 0  # of those, verdict disputed
    identify: bool = False  # an identify request is active


def led_state_for(c: Condition) -> LedState:
    """The one state to show for condition ``c``: the most urgent that holds.

    Identify wins over everything: whoever asked is standing at the rack looking for this
    Pi, whatever it is doing. Then what is wrong with this Pi itself (faults, storage,
    still starting, suspected by its peers), then being alone, and only then the origins
    it checks: an origin being down is the website's problem, not the Pi's. Origins whose
    verdict is unknown (not checked yet) count neither as up nor as down.
    """
    if c.identify:
        return LedState.IDENTIFY
    if c.fault:
        return LedState.FAULT
    if c.storage_fault:
        return LedState.STORAGE_FAULT
    if c.starting:
        return LedState.STARTING
    if c.suspected:
        return LedState.SUSPECTED
    if c.alone:
        return LedState.SEARCHING
    if c.impaired:
        return LedState.IMPAIRED
    if c.disputed > 0:
        return LedState.DISPUTED
    if c.down > 0:
        return LedState.SOME_DOWN
    return LedState.HEALTHY


def led_state(health_status: Status | str, origins_up: int, origins_down: int) -> LedState:
    """Deprecated: the state from health status and verdict counts alone.

    Kept while the runtime moves to :func:`led_state_for`; it knows nothing of peers,
    storage or identify, so failing maps to ``fault`` and degraded to ``suspected``.
    """
    status = Status(health_status)
    return led_state_for(
        Condition(
            starting=status is Status.STARTING,
            fault="failing" if status is Status.FAILING else None,
            suspected=status is Status.DEGRADED,
            owned=origins_up + origins_down,
            down=origins_down,
        )
    )


# --- patterns -------------------------------------------------------------------------------


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

#: The three-LED layout: for each state, the pattern of each colour; a colour not named
#: is off. Red is about this Pi, amber asks for a look some time, green is fine.
PATTERNS: Mapping[LedState, Mapping[str, Pattern]] = MappingProxyType(
    {
        LedState.IDENTIFY: MappingProxyType(
            {"green": blink(0.2, 0.2), "amber": blink(0.2, 0.2), "red": blink(0.2, 0.2)}
        ),
        LedState.FAULT: MappingProxyType({"red": ON}),
        LedState.STORAGE_FAULT: MappingProxyType({"amber": ON, "red": ON}),
        LedState.STARTING: MappingProxyType({"amber": blink(0.5, 0.5)}),
        LedState.SUSPECTED: MappingProxyType({"red": blink(1, 1)}),
        LedState.SEARCHING: MappingProxyType({"green": blink(1, 1)}),
        LedState.IMPAIRED: MappingProxyType({"amber": ON, "red": blink(1, 1)}),
        LedState.DISPUTED: MappingProxyType({"green": ON, "amber": ON}),
        LedState.SOME_DOWN: MappingProxyType({"amber": ON}),
        LedState.HEALTHY: MappingProxyType({"green": ON}),
    }
)

#: Colours one RGB LED can show, as gpiozero RGBLED values (red, green, blue), 0..1.
#: Amber needs PWM; without it, it is shown as yellow (every component > 0 fully on).
RGB_COLOURS: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "off": (0.0, 0.0, 0.0),
        "red": (1.0, 0.0, 0.0),
        "amber": (1.0, 0.4, 0.0),
        "green": (0.0, 1.0, 0.0),
        "blue": (0.0, 0.0, 1.0),
        "magenta": (1.0, 0.0, 1.0),
        "white": (1.0, 1.0, 1.0),
    }
)


@dataclass(frozen=True, slots=True)
class RgbPattern:
    """What one RGB LED does: ``colour`` on, or blinking between ``colour`` and ``off_colour``."""

    colour: str
    pattern: Pattern = ON
    off_colour: str = "off"

    def __post_init__(self) -> None:
        for c in (self.colour, self.off_colour):
            if c not in RGB_COLOURS:
                raise ValueError(f"unknown RGB colour {c!r}")
        if self.pattern.mode == "off":
            raise ValueError("an RGB pattern is on or blinking; use colour 'off' for dark")

    def describe(self) -> str:
        """ "amber on", "red blinking (1 s on, 1 s off)", "green and amber alternating (…)"."""
        p = self.pattern
        if p.mode == "on":
            return f"{self.colour} on"
        if self.off_colour == "off":
            return f"{self.colour} {p.describe()}"
        return (
            f"{self.colour} and {self.off_colour} alternating "
            f"({p.on_time:g} s {self.colour}, {p.off_time:g} s {self.off_colour})"
        )


#: The RGB layout: one LED, one pattern per state. Same colours as the three LEDs where
#: one LED is lit; where two are lit it shows a colour of its own.
RGB_PATTERNS: Mapping[LedState, RgbPattern] = MappingProxyType(
    {
        LedState.IDENTIFY: RgbPattern("white", blink(0.2, 0.2)),
        LedState.FAULT: RgbPattern("red"),
        LedState.STORAGE_FAULT: RgbPattern("magenta"),
        LedState.STARTING: RgbPattern("amber", blink(0.5, 0.5)),
        LedState.SUSPECTED: RgbPattern("red", blink(1, 1)),
        LedState.SEARCHING: RgbPattern("blue", blink(1, 1)),
        LedState.IMPAIRED: RgbPattern("red", blink(1, 1), off_colour="amber"),
        LedState.DISPUTED: RgbPattern("green", blink(1, 1), off_colour="amber"),
        LedState.SOME_DOWN: RgbPattern("amber"),
        LedState.HEALTHY: RgbPattern("green"),
    }
)

#: The board's ACT LED (one green LED, no choice of colour): five rhythms for the Pi's
#: own health. Steady on is fine; a flicker is identify.
ACT_PATTERNS: Mapping[LedState, Pattern] = MappingProxyType(
    {
        LedState.IDENTIFY: blink(0.1, 0.1),
        LedState.FAULT: blink(0.5, 0.5),
        LedState.STORAGE_FAULT: blink(0.5, 0.5),
        LedState.STARTING: blink(0.2, 1.8),
        LedState.SUSPECTED: blink(0.5, 0.5),
        LedState.SEARCHING: blink(0.2, 1.8),
        LedState.IMPAIRED: blink(1, 1),
        LedState.DISPUTED: blink(1.8, 0.2),
        LedState.SOME_DOWN: blink(1.8, 0.2),
        LedState.HEALTHY: ON,
    }
)

#: For each state: its meaning in a few words (the API's ``led.meaning``), more detail,
#: and what a field tech should do about it.
DESCRIPTIONS: Mapping[LedState, tuple[str, str, str]] = MappingProxyType(
    {
        LedState.IDENTIFY: (
            "someone asked this Pi to show itself",
            "`edge-agent identify` or `POST /v1/identify` named this Pi; it stops by itself "
            "(30 s unless asked for longer) and then shows its state again.",
            "This is the Pi you are looking for.",
        ),
        LedState.FAULT: (
            "this Pi cannot do its job: a configuration, key or name fault",
            "For example a wrong gossip key, another Pi with the same name, or a port it "
            "cannot bind.",
            "Run `edge-agent status` or `journalctl -u edge-agent` for the reason; it names "
            "the key or the other node. Fix the config and `systemctl restart edge-agent`.",
        ),
        LedState.STORAGE_FAULT: (
            "this Pi cannot write its state to storage",
            "Its SD card (or data directory) fails or is full; it keeps checking but may "
            "lose what it learnt on a restart.",
            "`edge-agent status` says why. Free space or replace the SD card.",
        ),
        LedState.STARTING: (
            "the agent is starting",
            "It is loading its state and joining the cluster.",
            "Wait. It normally takes under a minute; if it blinks for more than five, "
            "check the network cable and `journalctl -u edge-agent`.",
        ),
        LedState.SUSPECTED: (
            "the other Pis hear this one badly, or it is degraded",
            "Its peers suspect it has failed, or it is slow to answer them (overloaded, "
            "flaky network), or it reports a fault it can work around.",
            "Check the network cable and the power supply; `edge-agent status` names the reason.",
        ),
        LedState.SEARCHING: (
            "searching for peers: no other Pi of the cluster in sight",
            "It works, alone: it has no live peer, so it checks every origin itself and "
            "nobody shares its verdicts.",
            "Check the network cable; if its peers are down, look at them. "
            "`edge-agent members` lists who it knows.",
        ),
        LedState.IMPAIRED: (
            "this Pi's network cannot reach the origins (the origins are fine)",
            "Most origins fail when checked from this Pi while Pis at other sites see them "
            "up: its uplink, router, firewall or DNS is broken. Its checks do not count "
            "towards the fleet's verdicts until it sees again; the other sites decide.",
            "Check this site's router and internet link (and DNS): `edge-agent status` names "
            "how many origins fail here; the origins themselves are fine.",
        ),
        LedState.DISPUTED: (
            "checkers disagree about an origin this Pi checks",
            "At least one of its origins is up for one checker and down for another, "
            "often a network path problem between one Pi and that origin.",
            "Nothing on site unless it lasts; `edge-agent origins --mine` shows which origin.",
        ),
        LedState.SOME_DOWN: (
            "some origins this Pi checks are down",
            "The Pi itself works: the websites are the problem.",
            "Nothing on site: the Pi is doing its job. Tell the service owner; "
            "`edge-agent origins --mine` says which.",
        ),
        LedState.HEALTHY: (
            "in the cluster, and every origin it checks is up",
            "Its storage is fine too. Also shown when it has no origins to check (nothing "
            "is wrong), while its origins are not checked yet, and by a node alone by "
            "design (no `join`, no remembered peer, `discover = false`), whose "
            '`edge-agent status` then says "alone by design", not "in the cluster".',
            "Nothing.",
        ),
    }
)


HEALTHY_ALONE_BY_DESIGN = "alone by design (no peer to look for), and every origin it checks is up"


def meaning(state: LedState, *, alone_by_design: bool = False) -> str:
    """One line saying what ``state`` means, for /v1/health and `edge-agent status`.
    ``alone_by_design``: the node has no way to find a peer (may_find_peers), so
    ``healthy`` must not claim it is in a cluster."""
    if alone_by_design and LedState(state) is LedState.HEALTHY:
        return HEALTHY_ALONE_BY_DESIGN
    return DESCRIPTIONS[LedState(state)][0]


def patterns_json() -> str:
    """Every layout's patterns as JSON, for the dashboard to draw the LEDs as they blink."""

    def pat(p: Pattern) -> dict[str, Any]:
        return {"mode": p.mode, "on": p.on_time, "off": p.off_time}

    doc = {
        "colours": list(COLOURS),
        "rgb_colours": {k: list(v) for k, v in RGB_COLOURS.items()},
        "states": {
            s.value: {
                "meaning": meaning(s),
                "three": {c: pat(PATTERNS[s].get(c, OFF)) for c in COLOURS},
                "rgb": {
                    "colour": RGB_PATTERNS[s].colour,
                    "off_colour": RGB_PATTERNS[s].off_colour,
                    **pat(RGB_PATTERNS[s].pattern),
                },
                "act": pat(ACT_PATTERNS[s]),
            }
            for s in LedState
        },
    }
    return json.dumps(doc, separators=(",", ":"))


# --- the docs tables ------------------------------------------------------------------------


def _pattern_cell(p: Pattern) -> str:
    return f"**{p.describe()}**" if p != OFF else "off"


def markdown_table(
    patterns: Mapping[LedState, Mapping[str, Pattern]] = PATTERNS,
    descriptions: Mapping[LedState, tuple[str, str, str]] = DESCRIPTIONS,
) -> str:
    """docs/leds.md's main table: one row per state, most urgent first, a column a colour."""
    head = ["State", *(c.capitalize() for c in COLOURS), "What it means", "What to do"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for state in LedState:
        cells = [f"`{state.value}`"]
        cells.extend(_pattern_cell(patterns[state].get(c, OFF)) for c in COLOURS)
        short, detail, todo = descriptions[state]
        cells.extend([f"{short[0].upper()}{short[1:]}. {detail}", todo])
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def rgb_markdown_table(
    rgb: Mapping[LedState, RgbPattern] = RGB_PATTERNS,
    act: Mapping[LedState, Pattern] = ACT_PATTERNS,
) -> str:
    """docs/leds.md's table for one RGB LED and for the board's ACT LED."""
    rows = ["| State | One RGB LED | ACT LED (mirror) |", "|---|---|---|"]
    for state in LedState:
        rows.append(f"| `{state.value}` | **{rgb[state].describe()}** | {act[state].describe()} |")
    return "\n".join(rows) + "\n"


# --- the driver ----------------------------------------------------------------------------


def looks_like_pi() -> bool:
    """True when this machine has a GPIO chip or says it is a Raspberry Pi."""
    if any(Path("/dev").glob("gpiochip*")) or Path("/dev/gpiomem").exists():
        return True
    return says_raspberry_pi()


_told_no_gpio = False

#: A board revision per header chip label, for a kernel booted without the Pi firmware's
#: ``/system/linux,revision`` (UEFI or U-Boot boots, QEMU's raspi4b): gpiozero needs a board
#: to map BCM pin numbers, and GPIO0..27 sit on the same header pins on every 40-pin board.
FALLBACK_REVISIONS: Mapping[str, int] = MappingProxyType(
    {"pinctrl-rp1": 0xC04170, "pinctrl-bcm2711": 0xC03111, "pinctrl-bcm2835": 0xA02082}
)


def lgpio_factory(number: int, label: str = "") -> Any:
    """gpiozero's LGPIOFactory on ``/dev/gpiochip{number}``, found by label (gpiochip.py)
    rather than gpiozero's own guess (chip 4 on a Pi 5 when it exists, else 0). Where the
    kernel does not tell the board's revision, the revision of a board with that label is
    used (FALLBACK_REVISIONS)."""
    from gpiozero.exc import PinUnknownPi
    from gpiozero.pins.lgpio import LGPIOFactory
    from gpiozero.pins.local import get_pi_revision

    fallback = FALLBACK_REVISIONS.get(label)

    class HeaderFactory(LGPIOFactory):
        def _get_revision(self) -> int:
            try:
                return int(get_pi_revision())
            except PinUnknownPi:
                if fallback is None:
                    raise
                log.info(
                    "LEDs: the kernel does not say which Pi this is: using the pin map of "
                    "a board with %s",
                    label,
                )
                return fallback

    return HeaderFactory(chip=number)


def default_pin_factory(
    *, pwm: bool = False, gpiochip: int | str = "auto"
) -> tuple[Any, str | None]:
    """(a pin factory for the LEDs to own, or None for gpiozero's global one; a problem).

    ``GPIOZERO_PIN_FACTORY`` is honoured as gpiozero documents it. Otherwise the header's
    gpiochip is found by label, or as ``[leds] gpiochip`` says (gpiochip.py), and driven
    through lgpio. The problem is a sentence for /v1/health when the LEDs cannot light
    although they should (no header chip on a Raspberry Pi, the configured chip missing,
    lgpio unable to open it); mock pins are driven then. Off a Pi (no chip with a Pi
    label, nothing saying Pi) mock pins are expected, and said once per process. ``pwm``
    asks for mock pins that can dim (an RGB LED mixes amber from red and some green).
    """
    global _told_no_gpio
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    def mock() -> Any:
        return MockFactory(pin_class=MockPWMPin) if pwm else MockFactory()

    if Device.pin_factory is not None:
        return None, None
    if os.environ.get("GPIOZERO_PIN_FACTORY"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # gpiozero warns about each fallback it tries
                Device.ensure_pin_factory()
            return None, None
        except Exception as e:
            log.warning("GPIO present but unusable (%s): LEDs drive mock pins", e)
            return mock(), None
    choice, chips = find_gpiochip(gpiochip)
    if choice.number is not None:
        try:
            factory = lgpio_factory(choice.number, choice.label)
        except Exception as e:
            problem = f"cannot open /dev/gpiochip{choice.number} ({choice.why}): {e}"
            log.warning("LEDs: %s: driving mock pins", problem)
            return mock(), problem
        log.info("LEDs: GPIO on /dev/gpiochip%d: %s", choice.number, choice.why)
        return factory, None
    if choice.fault:
        log.warning("LEDs: %s: driving mock pins", choice.problem)
        return mock(), choice.problem
    if not _told_no_gpio:
        _told_no_gpio = True
        if chips:
            log.info("no Raspberry Pi GPIO here (%s): LEDs drive mock pins", choice.problem)
        else:
            log.info("no GPIO here: LEDs drive mock pins")
    return mock(), None


#: Where Linux lists the board's own LEDs; tests point :class:`Leds` at a temp dir instead.
SYSFS_LEDS = Path("/sys/class/leds")

#: The ACT LED's name: "ACT" on current Raspberry Pi OS kernels, "led0" on older ones.
ACT_NAMES = ("ACT", "led0")


class ActLed:
    """The board's ACT LED, driven through sysfs: the kernel blinks it, no thread needed.

    Solid patterns write ``none`` to ``trigger`` and then ``brightness``; blinks use the
    kernel's ``timer`` trigger with ``delay_on``/``delay_off`` in milliseconds. The trigger
    it had (usually ``mmc0`` or ``actpwr``, disk activity) is put back on :meth:`restore`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.original = "none"
        self.max_brightness = "1"
        trigger = (path / "trigger").read_text()
        for word in trigger.split():
            if word.startswith("[") and word.endswith("]"):
                self.original = word[1:-1]
        with contextlib.suppress(OSError):  # absent on some kernels: 1 is the usual maximum
            self.max_brightness = (path / "max_brightness").read_text().strip() or "1"

    @classmethod
    def find(cls, root: Path) -> ActLed | None:
        """The ACT LED under ``root``, or None when this board has none."""
        for name in ACT_NAMES:
            if (root / name / "trigger").exists():
                return cls(root / name)
        return None

    def _write(self, name: str, value: str) -> None:
        with open(self.path / name, "w") as f:
            f.write(value)

    def show(self, pattern: Pattern) -> None:
        """Show ``pattern`` (raises OSError, e.g. without write access to sysfs)."""
        if pattern.mode == "blink":
            self._write("trigger", "timer")
            self._write("delay_on", str(round(pattern.on_time * 1000)))
            self._write("delay_off", str(round(pattern.off_time * 1000)))
        else:
            self._write("trigger", "none")
            self._write("brightness", self.max_brightness if pattern.mode == "on" else "0")

    def restore(self) -> None:
        """Give the LED back to the kernel trigger it had before."""
        self._write("trigger", self.original)


class Leds:
    """Shows a :class:`LedState` on the LEDs configured in ``[leds]``.

    ``layout = "three"``: a gpiozero LED per configured colour; a colour whose pin is None
    is absent and its patterns are skipped. ``layout = "rgb"``: one gpiozero RGBLED. With
    ``act = true`` the board's ACT LED mirrors the state too. Errors from the GPIO layer or
    sysfs are logged once and never raised, so a broken LED cannot stop the agent.
    """

    def __init__(
        self,
        config: LedsConfig,
        *,
        pin_factory: Any = None,
        patterns: Mapping[LedState, Mapping[str, Pattern]] = PATTERNS,
        rgb_patterns: Mapping[LedState, RgbPattern] = RGB_PATTERNS,
        act_patterns: Mapping[LedState, Pattern] = ACT_PATTERNS,
        sysfs_root: Path = SYSFS_LEDS,
    ) -> None:
        """``pin_factory``: a gpiozero pin factory (tests pass a MockFactory); None picks one.
        ``sysfs_root``: where to look for the ACT LED (tests pass a temp dir)."""
        self.patterns = patterns
        self.rgb_patterns = rgb_patterns
        self.act_patterns = act_patterns
        self.state: LedState | None = None
        self.mock = False
        self._leds: dict[str, Any] = {}
        self._shown: dict[str, Pattern] = {}
        self._rgb: Any = None
        self._rgb_pwm = True
        self._rgb_shown: RgbPattern | None = None
        self._act: ActLed | None = None
        self._act_shown: Pattern | None = None
        self._failed = False
        self.problem: str | None = None  # the first LED failure, for /v1/health
        self._own_factory: Any = None
        if not config.enabled:
            return
        if config.act:
            try:
                self._act = ActLed.find(sysfs_root)
                if self._act is None:
                    log.info("LEDs: no ACT LED under %s: not mirroring to it", sysfs_root)
            except OSError as e:
                self._error("cannot read the ACT LED", e)
        rgb = config.layout == "rgb" and config.rgb is not None
        pins = {c: getattr(config, c) for c in COLOURS} if config.layout == "three" else {}
        pins = {c: p for c, p in pins.items() if p is not None}
        if not pins and not rgb:
            return
        try:
            from gpiozero import LED, RGBLED, Device
            from gpiozero.pins.mock import MockFactory

            if pin_factory is None:
                pin_factory, problem = default_pin_factory(pwm=rgb, gpiochip=config.gpiochip)
                self._own_factory = pin_factory
                if problem is not None:
                    self._failed = True
                    self.problem = problem
            self.mock = isinstance(pin_factory or Device.pin_factory, MockFactory)
        except Exception as e:
            self._error("cannot load gpiozero", e)
            return
        if rgb:
            assert config.rgb is not None
            r, g, b = config.rgb
            high = not config.common_anode
            try:
                self._rgb = RGBLED(r, g, b, active_high=high, pwm=True, pin_factory=pin_factory)
            except Exception as e:  # no PWM on these pins: full colours only
                log.info("LEDs: no PWM for the RGB LED (%s): amber shows as yellow", e)
                self._rgb_pwm = False
                try:
                    self._rgb = RGBLED(
                        r, g, b, active_high=high, pwm=False, pin_factory=pin_factory
                    )
                except Exception as e2:
                    self._error(f"cannot use GPIO{r},{g},{b} for the RGB LED", e2)
        for colour, pin in pins.items():
            try:
                self._leds[colour] = LED(pin, pin_factory=pin_factory)
            except Exception as e:
                self._error(f"cannot use GPIO{pin} for the {colour} LED", e)

    @property
    def colours(self) -> tuple[str, ...]:
        """The colours that have a working LED ("rgb" for an RGB LED)."""
        return ("rgb",) if self._rgb is not None else tuple(self._leds)

    def levels(self) -> dict[str, float]:
        """The output level of every pin right now (0..1; an RGB LED as "r", "g", "b"),
        read back from gpiozero: what the API shows as the pins, and what a remote test
        samples to see a node blink."""
        out: dict[str, float] = {}
        try:
            if self._rgb is not None:
                for name, v in zip("rgb", self._rgb.value, strict=True):
                    out[name] = round(float(v), 3)
            for colour, led in self._leds.items():
                out[colour] = float(led.value)
        except Exception as e:  # reading back must never break the API
            self._error("cannot read the LED pins", e)
        return out

    @property
    def kind(self) -> str:
        """What blinks: "gpio" (real LEDs, or the board's ACT LED), "mock" (gpiozero's mock
        pins: no GPIO here, nothing lights), or "none" (disabled, no pins, or all failed).
        An identify answer says it, so nobody is told to look for a blink that cannot be."""
        if self._act is not None:
            return "gpio"
        if self._rgb is None and not self._leds:
            return "none"
        return "mock" if self.mock else "gpio"

    def describe(self) -> str:
        """What the LEDs show right now, in words: "green on", "amber blinking (…)"."""
        if self._rgb is not None:
            shown = self._rgb_shown
            text = f"RGB {shown.describe()}" if shown is not None else "RGB off"
        elif self._leds:
            pats = ((c, self._shown.get(c, OFF)) for c in self._leds)
            lit = [f"{c} {p.describe()}" for c, p in pats if p != OFF]
            text = ", ".join(lit) if lit else "all off"
        elif self._act is not None:
            text = "none configured"
        else:
            return "none configured" if not self._failed else "unavailable (see the log)"
        if self._act is not None and self._act_shown is not None:
            text += f"; ACT {self._act_shown.describe()}"
        return f"{text} (mock pins)" if self.mock else text

    def faults(self) -> dict[str, tuple[str, str]]:
        """A standing fault while an LED cannot be driven: the node works on without it,
        but whoever looks at the Pi may be misled, so /v1/health and status say so."""
        if self.problem is None:
            return {}
        return {"leds": ("degraded", f"{self.problem}; the other LEDs and the node carry on")}

    def _error(self, what: str, e: BaseException) -> None:
        if not self._failed:
            self._failed = True
            self.problem = f"{what}: {e}"
            log.error("LEDs: %s: %s (carrying on without them)", what, e)
        else:
            log.debug("LEDs: %s: %s", what, e)

    def _rgb_value(self, colour: str) -> tuple[float, float, float]:
        r, g, b = RGB_COLOURS[colour]
        if self._rgb_pwm:
            return (r, g, b)
        return (float(r > 0), float(g > 0), float(b > 0))

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
        rgb = self.rgb_patterns.get(state)
        if self._rgb is not None and rgb is not None and rgb != self._rgb_shown:
            try:
                if rgb.pattern.mode == "blink":
                    self._rgb.blink(
                        on_time=rgb.pattern.on_time,
                        off_time=rgb.pattern.off_time,
                        on_color=self._rgb_value(rgb.colour),
                        off_color=self._rgb_value(rgb.off_colour),
                    )
                else:
                    self._rgb.value = self._rgb_value(rgb.colour)
                self._rgb_shown = rgb
            except Exception as e:
                self._rgb_shown = None
                self._error("cannot drive the RGB LED", e)
        act = self.act_patterns.get(state)
        if self._act is not None and act is not None and act != self._act_shown:
            try:
                self._act.show(act)
                self._act_shown = act
            except OSError as e:
                self._act_shown = None
                self._error(f"cannot drive the ACT LED at {self._act.path}", e)

    def close(self) -> None:
        """Turn the LEDs off, release their pins, give ACT back (safe to call twice)."""
        leds, self._leds = self._leds, {}
        rgb, self._rgb = self._rgb, None
        for led in [*leds.values(), *([rgb] if rgb is not None else [])]:
            try:
                led.off()
                led.close()
            except Exception as e:
                self._error("cannot release an LED", e)
        self._shown.clear()
        self._rgb_shown = None
        act, self._act = self._act, None
        if act is not None and self._act_shown is not None:
            try:
                act.restore()
            except OSError as e:
                self._error("cannot give the ACT LED back", e)
        self._act_shown = None
        self.state = None
        if self._own_factory is not None:
            factory, self._own_factory = self._own_factory, None
            try:
                factory.close()
            except Exception as e:
                self._error("cannot close the pin factory", e)

    def __enter__(self) -> Leds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    # Regenerate docs/leds.md's tables: python -m agent.shell.leds (each goes between its markers)
    print("<!-- LED TABLE -->")
    print(markdown_table())
    print("<!-- RGB TABLE -->")
    print(rgb_markdown_table(), end="")
