"""agent.shell.leds: the state rules, the pattern tables, and the driver on gpiozero's mock pins.

Pin timelines are asserted as gpiozero records them: each change of a mock pin with the
time since the one before, so a blink is checked for its rhythm, not just its last value.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from gpiozero import LED, Device
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin

from agent.domain.health import HealthStatus as Status
from agent.shell import leds as leds_mod
from agent.shell.config import LedsConfig
from agent.shell.leds import (
    ACT_PATTERNS,
    COLOURS,
    DESCRIPTIONS,
    OFF,
    ON,
    PATTERNS,
    RGB_COLOURS,
    RGB_PATTERNS,
    Condition,
    Leds,
    LedState,
    Pattern,
    RgbPattern,
    blink,
    led_state_for,
    markdown_table,
    meaning,
    patterns_json,
    rgb_markdown_table,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "leds.md"
PINS = {"green": 17, "amber": 27, "red": 22}
RGB_PINS = (5, 6, 13)
RGB_CONFIG = LedsConfig(layout="rgb", rgb=RGB_PINS)
TOLERANCE = 0.15  # seconds: blink threads on a shared 2-core machine


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


@pytest.fixture
def pwm_factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.close()


def wait_until(pred: Callable[[], bool], timeout: float = 6.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"{what}: not met in time"
        time.sleep(0.01)


def pin(factory: MockFactory, colour: str) -> MockPin:
    p: MockPin = factory.pin(PINS[colour])
    return p


# --- the rules -----------------------------------------------------------------------------

#: For each state, the smallest condition that makes it hold.
MAKES: dict[LedState, Condition] = {
    LedState.IDENTIFY: Condition(identify=True),
    LedState.FAULT: Condition(fault="keyring: no key decrypts the peers' packets"),
    LedState.STORAGE_FAULT: Condition(storage_fault="fsync: No space left on device"),
    LedState.STARTING: Condition(starting=True),
    LedState.SUSPECTED: Condition(suspected=True),
    LedState.SEARCHING: Condition(alone=True),
    LedState.IMPAIRED: Condition(owned=3, down=3, impaired=True),
    LedState.DISPUTED: Condition(owned=3, disputed=1),
    LedState.SOME_DOWN: Condition(owned=3, down=1),
    LedState.HEALTHY: Condition(owned=3),
}


def both(a: Condition, b: Condition) -> Condition:
    """A condition where what makes ``a`` and what makes ``b`` both hold."""
    return Condition(
        starting=a.starting or b.starting,
        fault=a.fault or b.fault,
        storage_fault=a.storage_fault or b.storage_fault,
        suspected=a.suspected or b.suspected,
        alone=a.alone or b.alone,
        impaired=a.impaired or b.impaired,
        owned=max(a.owned, b.owned),
        down=max(a.down, b.down),
        disputed=max(a.disputed, b.disputed),
        identify=a.identify or b.identify,
    )


def test_each_state_from_its_condition() -> None:
    assert set(MAKES) == set(LedState)
    for state, condition in MAKES.items():
        assert led_state_for(condition) is state


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (Condition(), LedState.HEALTHY),  # no origins: nothing wrong to show
        (Condition(owned=2, down=2), LedState.SOME_DOWN),  # every origin down: still not red
        (Condition(owned=2, down=1, disputed=1), LedState.DISPUTED),
        (Condition(owned=5, down=0, disputed=0), LedState.HEALTHY),  # unknowns count neither
        (Condition(fault=""), LedState.HEALTHY),  # an empty reason is no fault
        (Condition(starting=True, alone=True, owned=2, down=2), LedState.STARTING),
        (Condition(alone=True, owned=4, down=4), LedState.SEARCHING),  # cable out: all down
        (Condition(identify=True, fault="name conflict"), LedState.IDENTIFY),
    ],
)
def test_rules(condition: Condition, expected: LedState) -> None:
    assert led_state_for(condition) is expected


@pytest.mark.parametrize(("high", "low"), list(itertools.combinations(list(LedState), 2)))
def test_the_more_urgent_state_wins(high: LedState, low: LedState) -> None:
    """LedState lists states most urgent first; any two holding at once show the first."""
    assert led_state_for(both(MAKES[high], MAKES[low])) is high
    assert led_state_for(both(MAKES[low], MAKES[high])) is high


def test_meaning_is_one_short_line_per_state() -> None:
    for state in LedState:
        text = meaning(state)
        assert text and "\n" not in text and len(text) <= 70, (state, text)
    assert meaning(LedState.SOME_DOWN) == "some origins this Pi checks are down"
    assert meaning("healthy") == meaning(LedState.HEALTHY)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "up", "down", "expected"),
    [
        (Status.STARTING, 3, 1, LedState.STARTING),
        (Status.OK, 5, 0, LedState.HEALTHY),
        (Status.OK, 0, 3, LedState.SOME_DOWN),
        (Status.DEGRADED, 5, 0, LedState.SUSPECTED),
        (Status.FAILING, 0, 5, LedState.FAULT),
        ("ok", 1, 0, LedState.HEALTHY),
    ],
)
def test_deprecated_led_state(status: Status | str, up: int, down: int, expected: LedState) -> None:
    """The runtime's old entry point, until it feeds Condition (delete with led_state)."""
    assert leds_mod.led_state(status, up, down) is expected


