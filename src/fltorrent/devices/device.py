"""One peer's device: its profile and behaviour models, asked by the peer once per round.

The peer calls :meth:`Device.decide` at the start of each round (train or sit out, at what
speed, with which compression), :meth:`Device.compute_seconds` to charge modelled compute to the
virtual clock in simulation (or :meth:`Device.real_padding` to emulate a slower CPU in real
mode), and :meth:`Device.busy` after compute so that battery and heat follow the work done.
Between calls the device is idle: battery drains at idle power (or charges when plugged in) and
the chip cools towards ambient.

Modelling choices: *availability* decides whether the owner lets the device train this round
(in use, or outside its usual idle hours); being offline altogether is the failure model's job
(crash and rejoin, see :mod:`fltorrent.devices.failures`). A phone is taken to be on Wi-Fi
while it charges (at home, plugged in: our assumption); other devices are always on a fixed line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fltorrent.devices.availability import AlwaysOn, Availability
from fltorrent.devices.battery import Battery, BatteryParams
from fltorrent.devices.policy import COMPRESSION_BY_TIER, PolicyParams, decide, transfer_allowed
from fltorrent.devices.profiles import DeviceProfile
from fltorrent.devices.thermal import Thermal, ThermalParams
from fltorrent.learn.compress import Codec

MIN_SPEED = 0.05  # floor of the compute speed factor (no division by zero when throttled)


@dataclass(frozen=True)
class Participation:
    """What a peer does this round."""

    train: bool = True
    reason: str = "ok"
    speed: float = 1.0
    compression: Codec = "none"


class Device:
    """Profile + battery + thermal + availability + policy of one peer."""

    def __init__(
        self,
        profile: DeviceProfile,
        *,
        core_flops: float,
        policy: PolicyParams | None = None,
        availability: Availability | None = None,
        thermal: ThermalParams | None = None,
        charging_hours: tuple[tuple[float, float], ...] = ((22.0, 7.0),),
        start_hour: float = 9.0,
        compression: Codec | None = None,
        tier_compression: Mapping[str, Codec] | None = None,
        update_bytes: int = 0,
    ) -> None:
        self.profile = profile
        self.core_flops = core_flops
        self.policy = policy or PolicyParams()
        self.availability = availability or AlwaysOn()
        self.battery: Battery | None = None
        if profile.battery_wh is not None:
            self.battery = Battery(
                BatteryParams(
                    capacity_wh=profile.battery_wh,
                    train_power_w=profile.train_power_w,
                    idle_power_w=profile.idle_power_w,
                    charging_hours=charging_hours,
                    start_hour=start_hour,
                )
            )
        self.thermal: Thermal | None = None
        if profile.thermal:
            self.thermal = Thermal(thermal or ThermalParams())
        self.compression = compression  # None: by device tier
        self.tier_compression = dict(tier_compression or COMPRESSION_BY_TIER)
        self.update_bytes = update_bytes
        self._t = 0.0  # simulated time accounted for so far

    # ------------------------------------------------------------------ state
    @property
    def battery_level(self) -> float | None:
        """Fraction of battery capacity left (``None``: mains powered)."""
        return self.battery.level if self.battery is not None else None

    @property
    def temperature_c(self) -> float | None:
        """Chip temperature (``None``: no thermal model)."""
        return self.thermal.temperature if self.thermal is not None else None

    def _idle_until(self, now: float) -> None:
        if now <= self._t:
            return
        if self.battery is not None:
            self.battery.advance(self._t, now)
        if self.thermal is not None:
            self.thermal.advance(now - self._t, self.profile.idle_power_w)
        self._t = now

    def busy(self, seconds: float, *, now: float) -> None:
        """``seconds`` of compute ended at ``now``: account energy and heat."""
        start = max(self._t, now - seconds)
        self._idle_until(start)
        if now > start:
            if self.battery is not None:
                self.battery.advance(start, now, busy_s=now - start)
            if self.thermal is not None:
                self.thermal.advance(now - start, self.profile.train_power_w)
        self._t = max(self._t, now)

    # ------------------------------------------------------------------ decisions
    def on_wifi(self, now: float) -> bool:
        """Phones: on Wi-Fi while charging (at home). Other devices: always."""
        if self.battery is None or self.profile.tier not in ("high", "low", "mid"):
            return True
        return self.battery.charging(now)

    def decide(self, now: float) -> Participation:
        """Whether and how to train in the round starting at simulated time ``now``."""
        self._idle_until(now)
        speed = self.thermal.speed_factor() if self.thermal is not None else 1.0
        wifi = self.on_wifi(now)
        d = decide(
            self.policy,
            tier=self.profile.tier,
            battery_level=self.battery_level,
            charging=self.battery.charging(now) if self.battery is not None else True,
            available=self.availability.available(now),
            thermal_speed=speed,
            on_wifi=wifi,
        )
        codec: Codec = self.compression or self.tier_compression[self.profile.tier]
        if (
            codec == "none"
            and self.compression is None
            and not transfer_allowed(self.policy, nbytes=self.update_bytes, on_wifi=wifi)
        ):
            codec = "q8"  # a large update off Wi-Fi: compress rather than wait
        return Participation(
            train=d.train, reason=d.reason, speed=max(d.speed, MIN_SPEED), compression=codec
        )

    # ------------------------------------------------------------------ compute time
    def compute_seconds(self, flops: float, speed: float = 1.0) -> float:
        """Modelled seconds for ``flops`` on this device (simulation)."""
        return flops / (self.core_flops * self.profile.cpu_share * max(speed, MIN_SPEED))

    def real_padding(self, measured_s: float, speed: float = 1.0) -> float:
        """Extra wait that makes real compute last as long as on this device.

        Real compute ran on (at least) one core of this machine; a device with a smaller CPU
        share or throttled by heat takes longer. A faster device cannot be emulated: no padding.
        """
        factor = 1.0 / (min(self.profile.cpu_share, 1.0) * max(speed, MIN_SPEED))
        return max(0.0, measured_s * (factor - 1.0))


REFERENCE_PROFILE = DeviceProfile(
    name="reference",
    tier="high",
    cpu_share=1.0,
    gpu_share=0.0,
    memory_gb=2.0,
    up_mbit=1000.0,
    down_mbit=1000.0,
    latency_ms=0.0,
    loss=0.0,
)
"""Simulated peer without a device profile: one reference core, mains powered, no heat; its
link comes from the ``network`` section, not from these rates."""
