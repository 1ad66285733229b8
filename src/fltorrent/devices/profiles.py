"""Device profiles: what a simulated peer's hardware and link look like.

A :class:`DeviceProfile` is plain data: compute shares (for Ray or for scaling simulated training
time), memory, link rates, latency, jitter, loss, and the power figures that drive the battery and
thermal models. :data:`DEFAULT_PROFILES` holds the five default profiles; users add their own
with :func:`profile_from_mapping` (optionally ``extends:`` an existing one). A federation's mix of
devices is given as shares and turned into one profile per peer by :func:`assign_profiles`
(largest-remainder apportionment, then a seeded shuffle).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, get_args

import numpy as np

from fltorrent.errors import ConfigError

Tier = Literal["high", "mid", "low", "embedded"]
TIERS: tuple[str, ...] = get_args(Tier)

_PATH = "devices.profiles"


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device. Rates in Mbit/s, times in ms, loss as a fraction, power in W."""

    name: str
    tier: Tier
    cpu_share: float
    gpu_share: float
    memory_gb: float
    up_mbit: float
    down_mbit: float
    latency_ms: float
    loss: float
    jitter_ms: float = 0.0
    battery_wh: float | None = None
    train_power_w: float = 0.0
    idle_power_w: float = 0.0
    thermal: bool = False

    def __post_init__(self) -> None:
        where = f"{_PATH}.{self.name}"
        if not self.name:
            raise ConfigError("a profile needs a name", path=_PATH)
        if self.tier not in TIERS:
            raise ConfigError(f"tier must be one of {list(TIERS)}, not {self.tier!r}", path=where)
        positive = ("cpu_share", "memory_gb", "up_mbit", "down_mbit")
        non_negative = ("gpu_share", "latency_ms", "jitter_ms", "train_power_w", "idle_power_w")
        for key in positive + non_negative:
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0 or (key in positive and value == 0):
                kind = "positive" if key in positive else "non-negative"
                raise ConfigError(
                    f"must be a finite {kind} number, not {value}", path=f"{where}.{key}"
                )
        if not 0.0 <= self.loss < 1.0:
            raise ConfigError(
                f"must be a fraction in [0, 1), not {self.loss}", path=f"{where}.loss"
            )
        if self.battery_wh is not None and not (
            math.isfinite(self.battery_wh) and self.battery_wh > 0
        ):
            raise ConfigError(
                f"must be positive (or null for mains power), not {self.battery_wh}",
                path=f"{where}.battery_wh",
            )
        if self.train_power_w < self.idle_power_w:
            raise ConfigError(
                f"training power {self.train_power_w} W is below idle power {self.idle_power_w} W",
                path=f"{where}.train_power_w",
            )

    @property
    def mains_powered(self) -> bool:
        """True when the device has no battery."""
        return self.battery_wh is None


# Training power of phones, EAFL (Arouj & Abdelmoniem, "Towards Energy-Aware Federated Learning
# on Battery-Powered Clients", FedEdge @ MobiCom 2022) on FedScale:
# about 6.3 / 5.4 / 3.0 W for high / mid / low-end phones.
EAFL_TRAIN_POWER_W: Mapping[str, float] = MappingProxyType({"high": 6.3, "mid": 5.4, "low": 3.0})

DEFAULT_PROFILES: Mapping[str, DeviceProfile] = MappingProxyType(
    {
        # Mains powered, actively cooled: no battery and no thermal model.
        # Power draw: our assumption (a small-form-factor edge box, ~65 W load / ~15 W idle).
        "edge_server": DeviceProfile(
            name="edge_server",
            tier="high",
            cpu_share=2.0,
            gpu_share=0.5,
            memory_gb=2.0,
            up_mbit=100.0,
            down_mbit=1000.0,
            latency_ms=5.0,
            loss=0.001,
            battery_wh=None,
            train_power_w=65.0,
            idle_power_w=15.0,
            thermal=False,
        ),
        # Battery: 4000 mAh x 3.85 V nominal = 15.4 Wh, a 2021 flagship (e.g. Galaxy S21,
        # 4000 mAh). Training 6.3 W: EAFL high-end. Idle 0.5 W: our assumption (background use
        # that empties a full phone in about 30 h, i.e. roughly daily charging).
        "smartphone_high": DeviceProfile(
            name="smartphone_high",
            tier="high",
            cpu_share=1.0,
            gpu_share=0.35,
            memory_gb=2.0,
            up_mbit=50.0,
            down_mbit=100.0,
            latency_ms=20.0,
            loss=0.005,
            battery_wh=15.4,
            train_power_w=EAFL_TRAIN_POWER_W["high"],
            idle_power_w=0.5,
            thermal=False,
        ),
        # Battery: 3000 mAh x 3.85 V = 11.55 Wh, our assumption for a budget phone.
        # Training 3.0 W: EAFL low-end. Idle 0.4 W: our assumption.
        "smartphone_low": DeviceProfile(
            name="smartphone_low",
            tier="low",
            cpu_share=0.3,
            gpu_share=0.25,
            memory_gb=2.0,
            up_mbit=5.0,
            down_mbit=20.0,
            latency_ms=100.0,
            loss=0.02,
            battery_wh=11.55,
            train_power_w=EAFL_TRAIN_POWER_W["low"],
            idle_power_w=0.4,
            thermal=False,
        ),
        # Mains powered; the firmware throttles from 80 °C and stops at 85 °C (thermal.py).
        # Power: Raspberry Pi 4 B measured at 540 mA (2.7 W) idle and 1280 mA (6.4 W) with
        # `stress --cpu 4` (Jeff Geerling, pidramble.com power-consumption benchmarks).
        "raspberry_pi": DeviceProfile(
            name="raspberry_pi",
            tier="mid",
            cpu_share=0.6,
            gpu_share=0.25,
            memory_gb=2.0,
            up_mbit=10.0,
            down_mbit=50.0,
            latency_ms=30.0,
            loss=0.01,
            battery_wh=None,
            train_power_w=6.4,
            idle_power_w=2.7,
            thermal=True,
        ),
        # Our assumption: a battery-powered sensor gateway with a 1350 mAh x 3.7 V (5 Wh)
        # Li-ion cell, 1 W while training, 0.05 W idle. Not modelled as thermally limited.
        "iot_device": DeviceProfile(
            name="iot_device",
            tier="embedded",
            cpu_share=0.1,
            gpu_share=0.15,
            memory_gb=2.0,
            up_mbit=0.128,
            down_mbit=0.512,
            latency_ms=300.0,
            loss=0.05,
            battery_wh=5.0,
            train_power_w=1.0,
            idle_power_w=0.05,
            thermal=False,
        ),
    }
)