# --- the tables ----------------------------------------------------------------------------


def test_every_state_has_a_pattern_and_a_description() -> None:
    assert set(PATTERNS) == set(LedState) == set(DESCRIPTIONS)
    assert set(RGB_PATTERNS) == set(LedState) == set(ACT_PATTERNS)
    for state, per_colour in PATTERNS.items():
        assert set(per_colour) <= set(COLOURS), state
        assert any(p != OFF for p in per_colour.values()), f"{state} leaves every LED dark"
    for state, rgb in RGB_PATTERNS.items():
        assert RGB_COLOURS[rgb.colour] != RGB_COLOURS["off"], f"{state} leaves the LED dark"
    assert all(p != OFF for p in ACT_PATTERNS.values())


def test_each_state_looks_different_in_each_layout() -> None:
    three = [tuple(PATTERNS[s].get(c, OFF) for c in COLOURS) for s in LedState]
    assert len(set(three)) == len(three)
    rgb = [RGB_PATTERNS[s] for s in LedState]
    assert len(set(rgb)) == len(rgb)


def test_red_is_only_ever_about_this_pi() -> None:
    about_origins = {LedState.HEALTHY, LedState.SOME_DOWN, LedState.DISPUTED}
    for state in about_origins:
        assert PATTERNS[state].get("red", OFF) == OFF, state
        assert RGB_PATTERNS[state].colour != "red", state


def test_pattern_validation() -> None:
    with pytest.raises(ValueError):
        Pattern("flash")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        blink(0.5, 0)
    with pytest.raises(ValueError):
        RgbPattern("purple")
    with pytest.raises(ValueError):
        RgbPattern("red", OFF)
    assert blink(0.25, 1).describe() == "blinking (0.25 s on, 1 s off)"
    assert ON.describe() == "on" and OFF.describe() == "off"
    assert RgbPattern("amber").describe() == "amber on"
    assert RgbPattern("green", blink(1, 2), "amber").describe() == (
        "green and amber alternating (1 s green, 2 s amber)"
    )


def docs_section(marker: str) -> str:
    text = DOCS.read_text()
    begin = text.index(f"<!-- BEGIN {marker}")
    begin = text.index("\n", begin) + 1
    return text[begin : text.index(f"<!-- END {marker}")]


def test_docs_tables_match_patterns() -> None:
    hint = "docs/leds.md is out of date: regenerate the tables with `python -m agent.shell.leds`"
    assert docs_section("LED TABLE") == markdown_table(), hint
    assert docs_section("RGB TABLE") == rgb_markdown_table(), hint


def test_patterns_json_carries_every_layout() -> None:
    doc = json.loads(patterns_json())
    assert doc["colours"] == list(COLOURS)
    assert list(doc["states"]) == [s.value for s in LedState]
    starting = doc["states"]["starting"]
    assert starting["three"]["amber"] == {"mode": "blink", "on": 0.5, "off": 0.5}
    assert starting["three"]["green"]["mode"] == "off"
    assert starting["meaning"] == meaning(LedState.STARTING)
    disputed = doc["states"]["disputed"]["rgb"]
    assert (disputed["colour"], disputed["off_colour"], disputed["mode"]) == (
        "green",
        "amber",
        "blink",
    )
    assert doc["rgb_colours"]["amber"] == list(RGB_COLOURS["amber"])


# --- pin timelines ---------------------------------------------------------------------------

Step = tuple[float, float]  # (value written, seconds it is held)


def steps_of(pattern: Pattern) -> list[Step]:
    """What a single-colour LED writes: a blink's on, off and on again (one full period
    and the start of the next), else one value held."""
    if pattern.mode == "blink":
        return [(1.0, pattern.on_time), (0.0, pattern.off_time), (1.0, pattern.on_time)]
    return [(1.0 if pattern.mode == "on" else 0.0, 0.0)]


