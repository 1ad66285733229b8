"""Thermal: exact first-order response, throttling thresholds, cool-down times."""

from __future__ import annotations

import math

import pytest

from fltorrent.devices import Thermal, ThermalParams
from fltorrent.errors import ConfigError


def test_one_time_constant_from_ambient() -> None:
    th = Thermal(ThermalParams(ambient_c=25.0, heat_c_per_w=10.0, tau_s=180.0))
    th.advance(180.0, 6.4)
    assert th.temperature == pytest.approx(25.0 + 64.0 * (1 - math.exp(-1)), abs=1e-12)


def test_exact_solution_does_not_depend_on_step_size() -> None:
    one, many = Thermal(ThermalParams()), Thermal(ThermalParams())
    one.advance(600.0, 6.4)
    for _ in range(600):
        many.advance(1.0, 6.4)
    assert many.temperature == pytest.approx(one.temperature, abs=1e-9)
    one.advance(1e6, 2.0)
    assert one.temperature == pytest.approx(25.0 + 10.0 * 2.0, abs=1e-9)


def test_default_pi_throttles_after_some_minutes() -> None:
    th = Thermal(ThermalParams())
    crossing = th.time_to_reach(80.0, 6.4)
    assert crossing == pytest.approx(180.0 * math.log(64 / 9), abs=1e-9)
    assert 3 * 60 < crossing < 10 * 60
    th.advance(crossing - 1.0, 6.4)
    assert th.speed_factor() == 1.0
    th.advance(1.0, 6.4)
    assert th.speed_factor() == 0.5
    assert th.time_to_reach(90.0, 6.4) == math.inf  # above the 89 °C steady state


@pytest.mark.parametrize(
    ("temp", "factor"), [(79.99, 1.0), (80.0, 0.5), (84.99, 0.5), (85.0, 0.0), (90.0, 0.0)]
)
def test_speed_factor_thresholds(temp: float, factor: float) -> None:
    assert Thermal(ThermalParams(initial_c=temp)).speed_factor() == factor


def test_cooldown_time() -> None:
    th = Thermal(ThermalParams(initial_c=85.0))
    # idle at 0 W: steady state 25 °C, gap 60 -> 55
    wait = th.cooldown_time(80.0, 0.0)
    assert wait == pytest.approx(180.0 * math.log(60 / 55), abs=1e-12)
    th.advance(wait, 0.0)
    assert th.temperature == pytest.approx(80.0, abs=1e-9)
    assert th.cooldown_time(80.0, 0.0) == pytest.approx(0.0, abs=1e-9)
    assert th.cooldown_time(90.0, 0.0) == 0.0
    assert Thermal(ThermalParams(initial_c=85.0)).cooldown_time(80.0, 6.4) == math.inf
    assert Thermal(ThermalParams(initial_c=85.0)).cooldown_time(25.0, 0.0) == math.inf


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"tau_s": 0.0}, "devices.thermal.tau_s"),
        ({"heat_c_per_w": -1.0}, "devices.thermal.heat_c_per_w"),
        ({"soft_limit_c": 90.0}, "devices.thermal.soft_limit_c"),
        ({"soft_factor": 1.5}, "devices.thermal.soft_factor"),
    ],
)
def test_bad_params(kw: dict[str, float], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        ThermalParams(**kw)
    assert err.value.path == path


def test_advance_rejects_negative() -> None:
    with pytest.raises(ValueError):
        Thermal(ThermalParams()).advance(-1.0, 1.0)