_FIELDS = {f.name: f for f in dataclasses.fields(DeviceProfile) if f.name != "name"}
_REQUIRED = tuple(name for name, f in _FIELDS.items() if f.default is dataclasses.MISSING)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check the type of one YAML value; ints are accepted where floats are expected."""
    if key == "tier":
        if not isinstance(value, str):
            raise ConfigError(f"must be a string, not {value!r}", path=where)
        return value
    if key == "thermal":
        if not isinstance(value, bool):
            raise ConfigError(f"must be true or false, not {value!r}", path=where)
        return value
    if key == "battery_wh" and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"must be a number, not {value!r}", path=where)
    return float(value)


def profile_from_mapping(
    name: str, raw: Mapping[str, Any], base: Mapping[str, DeviceProfile] = DEFAULT_PROFILES
) -> DeviceProfile:
    """Build a user profile from a YAML-like mapping.

    ``extends: <profile>`` starts from a profile of ``base`` and overrides the keys given;
    without it every field but ``jitter_ms``, ``battery_wh``, the powers and ``thermal`` is
    required. Unknown keys raise :class:`ConfigError` naming the key.
    """
    where = f"{_PATH}.{name}"
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "extends":
            continue
        if key not in _FIELDS:
            raise ConfigError(
                f"unknown key {key!r} (known: extends, {', '.join(_FIELDS)})", path=f"{where}.{key}"
            )
        values[key] = _coerce(key, value, f"{where}.{key}")
    parent_name = raw.get("extends")
    if parent_name is not None:
        if not isinstance(parent_name, str) or parent_name not in base:
            raise ConfigError(
                f"unknown profile {parent_name!r} (known: {', '.join(base)})",
                path=f"{where}.extends",
            )
        return dataclasses.replace(base[parent_name], name=name, **values)
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise ConfigError(
            f"missing keys {', '.join(missing)} (or give `extends: <profile>`)", path=where
        )
    return DeviceProfile(name=name, **values)


def apportion(shares: Mapping[str, float], n: int) -> dict[str, int]:
    """Largest-remainder (Hamilton) apportionment of ``n`` seats by ``shares`` summing to 1.

    Remainders that tie (to 1e-9) go to the name listed first.
    """
    total = sum(shares.values())
    if not total > 0:
        raise ConfigError("shares must have a positive sum", path="devices.distribution")
    names = list(shares)
    quotas = [shares[name] / total * n for name in names]
    floors = [math.floor(q + 1e-9) for q in quotas]
    left = n - sum(floors)
    order = sorted(range(len(names)), key=lambda i: (-round(quotas[i] - floors[i], 9), i))
    counts = dict(zip(names, floors, strict=True))
    for i in order[:left]:
        counts[names[i]] += 1
    return counts


def assign_profiles(
    distribution: Mapping[str, float], n: int, seed: int, profiles: Mapping[str, DeviceProfile]
) -> list[DeviceProfile]:
    """One profile per peer index ``0..n-1``: counts by largest remainder, then a seeded shuffle."""
    where = "devices.distribution"
    if n < 0:
        raise ConfigError(f"number of peers must be >= 0, not {n}", path=where)
    for name, share in distribution.items():
        if name not in profiles:
            raise ConfigError(
                f"unknown profile {name!r} (known: {', '.join(profiles)})", path=f"{where}.{name}"
            )
        if not (math.isfinite(share) and share >= 0):
            raise ConfigError(f"share must be >= 0, not {share}", path=f"{where}.{name}")
    total = sum(distribution.values())
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"shares must sum to 1, not {total:.6g}", path=where)
    counts = apportion(distribution, n)
    ordered = [profiles[name] for name, count in counts.items() for _ in range(count)]
    perm = np.random.default_rng(seed).permutation(n)
    return [ordered[int(i)] for i in perm]
