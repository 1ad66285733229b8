"""Mobile policies: each rule, their order, Wi-Fi preference and compression by tier."""

from __future__ import annotations

import pytest

from fltorrent.devices import COMPRESSION_BY_TIER, Decision, PolicyParams, decide
from fltorrent.devices.policy import transfer_allowed
from fltorrent.errors import ConfigError

DEFAULT = PolicyParams()
GOOGLE = PolicyParams(charging_only=True)


def phone(params: PolicyParams = DEFAULT, **kw: object) -> Decision:
    state: dict[str, object] = {
        "tier": "high",
        "battery_level": 0.8,
        "charging": False,
        "available": True,
        "thermal_speed": 1.0,
        "on_wifi": True,
    }
    state.update(kw)
    return decide(params, **state)  # type: ignore[arg-type]


def test_ok() -> None:
    assert phone() == Decision(train=True, reason="ok", speed=1.0, compression="none")


def test_battery_threshold() -> None:
    assert phone(battery_level=0.19).reason == "battery"
    assert not phone(battery_level=0.19).train
    assert phone(battery_level=0.2).train  # at the threshold is enough
    assert phone(PolicyParams(min_battery=0.5), battery_level=0.4).reason == "battery"
    assert phone(battery_level=None).train  # mains powered: no battery rule


def test_charging_only() -> None:
    assert phone(GOOGLE, charging=False).reason == "not_charging"
    assert phone(GOOGLE, charging=True).train
    assert phone(GOOGLE, charging=True, on_wifi=False).reason == "metered"
    assert phone(GOOGLE, battery_level=None, charging=False, on_wifi=False).train
    assert phone(charging=False).train  # default policy trains off the charger


def test_thermal_pause() -> None:
    assert phone(thermal_speed=0.0).reason == "thermal"
    slow = phone(thermal_speed=0.5)
    assert slow.train and slow.speed == 0.5
    stalled = phone(PolicyParams(thermal_pause=False), thermal_speed=0.0)
    assert stalled.train and stalled.speed == 0.0


def test_unavailable_and_order_of_rules() -> None:
    assert phone(available=False, battery_level=0.0, thermal_speed=0.0).reason == "unavailable"
    assert phone(GOOGLE, battery_level=0.0, thermal_speed=0.0).reason == "not_charging"
    assert phone(GOOGLE, charging=True, battery_level=0.0, thermal_speed=0.0).reason == "battery"
    assert phone(available=False).speed == 0.0


@pytest.mark.parametrize(
    ("tier", "codec"), [("high", "none"), ("mid", "q8"), ("low", "q8"), ("embedded", "q8")]
)
def test_compression_by_tier(tier: str, codec: str) -> None:
    assert COMPRESSION_BY_TIER[tier] == codec  # type: ignore[index]
    assert phone(tier=tier).compression == codec
    assert phone(tier=tier, available=False).compression == codec


def test_wifi_preference() -> None:
    assert transfer_allowed(DEFAULT, nbytes=10**9, on_wifi=True)
    assert transfer_allowed(DEFAULT, nbytes=1_000_000, on_wifi=False)
    assert not transfer_allowed(DEFAULT, nbytes=1_000_001, on_wifi=False)
    assert transfer_allowed(PolicyParams(wifi_preferred=False), nbytes=10**9, on_wifi=False)


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError) as err:
        PolicyParams(min_battery=1.5)
    assert err.value.path == "devices.policy.min_battery"
    with pytest.raises(ConfigError):
        PolicyParams(large_transfer_bytes=-1)
    with pytest.raises(ConfigError):
        phone(tier="quantum")
    with pytest.raises(ValueError):
        phone(battery_level=1.5)
    with pytest.raises(ValueError):
        phone(thermal_speed=2.0)
