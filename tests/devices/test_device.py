"""The device a peer consults each round: policy decisions, compute time, energy and heat."""

from __future__ import annotations

import dataclasses

import pytest

from fltorrent.devices.availability import Trace
from fltorrent.devices.device import REFERENCE_PROFILE, Device
from fltorrent.devices.policy import PolicyParams
from fltorrent.devices.profiles import DEFAULT_PROFILES

GFLOPS = 1e9
NOON = 12.0  # start hour outside the default charging hours (22:00-07:00)


def phone(**kw: object) -> Device:
    return Device(
        DEFAULT_PROFILES["smartphone_high"],
        core_flops=GFLOPS,
        start_hour=NOON,
        **kw,  # type: ignore[arg-type]
    )


def test_compute_time_scales_with_cpu_share_and_throttling() -> None:
    iot = Device(DEFAULT_PROFILES["iot_device"], core_flops=GFLOPS)  # 0.1 core
    edge = Device(DEFAULT_PROFILES["edge_server"], core_flops=GFLOPS)  # 2 cores
    assert iot.compute_seconds(1e9) == pytest.approx(10.0)
    assert edge.compute_seconds(1e9) == pytest.approx(0.5)
    assert iot.compute_seconds(1e9, speed=0.5) == pytest.approx(20.0)
    # Real mode: 1 s measured on a core here lasts 10 s on the IoT device; an edge server
    # cannot be emulated faster than this machine.
    assert iot.real_padding(1.0) == pytest.approx(9.0)
    assert edge.real_padding(1.0) == 0.0


def test_training_drains_the_battery_at_training_power() -> None:
    d = phone()
    assert d.decide(0.0).train and d.battery_level == 1.0
    d.busy(3600.0, now=3600.0)  # one hour of training, not plugged in at noon
    p = DEFAULT_PROFILES["smartphone_high"]
    assert p.battery_wh is not None
    assert d.battery is not None
    assert d.battery.used_wh == pytest.approx(p.train_power_w)
    assert d.battery_level == pytest.approx(1 - p.train_power_w / p.battery_wh)
    # Idle until later: idle power only.
    d.decide(7200.0)
    assert d.battery.used_wh == pytest.approx(p.train_power_w + p.idle_power_w)


def test_low_battery_sits_out_until_charged() -> None:
    d = phone(policy=PolicyParams(min_battery=0.5))
    d.busy(2 * 3600.0, now=2 * 3600.0)  # 12.6 Wh of 15.4: below half
    decision = d.decide(2 * 3600.0)
    assert not decision.train and decision.reason == "battery"
    # Idle at 0.5 W it is empty by 22:00 (10 h after noon), when it is plugged in (10 W):
    # half an hour later it holds about 5 Wh (below half), an hour and a half later enough.
    d.decide(10 * 3600.0)
    assert d.battery_level == 0.0
    assert d.decide(10.5 * 3600.0).reason == "battery"
    assert d.decide(11.5 * 3600.0).train


def test_charging_only_waits_for_the_night() -> None:
    d = phone(policy=PolicyParams(charging_only=True))
    assert d.decide(0.0).reason == "not_charging"
    assert d.decide(11 * 3600.0).train  # 23:00, plugged in (and so on Wi-Fi)


def test_thermal_throttle_slows_then_pauses() -> None:
    pi = Device(DEFAULT_PROFILES["raspberry_pi"], core_flops=GFLOPS)
    assert pi.decide(0.0).speed == 1.0
    assert pi.thermal is not None
    pi.busy(3600.0, now=3600.0)  # an hour at full load: well past the soft limit
    t = pi.temperature_c
    assert t is not None and t > pi.thermal.params.soft_limit_c
    d = pi.decide(3600.0)
    if t >= pi.thermal.params.hard_limit_c:
        assert not d.train and d.reason == "thermal"
    else:
        assert d.train and d.speed == pi.thermal.params.soft_factor
    # Paused explicitly: hotter than the hard limit with thermal_pause.
    hot = dataclasses.replace(pi.thermal.params, hard_limit_c=t - 1, soft_limit_c=t - 2)
    pi2 = Device(DEFAULT_PROFILES["raspberry_pi"], core_flops=GFLOPS, thermal=hot)
    pi2.busy(3600.0, now=3600.0)
    assert pi2.decide(3600.0).reason == "thermal"
    # After cooling at idle power for an hour it trains at full speed again.
    assert pi2.decide(3 * 3600.0).train and pi2.decide(3 * 3600.0).speed == 1.0


def test_unavailable_device_does_not_train() -> None:
    d = Device(REFERENCE_PROFILE, core_flops=GFLOPS, availability=Trace([(0.0, 100.0)]))
    assert d.decide(50.0).train
    d2 = Device(REFERENCE_PROFILE, core_flops=GFLOPS, availability=Trace([(0.0, 100.0)]))
    assert d2.decide(150.0).reason == "unavailable"


def test_compression_by_tier_and_wifi_preference() -> None:
    codec = {
        name: Device(p, core_flops=GFLOPS).decide(0.0).compression
        for name, p in DEFAULT_PROFILES.items()
    }
    assert codec == {
        "edge_server": "none",
        "smartphone_high": "none",
        "smartphone_low": "q8",
        "raspberry_pi": "q8",
        "iot_device": "q8",
    }
    custom = Device(
        DEFAULT_PROFILES["iot_device"],
        core_flops=GFLOPS,
        tier_compression={"high": "none", "mid": "q8", "low": "q8", "embedded": "topk"},
    )
    assert custom.decide(0.0).compression == "topk"
    # A high-end phone off Wi-Fi (not charging at noon) with a 5 MB update compresses it.
    assert phone(update_bytes=5_000_000).decide(0.0).compression == "q8"
    assert phone(update_bytes=5_000).decide(0.0).compression == "none"
    night = phone(update_bytes=5_000_000)
    assert night.decide(11 * 3600.0).compression == "none"  # on Wi-Fi at 23:00
    no_pref = phone(update_bytes=5_000_000, policy=PolicyParams(wifi_preferred=False))
    assert no_pref.decide(0.0).compression == "none"
    # An explicit codec overrides the tier.
    forced = Device(DEFAULT_PROFILES["edge_server"], core_flops=GFLOPS, compression="topk")
    assert forced.decide(0.0).compression == "topk"