def rgb_steps_of(rgb: RgbPattern, component: int) -> list[Step]:
    """What one component (0 red, 1 green, 2 blue) of an RGB LED writes for ``rgb``."""
    on = RGB_COLOURS[rgb.colour][component]
    if rgb.pattern.mode == "blink":
        off = RGB_COLOURS[rgb.off_colour][component]
        return [(on, rgb.pattern.on_time), (off, rgb.pattern.off_time), (on, 0.0)]
    return [(on, 0.0)]


def timeline(steps: Sequence[Step], initial: float = 0.0) -> list[tuple[float, float]]:
    """The mock pin's record for ``steps`` after clear_states(): (seconds since the last
    change, value), one entry per change; a step that writes the same value adds its time
    to the next change. The last step's time is not waited for, so it is left out."""
    out = [(0.0, initial)]
    value, held = initial, 0.0
    for v, t in steps:
        if v != value:
            out.append((held, v))
            value, held = v, 0.0
        held += t
    return out


def assert_timeline(p: MockPin, expected: list[tuple[float, float]], what: str) -> None:
    """Wait until ``p`` has changed as often as expected, then check values and timing."""
    wait_until(lambda: len(p.states) >= len(expected), what=f"{what}: {expected}")
    got = [(s.timestamp, float(s.state)) for s in p.states[: len(expected)]]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected]), (what, got)
    for (t, _), (want, _) in zip(got, expected, strict=True):
        assert t == pytest.approx(want, abs=TOLERANCE), (what, got, expected)
    if all(t == 0 for t, _ in expected):  # a solid pattern: nothing more may happen
        assert len(p.states) == len(expected), (what, p.states)


@pytest.mark.parametrize("state", list(LedState))
def test_three_led_timeline_of_every_state(factory: MockFactory, state: LedState) -> None:
    pins = {c: pin(factory, c) for c in COLOURS}
    with Leds(LedsConfig(), pin_factory=factory) as leds:
        assert leds.colours == COLOURS
        for p in pins.values():
            p.clear_states()
        leds.set(state)
        for colour, p in pins.items():
            expected = timeline(steps_of(PATTERNS[state].get(colour, OFF)))
            assert_timeline(p, expected, f"{state} {colour}")
    for p in pins.values():  # close() turns everything off
        assert p.state is False


@pytest.mark.parametrize("state", list(LedState))
def test_rgb_timeline_of_every_state(pwm_factory: MockFactory, state: LedState) -> None:
    pins = [pwm_factory.pin(n) for n in RGB_PINS]
    with Leds(RGB_CONFIG, pin_factory=pwm_factory) as leds:
        assert leds.colours == ("rgb",)
        for p in pins:
            p.clear_states()
        leds.set(state)
        for i, p in enumerate(pins):
            expected = timeline(rgb_steps_of(RGB_PATTERNS[state], i))
            assert_timeline(p, expected, f"{state} {'rgb'[i]}")
        assert leds.describe() == f"RGB {RGB_PATTERNS[state].describe()} (mock pins)"
    assert [p.state for p in pins] == [0, 0, 0]


def test_timeline_helper() -> None:
    """The expected timelines above are computed; check the computation on known cases."""
    assert timeline(steps_of(ON)) == [(0, 0), (0, 1)]
    assert timeline(steps_of(OFF)) == [(0, 0)]
    assert timeline(steps_of(blink(0.5, 0.25))) == [(0, 0), (0, 1), (0.5, 0), (0.25, 1)]
    # green/amber alternation on the red component: 0 (no change), 1 after the green second
    alternating = RgbPattern("green", blink(1, 1), "amber")
    assert timeline(rgb_steps_of(alternating, 0)) == [(0, 0), (1, 1), (1, 0)]
    assert timeline(rgb_steps_of(alternating, 1)) == [(0, 0), (0, 1), (1, 0.4), (1, 1)]


def test_rgb_without_pwm_shows_full_colours(factory: MockFactory) -> None:
    """Plain (non-PWM) pins cannot mix amber: it falls back to yellow, still not red."""
    with Leds(RGB_CONFIG, pin_factory=factory) as leds:
        assert leds.colours == ("rgb",)
        leds.set(LedState.SOME_DOWN)
        assert [factory.pin(n).state for n in RGB_PINS] == [True, True, False]
        leds.set(LedState.FAULT)
        assert [factory.pin(n).state for n in RGB_PINS] == [True, False, False]


