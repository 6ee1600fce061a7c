"""agent.leds: the state rules, the pattern table, and the driver on gpiozero's mock pins."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gpiozero import LED, Device
from gpiozero.pins.mock import MockFactory, MockPin

from agent import leds as leds_mod
from agent.config import LedsConfig
from agent.health import Status
from agent.leds import (
    COLOURS,
    DESCRIPTIONS,
    OFF,
    ON,
    PATTERNS,
    Leds,
    LedState,
    Pattern,
    blink,
    led_state,
    markdown_table,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "leds.md"
PINS = {"green": 17, "amber": 27, "red": 22}


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.close()


def wait_until(pred: Callable[[], bool], timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def pin(factory: MockFactory, colour: str) -> MockPin:
    p: MockPin = factory.pin(PINS[colour])
    return p


# --- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "up", "down", "expected"),
    [
        (Status.STARTING, 0, 0, LedState.STARTING),
        (Status.STARTING, 3, 1, LedState.STARTING),
        (Status.OK, 5, 0, LedState.ALL_UP),
        (Status.OK, 0, 0, LedState.ALL_UP),  # no origins: nothing wrong to show
        (Status.OK, 4, 1, LedState.SOME_DOWN),
        (Status.OK, 0, 3, LedState.SOME_DOWN),  # every origin down: still not red
        (Status.DEGRADED, 5, 0, LedState.SOME_DOWN),
        (Status.FAILING, 5, 0, LedState.FAILING),
        (Status.FAILING, 0, 5, LedState.FAILING),
        ("ok", 1, 0, LedState.ALL_UP),  # the API's spelling works too
    ],
)
def test_led_state(status: Status | str, up: int, down: int, expected: LedState) -> None:
    assert led_state(status, up, down) is expected


def test_every_state_has_a_pattern_and_a_description() -> None:
    assert set(PATTERNS) == set(LedState) == set(DESCRIPTIONS)
    for state, per_colour in PATTERNS.items():
        assert set(per_colour) <= set(COLOURS), state
        assert any(p != OFF for p in per_colour.values()), f"{state} leaves every LED dark"


def test_each_state_looks_different() -> None:
    def look(state: LedState) -> tuple[Pattern, ...]:
        return tuple(PATTERNS[state].get(c, OFF) for c in COLOURS)

    looks = [look(s) for s in LedState]
    assert len(set(looks)) == len(looks)


def test_pattern_validation() -> None:
    with pytest.raises(ValueError):
        Pattern("flash")
    with pytest.raises(ValueError):
        blink(0.5, 0)
    assert blink(0.25, 1).describe() == "blinking (0.25 s on, 1 s off)"
    assert ON.describe() == "on" and OFF.describe() == "off"


def test_docs_table_matches_patterns() -> None:
    text = DOCS.read_text()
    begin = text.index("<!-- BEGIN LED TABLE")
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- END LED TABLE")
    assert text[begin:end] == markdown_table(), (
        "docs/leds.md is out of date: regenerate the table with `python -m agent.leds`"
    )


# --- the driver ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", [LedState.ALL_UP, LedState.SOME_DOWN, LedState.FAILING])
def test_solid_states_drive_the_pins(factory: MockFactory, state: LedState) -> None:
    with Leds(LedsConfig(), pin_factory=factory) as leds:
        assert leds.colours == COLOURS
        leds.set(state)
        for colour in COLOURS:
            expected = PATTERNS[state].get(colour, OFF)
            assert expected.mode in ("on", "off")
            assert pin(factory, colour).state == (expected.mode == "on"), colour
    for colour in COLOURS:  # close() turns everything off
        assert pin(factory, colour).state is False


def test_starting_blinks_amber_at_the_documented_rhythm(factory: MockFactory) -> None:
    pattern = PATTERNS[LedState.STARTING]["amber"]
    assert pattern.mode == "blink"
    amber = pin(factory, "amber")
    with Leds(LedsConfig(), pin_factory=factory) as leds:
        amber.clear_states()
        leds.set(LedState.STARTING)
        wait_until(lambda: len(amber.states) >= 5)
        states = list(amber.states)
        assert pin(factory, "green").state is False
        assert pin(factory, "red").state is False
    # states: [(0, off), (~0, on), (on_time, off), (off_time, on), (on_time, off), ...]
    values = [s.state for s in states]
    assert values[:5] == [False, True, False, True, False]
    for i, s in enumerate(states[2:5], start=2):
        expected = pattern.on_time if values[i - 1] else pattern.off_time
        assert s.timestamp == pytest.approx(expected, abs=0.15), states


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
        leds.set(LedState.ALL_UP)
        assert pin(factory, "green").state is True
        assert leds.describe() == "green on (mock pins)"
    # GPIO27 was never claimed: another device may use it.
    with LED(27, pin_factory=factory) as other:
        other.on()
        assert pin(factory, "amber").state is True


def test_disabled_leds_claim_no_pins(factory: MockFactory) -> None:
    with Leds(LedsConfig(enabled=False), pin_factory=factory) as leds:
        leds.set(LedState.FAILING)
        assert leds.colours == ()
        assert leds.describe() == "none configured"
    assert not factory.pins


def test_describe(factory: MockFactory) -> None:
    with Leds(LedsConfig(), pin_factory=factory) as leds:
        assert leds.describe() == "all off (mock pins)"
        leds.set(LedState.STARTING)
        assert leds.describe() == "amber blinking (0.5 s on, 0.5 s off) (mock pins)"


class BrokenPin(MockPin):
    """A pin whose driver fails on every write, as a disconnected expander might."""

    def _set_state(self, value: bool) -> None:
        raise OSError("I/O error")


def test_led_errors_are_logged_once_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    factory = MockFactory(pin_class=BrokenPin)
    try:
        with caplog.at_level(logging.DEBUG, logger="agent.leds"):
            leds = Leds(LedsConfig(), pin_factory=factory)
            leds.set(LedState.ALL_UP)
            leds.set(LedState.FAILING)
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
        leds.set(LedState.ALL_UP)
        assert pin(factory, "green").state is True
    assert "red LED" in caplog.text


def test_off_a_pi_leds_fall_back_to_mock_pins_and_say_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if leds_mod.looks_like_pi():
        pytest.skip("this machine has GPIO: the fallback is not taken")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setattr(leds_mod, "_told_no_gpio", False)
    with caplog.at_level(logging.INFO, logger="agent.leds"):
        first = Leds(LedsConfig())
        second = Leds(LedsConfig())  # e.g. rebuilt after a reload
    try:
        assert first.mock and second.mock
        assert first.colours == COLOURS
        first.set(LedState.ALL_UP)
        assert first.describe() == "green on (mock pins)"
    finally:
        first.close()
        second.close()
    said = [r for r in caplog.records if r.getMessage() == "no GPIO here: LEDs drive mock pins"]
    assert len(said) == 1
    assert said[0].levelno == logging.INFO
    assert Device.pin_factory is None  # the global factory was left alone
