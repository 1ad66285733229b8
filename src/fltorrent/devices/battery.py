"""Battery model: a linear energy bucket, drained by the device and refilled while plugged in.

The device draws ``idle_power_w`` all the time and ``train_power_w`` while training; a charger adds
``charge_power_w`` during the local ``charging_hours`` (intervals may wrap midnight). Energy is
integrated exactly over the charging intervals inside each step and clamped to ``[0, capacity]``
at every switch; within a step the training time is spread evenly (we do not know when in the
step it happened). No rate-capacity or ageing effects: phones report state of charge linearly
enough for admission decisions. ``t`` is simulated seconds since the start; ``start_hour`` is the
local hour at ``t = 0``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from fltorrent.devices.profiles import DeviceProfile
from fltorrent.errors import ConfigError

DAY_S = 86_400.0
_PATH = "devices.battery"


def local_hour(t: float, start_hour: float) -> float:
    """Local hour of day in ``[0, 24)`` at simulated time ``t``."""
    return (start_hour + t / 3600.0) % 24.0


def in_window(hour: float, window: tuple[float, float]) -> bool:
    """Whether ``hour`` lies in ``[start, end)``; a window with ``start > end`` wraps midnight."""
    start, end = window
    if start <= end:
        return start <= hour < end
    return hour >= start or hour < end


def check_window(window: tuple[float, float], path: str) -> None:
    """Raise :class:`ConfigError` unless ``window`` is a pair of distinct hours in ``[0, 24]``."""
    if len(window) != 2 or not all(0.0 <= h <= 24.0 for h in window) or window[0] == window[1]:
        raise ConfigError(f"must be two distinct hours in [0, 24], not {window}", path=path)


@dataclass(frozen=True)
class BatteryParams:
    """Capacity in Wh, powers in W, hours of day local."""

    capacity_wh: float
    train_power_w: float
    idle_power_w: float
    # Our assumption: a common 5 V / 2 A USB charger (10 W). USB Battery Charging 1.2 dedicated
    # charging ports give up to 1.5 A at 5 V (7.5 W); fast chargers give 18 W and more.
    charge_power_w: float = 10.0
    # Our assumption: phones are plugged in overnight, 22:00-07:00.
    charging_hours: tuple[tuple[float, float], ...] = ((22.0, 7.0),)
    start_hour: float = 9.0
    initial_level: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity_wh) and self.capacity_wh > 0):
            raise ConfigError(
                f"must be positive, not {self.capacity_wh}", path=f"{_PATH}.capacity_wh"
            )
        for key in ("train_power_w", "idle_power_w", "charge_power_w"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"must be >= 0, not {value}", path=f"{_PATH}.{key}")
        if self.train_power_w < self.idle_power_w:
            raise ConfigError("training power is below idle power", path=f"{_PATH}.train_power_w")
        for window in self.charging_hours:
            check_window(window, f"{_PATH}.charging_hours")
        if not 0.0 <= self.start_hour < 24.0:
            raise ConfigError(
                f"must be in [0, 24), not {self.start_hour}", path=f"{_PATH}.start_hour"
            )
        if not 0.0 <= self.initial_level <= 1.0:
            raise ConfigError(
                f"must be in [0, 1], not {self.initial_level}", path=f"{_PATH}.initial_level"
            )

    @classmethod
    def for_profile(cls, profile: DeviceProfile, **overrides: Any) -> BatteryParams:
        """Battery parameters of a battery-powered profile; ``overrides`` set the other fields."""
        if profile.battery_wh is None:
            raise ConfigError(f"profile {profile.name!r} is mains powered", path=_PATH)
        return cls(
            capacity_wh=profile.battery_wh,
            train_power_w=profile.train_power_w,
            idle_power_w=profile.idle_power_w,
            **overrides,
        )


class Battery:
    """State of charge of one device."""

    def __init__(self, params: BatteryParams) -> None:
        self.params = params
        self._energy = params.capacity_wh * params.initial_level
        self._used = 0.0

    @property
    def level(self) -> float:
        """State of charge, 0..1."""
        return self._energy / self.params.capacity_wh

    @property
    def energy_wh(self) -> float:
        """Stored energy in Wh."""
        return self._energy

    @property
    def used_wh(self) -> float:
        """Total energy the device has consumed (from the battery or the charger)."""
        return self._used

    @property
    def depleted(self) -> bool:
        """True when the battery is empty."""
        return self._energy <= 0.0

    def charging(self, t: float) -> bool:
        """Whether the device is plugged in at time ``t``."""
        hour = local_hour(t, self.params.start_hour)
        return any(in_window(hour, w) for w in self.params.charging_hours)

    def _switch_times(self, t_from: float, t_to: float) -> list[float]:
        """Times strictly inside ``(t_from, t_to)`` where a charging window opens or closes."""
        times: set[float] = set()
        for window in self.params.charging_hours:
            for hour in window:
                base = (hour - self.params.start_hour) * 3600.0
                k = math.ceil((t_from - base) / DAY_S)
                while (t := base + k * DAY_S) < t_to:
                    if t > t_from:
                        times.add(t)
                    k += 1
        return sorted(times)

    def advance(self, t_from: float, t_to: float, *, busy_s: float = 0.0) -> None:
        """Move from ``t_from`` to ``t_to`` with ``busy_s`` seconds of training in between."""
        dt = t_to - t_from
        if dt < 0:
            raise ValueError(f"time goes backwards: {t_from} -> {t_to}")
        if not 0.0 <= busy_s <= dt + 1e-9:
            raise ValueError(f"busy_s={busy_s} does not fit in an interval of {dt} s")
        if dt == 0:
            return
        p = self.params
        drain_w = p.idle_power_w + (p.train_power_w - p.idle_power_w) * min(busy_s / dt, 1.0)
        bounds = [t_from, *self._switch_times(t_from, t_to), t_to]
        for a, b in itertools.pairwise(bounds):
            hours = (b - a) / 3600.0
            charge_wh = p.charge_power_w * hours if self.charging((a + b) / 2) else 0.0
            drain_wh = drain_w * hours
            # An empty battery off the charger cannot supply the drain: the device is off.
            self._used += min(drain_wh, self._energy + charge_wh)
            self._energy = min(max(self._energy + charge_wh - drain_wh, 0.0), p.capacity_wh)