def test_common_anode_rgb_drives_low_to_light(pwm_factory: MockFactory) -> None:
    config = LedsConfig(layout="rgb", rgb=RGB_PINS, common_anode=True)
    with Leds(config, pin_factory=pwm_factory) as leds:
        leds.set(LedState.HEALTHY)
        assert [pwm_factory.pin(n).state for n in RGB_PINS] == [1, 0, 1]


def test_repeated_set_keeps_the_blink_rhythm(factory: MockFactory) -> None:
    """set() is called every tick; restarting the blink each time would freeze it on."""
    patterns = {
        LedState.STARTING: {"amber": blink(0.05, 0.05)},
        LedState.SOME_DOWN: {"amber": blink(0.05, 0.05), "red": ON},
    }
    amber, red = pin(factory, "amber"), pin(factory, "red")
    with Leds(LedsConfig(), pin_factory=factory, patterns=patterns) as leds:
        amber.clear_states()
        deadline = time.monotonic() + 4
        tick = 0
        while len(amber.states) < 8:  # a tick every 10 ms, switching state every other one
            assert time.monotonic() < deadline, amber.states
            leds.set(LedState.STARTING if tick % 4 < 2 else LedState.SOME_DOWN)
            tick += 1
            time.sleep(0.01)
        leds.set(LedState.SOME_DOWN)
        assert red.state is True
    assert all(s.timestamp < 0.2 for s in amber.states[1:8]), amber.states


def test_absent_colours_are_skipped(factory: MockFactory) -> None:
    with Leds(LedsConfig(green=17, amber=None, red=22), pin_factory=factory) as leds:
        assert leds.colours == ("green", "red")
        leds.set(LedState.SOME_DOWN)  # amber only: nothing to light here
        assert pin(factory, "green").state is False
        assert pin(factory, "red").state is False
        leds.set(LedState.HEALTHY)
        assert pin(factory, "green").state is True
        assert leds.describe() == "green on (mock pins)"
    # GPIO27 was never claimed: another device may use it.
    with LED(27, pin_factory=factory) as other:
        other.on()
        assert pin(factory, "amber").state is True


def test_disabled_leds_claim_no_pins(factory: MockFactory) -> None:
    with Leds(LedsConfig(enabled=False), pin_factory=factory) as leds:
        leds.set(LedState.FAULT)
        assert leds.colours == ()
        assert leds.describe() == "none configured"
    assert not factory.pins


def test_describe(factory: MockFactory) -> None:
    with Leds(LedsConfig(), pin_factory=factory) as leds:
        assert leds.describe() == "all off (mock pins)"
        leds.set(LedState.STARTING)
        assert leds.describe() == "amber blinking (0.5 s on, 0.5 s off) (mock pins)"
        leds.set(LedState.DISPUTED)
        assert leds.describe() == "green on, amber on (mock pins)"


class BrokenPin(MockPin):
    """A pin whose driver fails on every write, as a disconnected expander might."""

    def _set_state(self, value: bool) -> None:
        raise OSError("I/O error")


def test_led_errors_are_logged_once_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = MockFactory(pin_class=BrokenPin)
    try:
        with caplog.at_level(logging.DEBUG, logger="agent.shell.leds"):
            leds = Leds(LedsConfig(), pin_factory=factory)
            leds.set(LedState.HEALTHY)
            leds.set(LedState.FAULT)
            leds.set(LedState.STARTING)
            leds.close()
    finally:
        factory.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "carrying on without them" in errors[0].getMessage()


def test_a_pin_in_use_disables_only_that_colour(
    factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    with LED(22, pin_factory=factory), Leds(LedsConfig(), pin_factory=factory) as leds:
        assert leds.colours == ("green", "amber")
        leds.set(LedState.HEALTHY)
        assert pin(factory, "green").state is True
    assert "red LED" in caplog.text


@pytest.mark.parametrize("config", [LedsConfig(), RGB_CONFIG], ids=["three", "rgb"])
def test_off_a_pi_leds_fall_back_to_mock_pins_and_say_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, config: LedsConfig
) -> None:
    if leds_mod.looks_like_pi():
        pytest.skip("this machine has GPIO: the fallback is not taken")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setattr(leds_mod, "_told_no_gpio", False)
    with caplog.at_level(logging.INFO, logger="agent.shell.leds"):
        first = Leds(config)
        second = Leds(config)  # e.g. rebuilt after a reload
    try:
        assert first.mock and second.mock
        first.set(LedState.HEALTHY)
        if config.layout == "rgb":  # mock pins that can dim, so amber is amber
            assert first.colours == ("rgb",)
            first.set(LedState.SOME_DOWN)
            assert first.describe() == "RGB amber on (mock pins)"
        else:
            assert first.colours == COLOURS
            assert first.describe() == "green on (mock pins)"
    finally:
        first.close()
        second.close()
    said = [r for r in caplog.records if r.getMessage() == "no GPIO here: LEDs drive mock pins"]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO
    assert Device.pin_factory is None  # the global factory was left alone


