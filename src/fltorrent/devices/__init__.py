"""Devices: profiles and behaviour models (battery, thermal, availability, failures) and policies.

Pure, deterministic and seeded: no I/O but reading trace files, no asyncio, no torch.
"""

from fltorrent.devices.availability import AlwaysOn, Availability, Diurnal, Trace, load_traces
from fltorrent.devices.battery import Battery, BatteryParams, in_window, local_hour
from fltorrent.devices.failures import (
    FailureParams,
    crash_share_schedule,
    down_at,
    failure_schedule,
    is_down,
)
from fltorrent.devices.policy import (
    COMPRESSION_BY_TIER,
    Decision,
    PolicyParams,
    decide,
    transfer_allowed,
)
from fltorrent.devices.profiles import (
    DEFAULT_PROFILES,
    EAFL_TRAIN_POWER_W,
    TIERS,
    DeviceProfile,
    Tier,
    apportion,
    assign_profiles,
    profile_from_mapping,
)
from fltorrent.devices.thermal import Thermal, ThermalParams

__all__ = [
    "COMPRESSION_BY_TIER",
    "DEFAULT_PROFILES",
    "EAFL_TRAIN_POWER_W",
    "TIERS",
    "AlwaysOn",
    "Availability",
    "Battery",
    "BatteryParams",
    "Decision",
    "DeviceProfile",
    "Diurnal",
    "FailureParams",
    "PolicyParams",
    "Thermal",
    "ThermalParams",
    "Tier",
    "Trace",
    "apportion",
    "assign_profiles",
    "crash_share_schedule",
    "decide",
    "down_at",
    "failure_schedule",
    "in_window",
    "is_down",
    "load_traces",
    "local_hour",
    "profile_from_mapping",
    "transfer_allowed",
]
