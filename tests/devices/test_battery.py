"""Battery: exact energy bookkeeping, charging windows (also across midnight), clamping."""

from __future__ import annotations

import itertools

import pytest

from fltorrent.devices import DEFAULT_PROFILES, Battery, BatteryParams
from fltorrent.errors import ConfigError

H = 3600.0


def phone(**kw: object) -> Battery:
    params: dict[str, object] = {
        "capacity_wh": 15.0,
        "train_power_w": 6.3,
        "idle_power_w": 0.5,
        "charge_power_w": 10.0,
    }
    params.update(kw)
    return Battery(BatteryParams(**params))  # type: ignore[arg-type]


def test_one_hour_of_training_uses_6_3_wh() -> None:
    b = phone()  # starts 09:00, charging 22:00-07:00: not plugged in
    b.advance(0.0, H, busy_s=H)
    assert b.energy_wh == pytest.approx(15.0 - 6.3, abs=1e-9)
    assert b.used_wh == pytest.approx(6.3, abs=1e-9)
    assert b.level == pytest.approx(8.7 / 15.0, abs=1e-12)


def test_idle_and_partial_training() -> None:
    b = phone()
    b.advance(0.0, H)  # idle: 0.5 Wh
    b.advance(H, 2 * H, busy_s=H / 2)  # 0.5 + (6.3 - 0.5) / 2 = 3.4 Wh
    assert b.used_wh == pytest.approx(3.9, abs=1e-9)
    assert b.energy_wh == pytest.approx(11.1, abs=1e-9)


def test_charging_only_inside_charging_hours() -> None:
    b = phone(capacity_wh=100.0, initial_level=0.5, start_hour=21.0)
    assert not b.charging(0.5 * H) and b.charging(1.5 * H)
    # 21:00-22:00 idle: -0.5; 22:00-23:00 charging: +10 - 0.5
    b.advance(0.0, 2 * H)
    assert b.energy_wh == pytest.approx(50.0 - 0.5 + 9.5, abs=1e-9)


def test_charging_window_wrapping_midnight() -> None:
    b = phone(capacity_wh=100.0, initial_level=0.5, start_hour=22.5, charging_hours=((23.0, 1.0),))
    assert not b.charging(0.25 * H)  # 22:45
    assert b.charging(H)  # 23:30
    assert b.charging(2 * H)  # 00:30
    assert not b.charging(3 * H)  # 01:30
    # 22:30 -> 01:30 in one step: plugged in 23:00-01:00 (2 h), idle drain over 3 h
    b.advance(0.0, 3 * H)
    assert b.energy_wh == pytest.approx(50.0 + 2 * 10.0 - 3 * 0.5, abs=1e-9)


def test_several_days_in_one_step_equal_many_steps() -> None:
    big = phone(capacity_wh=1000.0, initial_level=0.5)
    big.advance(0.0, 48 * H)  # two days from 09:00: 2 x 9 h of charging
    assert big.energy_wh == pytest.approx(500.0 + 18 * 10.0 - 48 * 0.5, abs=1e-9)
    small = phone(capacity_wh=1000.0, initial_level=0.5)
    cuts = [0.0, 1234.5, 13 * H + 7.0, 20 * H, 22 * H, 47 * H, 48 * H]
    for a, b in itertools.pairwise(cuts):
        small.advance(a, b)
    assert small.energy_wh == pytest.approx(big.energy_wh, abs=1e-9)


def test_clamp_at_capacity_and_zero() -> None:
    full = phone(start_hour=22.0)
    full.advance(0.0, H)  # charging 10 W, idle 0.5 W: would exceed capacity
    assert full.energy_wh == 15.0 and full.level == 1.0
    empty = phone(capacity_wh=1.0)
    empty.advance(0.0, H, busy_s=H)
    assert empty.energy_wh == 0.0 and empty.depleted
    assert empty.used_wh == pytest.approx(1.0)  # could not draw more than it had
    # Empty until plugged in at 22:00 (t = 13 h), then charging from zero.
    empty.advance(H, 13 * H + 360.0)  # 0.1 h plugged in
    assert empty.energy_wh == pytest.approx(0.1 * (10.0 - 0.5), abs=1e-9)
    assert not empty.depleted


def test_advance_errors() -> None:
    b = phone()
    with pytest.raises(ValueError, match="backwards"):
        b.advance(10.0, 5.0)
    with pytest.raises(ValueError, match="busy_s"):
        b.advance(0.0, 10.0, busy_s=11.0)


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"capacity_wh": 0.0}, "devices.battery.capacity_wh"),
        ({"charge_power_w": -1.0}, "devices.battery.charge_power_w"),
        ({"charging_hours": ((5.0, 5.0),)}, "devices.battery.charging_hours"),
        ({"charging_hours": ((22.0, 25.0),)}, "devices.battery.charging_hours"),
        ({"initial_level": 1.5}, "devices.battery.initial_level"),
        ({"start_hour": 24.0}, "devices.battery.start_hour"),
        ({"train_power_w": 0.1}, "devices.battery.train_power_w"),
    ],
)
def test_bad_params(kw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        phone(**kw)
    assert err.value.path == path


def test_params_for_profile() -> None:
    p = BatteryParams.for_profile(DEFAULT_PROFILES["smartphone_high"], start_hour=0.0)
    assert (p.capacity_wh, p.train_power_w, p.start_hour) == (15.4, 6.3, 0.0)
    with pytest.raises(ConfigError):
        BatteryParams.for_profile(DEFAULT_PROFILES["edge_server"])