# --- the ACT LED through sysfs ---------------------------------------------------------------


def fake_act(root: Path, name: str = "ACT", trigger: str = "none timer heartbeat [mmc0]") -> Path:
    """A directory shaped like /sys/class/leds/<name> on a Pi."""
    d = root / name
    d.mkdir(parents=True)
    (d / "trigger").write_text(trigger + "\n")
    (d / "brightness").write_text("0\n")
    (d / "max_brightness").write_text("255\n")
    return d


def read(d: Path, *names: str) -> list[str]:
    return [(d / n).read_text().strip() for n in names]


def test_act_mirrors_every_state_and_is_given_back(tmp_path: Path, factory: MockFactory) -> None:
    act = fake_act(tmp_path)
    config = LedsConfig(act=True)
    with Leds(config, pin_factory=factory, sysfs_root=tmp_path) as leds:
        assert read(act, "trigger") == ["none timer heartbeat [mmc0]"]  # untouched until set
        for state in LedState:
            leds.set(state)
            pattern = ACT_PATTERNS[state]
            if pattern.mode == "blink":
                assert read(act, "trigger", "delay_on", "delay_off") == [
                    "timer",
                    str(round(pattern.on_time * 1000)),
                    str(round(pattern.off_time * 1000)),
                ], state
            else:
                assert read(act, "trigger", "brightness") == ["none", "255"], state
        leds.set(LedState.HEALTHY)
        assert leds.describe() == "green on; ACT on (mock pins)"
        leds.set(LedState.IDENTIFY)
        assert read(act, "trigger", "delay_on", "delay_off") == ["timer", "100", "100"]
    assert read(act, "trigger") == ["mmc0"]  # the kernel's disk-activity trigger is back


def test_act_alone_and_the_old_led0_name(tmp_path: Path) -> None:
    """A Pi with no LEDs wired can still show its state on the board (older kernel: led0)."""
    act = fake_act(tmp_path, "led0", trigger="[none] timer")
    config = LedsConfig(green=None, amber=None, red=None, act=True)
    with Leds(config, sysfs_root=tmp_path) as leds:
        assert leds.colours == ()
        leds.set(LedState.HEALTHY)
        assert read(act, "trigger", "brightness") == ["none", "255"]
        assert leds.describe() == "none configured; ACT on"
    assert read(act, "trigger") == ["none"]


def test_act_is_only_touched_when_asked_for(tmp_path: Path, factory: MockFactory) -> None:
    act = fake_act(tmp_path)
    with Leds(LedsConfig(), pin_factory=factory, sysfs_root=tmp_path) as leds:
        leds.set(LedState.IDENTIFY)
    assert read(act, "trigger", "brightness") == ["none timer heartbeat [mmc0]", "0"]
    assert not (act / "delay_on").exists()


def test_no_act_led_is_fine(tmp_path: Path, factory: MockFactory) -> None:
    with Leds(LedsConfig(act=True), pin_factory=factory, sysfs_root=tmp_path) as leds:
        leds.set(LedState.HEALTHY)
        assert leds.describe() == "green on (mock pins)"


def test_an_unwritable_act_led_is_logged_once(
    tmp_path: Path, factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    act = fake_act(tmp_path)
    (act / "brightness").unlink()
    (act / "brightness").mkdir()  # writing fails with an OSError, as EACCES would
    (act / "delay_on").mkdir()
    with (
        caplog.at_level(logging.DEBUG, logger="agent.shell.leds"),
        Leds(LedsConfig(act=True), pin_factory=factory, sysfs_root=tmp_path) as leds,
    ):
        leds.set(LedState.HEALTHY)
        leds.set(LedState.IDENTIFY)
        leds.set(LedState.FAULT)
        assert pin(factory, "red").state is True  # the GPIO LEDs carry on
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "ACT LED" in errors[0].getMessage(), errors
