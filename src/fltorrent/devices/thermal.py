"""Thermal model: one lumped thermal mass with a thermal resistance to the room (first order).

At constant power ``P`` the temperature relaxes exponentially towards the steady state
``T_ss = ambient + heat_c_per_w * P`` with time constant ``tau_s``; :meth:`Thermal.advance` uses
the exact solution ``T(t + dt) = T_ss + (T - T_ss) * exp(-dt / tau)``, so step size does not
matter. Throttling follows the Raspberry Pi firmware: full speed below the soft limit, reduced
between soft and hard limit, paused at the hard limit. A caller models the feedback by passing a
power that depends on :meth:`Thermal.speed_factor` (e.g. idle + (train - idle) * speed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fltorrent.errors import ConfigError

_PATH = "devices.thermal"


@dataclass(frozen=True)
class ThermalParams:
    """Temperatures in °C, ``heat_c_per_w`` in K/W, ``tau_s`` in seconds."""

    ambient_c: float = 25.0
    # Our assumption, for a bare Raspberry Pi 4 B without heatsink: 10 K/W and tau = 180 s.
    # At sustained full training load (6.4 W, profiles.py) in a 25 °C room the steady state is
    # 89 °C, and 80 °C is crossed after tau * ln(64 / 9) ≈ 353 s ≈ 6 minutes, in line with
    # reports of bare Pi 4 boards throttling within minutes under all-core load.
    heat_c_per_w: float = 10.0
    tau_s: float = 180.0
    # Raspberry Pi documentation ("Frequency management and thermal control"): between 80 °C
    # and 85 °C the ARM cores are progressively throttled; at 85 °C ARM and GPU are throttled
    # hard. 85 °C is the limit on all models.
    soft_limit_c: float = 80.0
    hard_limit_c: float = 85.0
    # Our assumption: half speed in the soft-throttle band (the firmware steps the clock down
    # progressively; a single factor is a coarse average). At the hard limit we pause.
    soft_factor: float = 0.5
    initial_c: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.heat_c_per_w) and self.heat_c_per_w >= 0):
            raise ConfigError(
                f"must be >= 0, not {self.heat_c_per_w}", path=f"{_PATH}.heat_c_per_w"
            )
        if not (math.isfinite(self.tau_s) and self.tau_s > 0):
            raise ConfigError(f"must be positive, not {self.tau_s}", path=f"{_PATH}.tau_s")
        if not self.soft_limit_c <= self.hard_limit_c:
            raise ConfigError("soft limit is above the hard limit", path=f"{_PATH}.soft_limit_c")
        if not 0.0 <= self.soft_factor <= 1.0:
            raise ConfigError(
                f"must be in [0, 1], not {self.soft_factor}", path=f"{_PATH}.soft_factor"
            )


class Thermal:
    """Temperature of one device."""

    def __init__(self, params: ThermalParams) -> None:
        self.params = params
        self._temp = params.ambient_c if params.initial_c is None else params.initial_c

    @property
    def temperature(self) -> float:
        """Current temperature in °C."""
        return self._temp

    def steady_state(self, power_w: float) -> float:
        """Temperature reached after a long time at ``power_w``."""
        return self.params.ambient_c + self.params.heat_c_per_w * power_w

    def advance(self, dt: float, power_w: float) -> None:
        """Let ``dt`` seconds pass at constant ``power_w`` (exact first-order solution)."""
        if dt < 0 or power_w < 0:
            raise ValueError(f"dt and power must be >= 0, not {dt}, {power_w}")
        t_ss = self.steady_state(power_w)
        self._temp = t_ss + (self._temp - t_ss) * math.exp(-dt / self.params.tau_s)

    def speed_factor(self) -> float:
        """1 below the soft limit, ``soft_factor`` up to the hard limit, 0 (paused) at or above."""
        if self._temp >= self.params.hard_limit_c:
            return 0.0
        if self._temp >= self.params.soft_limit_c:
            return self.params.soft_factor
        return 1.0

    def time_to_reach(self, target_c: float, power_w: float) -> float:
        """Seconds until the temperature reaches ``target_c`` at ``power_w`` (inf if never)."""
        if self._temp == target_c:
            return 0.0
        t_ss = self.steady_state(power_w)
        if self._temp == t_ss:
            return math.inf
        # The gap to the steady state shrinks by exp(-t / tau): the target must lie strictly
        # between the current temperature and the steady state.
        ratio = (target_c - t_ss) / (self._temp - t_ss)
        if not 0.0 < ratio < 1.0:
            return math.inf
        return -self.params.tau_s * math.log(ratio)

    def cooldown_time(self, target_c: float, power_w: float) -> float:
        """Seconds until the temperature falls to ``target_c`` at ``power_w`` (0 if already)."""
        if self._temp <= target_c:
            return 0.0
        return self.time_to_reach(target_c, power_w)
