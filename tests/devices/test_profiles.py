"""Device profiles: SPEC §4 defaults, user profiles, apportionment of a device mix."""

from __future__ import annotations

from collections import Counter

import pytest

from fltorrent.devices import (
    DEFAULT_PROFILES,
    DeviceProfile,
    apportion,
    assign_profiles,
    profile_from_mapping,
)
from fltorrent.errors import ConfigError

SPEC_MIX = {
    "smartphone_high": 0.2,
    "smartphone_low": 0.4,
    "raspberry_pi": 0.2,
    "iot_device": 0.15,
    "edge_server": 0.05,
}

# name: (tier, cpu, gpu, memory, up, down, latency, loss) from the SPEC §4 table
SPEC_TABLE = {
    "edge_server": ("high", 2.0, 0.5, 2.0, 100.0, 1000.0, 5.0, 0.001),
    "smartphone_high": ("high", 1.0, 0.35, 2.0, 50.0, 100.0, 20.0, 0.005),
    "smartphone_low": ("low", 0.3, 0.25, 2.0, 5.0, 20.0, 100.0, 0.02),
    "raspberry_pi": ("mid", 0.6, 0.25, 2.0, 10.0, 50.0, 30.0, 0.01),
    "iot_device": ("embedded", 0.1, 0.15, 2.0, 0.128, 0.512, 300.0, 0.05),
}


@pytest.mark.parametrize("name", sorted(SPEC_TABLE))
def test_default_profiles_match_spec(name: str) -> None:
    p = DEFAULT_PROFILES[name]
    got = (p.tier, p.cpu_share, p.gpu_share, p.memory_gb, p.up_mbit, p.down_mbit)
    assert (*got, p.latency_ms, p.loss) == SPEC_TABLE[name]
    assert p.name == name


def test_default_power_and_battery() -> None:
    assert set(DEFAULT_PROFILES) == set(SPEC_TABLE)
    assert DEFAULT_PROFILES["smartphone_high"].train_power_w == 6.3
    assert DEFAULT_PROFILES["smartphone_low"].train_power_w == 3.0
    assert DEFAULT_PROFILES["smartphone_high"].battery_wh == pytest.approx(15.4)
    assert DEFAULT_PROFILES["raspberry_pi"].mains_powered
    assert DEFAULT_PROFILES["raspberry_pi"].thermal
    assert DEFAULT_PROFILES["edge_server"].mains_powered
    assert not DEFAULT_PROFILES["edge_server"].thermal
    assert DEFAULT_PROFILES["iot_device"].battery_wh is not None


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (20, [4, 8, 4, 3, 1]),
        (100, [20, 40, 20, 15, 5]),
        # quotas 1.4 2.8 1.4 1.05 0.35: floors 1 2 1 1 0, two seats left for the largest
        # remainders .8 (smartphone_low) and .4 (tie: smartphone_high, listed first)
        (7, [2, 3, 1, 1, 0]),
        (0, [0, 0, 0, 0, 0]),
    ],
)
def test_apportion_largest_remainder(n: int, expected: list[int]) -> None:
    assert list(apportion(SPEC_MIX, n).values()) == expected


def test_assign_profiles_counts_and_determinism() -> None:
    a = assign_profiles(SPEC_MIX, 20, seed=1, profiles=DEFAULT_PROFILES)
    counts = Counter(p.name for p in a)
    assert counts == {
        "smartphone_high": 4,
        "smartphone_low": 8,
        "raspberry_pi": 4,
        "iot_device": 3,
        "edge_server": 1,
    }
    assert [p.name for p in assign_profiles(SPEC_MIX, 20, 1, DEFAULT_PROFILES)] == [
        p.name for p in a
    ]
    b = assign_profiles(SPEC_MIX, 100, seed=2, profiles=DEFAULT_PROFILES)
    c = assign_profiles(SPEC_MIX, 100, seed=3, profiles=DEFAULT_PROFILES)
    assert Counter(p.name for p in b) == Counter(p.name for p in c)
    assert [p.name for p in b] != [p.name for p in c]


@pytest.mark.parametrize(
    ("mix", "path"),
    [
        ({"smartphone_high": 0.5, "smartphone_low": 0.4}, "devices.distribution"),
        ({"smartphone_high": 1.2, "smartphone_low": -0.2}, "devices.distribution.smartphone_low"),
        ({"smartphone_high": 0.5, "toaster": 0.5}, "devices.distribution.toaster"),
        ({}, "devices.distribution"),
    ],
)
def test_assign_profiles_bad_distribution(mix: dict[str, float], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        assign_profiles(mix, 10, 0, DEFAULT_PROFILES)
    assert err.value.path == path


def test_user_profile_extends() -> None:
    p = profile_from_mapping(
        "slow_phone", {"extends": "smartphone_high", "up_mbit": 2, "loss": 0.1, "battery_wh": None}
    )
    base = DEFAULT_PROFILES["smartphone_high"]
    assert p.name == "slow_phone"
    assert (p.up_mbit, p.loss, p.battery_wh) == (2.0, 0.1, None)
    assert (p.down_mbit, p.cpu_share, p.tier, p.train_power_w) == (
        base.down_mbit,
        base.cpu_share,
        base.tier,
        base.train_power_w,
    )


def test_user_profile_from_scratch() -> None:
    raw = {
        "tier": "low",
        "cpu_share": 0.2,
        "gpu_share": 0,
        "memory_gb": 1,
        "up_mbit": 1,
        "down_mbit": 4,
        "latency_ms": 50,
        "loss": 0.01,
        "thermal": True,
    }
    p = profile_from_mapping("watch", raw)
    assert p == DeviceProfile(
        name="watch",
        tier="low",
        cpu_share=0.2,
        gpu_share=0.0,
        memory_gb=1.0,
        up_mbit=1.0,
        down_mbit=4.0,
        latency_ms=50.0,
        loss=0.01,
        thermal=True,
    )


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        ({"extends": "edge_server", "bogus": 1}, "devices.profiles.x.bogus", "bogus"),
        ({"extends": "mainframe"}, "devices.profiles.x.extends", "mainframe"),
        ({"tier": "high"}, "devices.profiles.x", "cpu_share"),
        ({"extends": "edge_server", "loss": 1.0}, "devices.profiles.x.loss", "fraction"),
        ({"extends": "edge_server", "cpu_share": "fast"}, "devices.profiles.x.cpu_share", "number"),
        ({"extends": "edge_server", "cpu_share": 0}, "devices.profiles.x.cpu_share", "positive"),
        ({"extends": "edge_server", "tier": "ultra"}, "devices.profiles.x", "tier"),
        ({"extends": "edge_server", "thermal": 1}, "devices.profiles.x.thermal", "true or false"),
        ({"extends": "edge_server", "battery_wh": 0}, "devices.profiles.x.battery_wh", "positive"),
    ],
)
def test_user_profile_errors(raw: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        profile_from_mapping("x", raw)
    assert err.value.path == path
    assert words in str(err.value)
