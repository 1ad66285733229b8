"""Availability models: when a device is online and willing to take part.

Every model answers two pure questions of simulated time ``t`` (seconds since the start):
``available(t)`` and ``next_change(t)`` (the next switch strictly after ``t``, ``inf`` if none),
so a simulator can sleep until the next switch instead of polling.

* :class:`AlwaysOn`: servers and lab devices.
* :class:`Diurnal`: time is cut into slots (an hour by default); in each slot the device is online
  with a probability that depends on the local hour, drawn from ``default_rng([seed, slot])`` so
  the answer depends on ``t`` and the seed only, never on the order of the calls.
* :class:`Trace`: explicit active intervals ``[start, end)``, e.g. from a recorded trace file
  (YAML or JSON; :func:`load_traces` reads one file for many peers).
"""

from __future__ import annotations

import bisect
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import yaml

from fltorrent.devices.battery import check_window, in_window, local_hour
from fltorrent.errors import ConfigError

_PATH = "devices.availability"


@runtime_checkable
class Availability(Protocol):
    """When a device is online."""

    def available(self, t: float) -> bool:
        """Whether the device is online at ``t``."""
        ...

    def next_change(self, t: float) -> float:
        """Time of the next switch strictly after ``t``; ``inf`` if it never switches again."""
        ...


class AlwaysOn:
    """Online all the time."""

    def available(self, t: float) -> bool:
        return True

    def next_change(self, t: float) -> float:
        return math.inf


class Diurnal:
    """Slot-wise random availability with a day/night pattern.

    In a slot whose middle falls in the local ``online_hours`` the device is online with
    probability ``p_online``, otherwise with ``p_other``.
    """

    # Diurnal pattern: Bonawitz et al., "Towards Federated Learning at Scale: System Design"
    # (MLSys 2019) report that participation follows the day, peaking at night local time when
    # phones are charging, idle and on Wi-Fi; Yang et al., "Characterizing Impacts of
    # Heterogeneity in Federated Learning upon Large-Scale Smartphone Data" (WWW 2021) see the
    # same daily cycle in the availability of 136k phones. The numbers below (22:00-07:00,
    # 0.8 at night, 0.2 otherwise) are our assumption, aligned with the battery's charging hours.
    DEFAULT_ONLINE_HOURS = (22.0, 7.0)
    MAX_SCAN_SLOTS = 100_000  # next_change gives up (inf) after this many unchanged slots

    def __init__(
        self,
        seed: int,
        *,
        online_hours: tuple[float, float] = DEFAULT_ONLINE_HOURS,
        start_hour: float = 9.0,
        p_online: float = 0.8,
        p_other: float = 0.2,
        slot_s: float = 3600.0,
    ) -> None:
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, not {seed}", path=f"{_PATH}.seed")
        check_window(online_hours, f"{_PATH}.online_hours")
        if not 0.0 <= start_hour < 24.0:
            raise ConfigError(f"must be in [0, 24), not {start_hour}", path=f"{_PATH}.start_hour")
        for key, p in (("p_online", p_online), ("p_other", p_other)):
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"must be a probability, not {p}", path=f"{_PATH}.{key}")
        if not (math.isfinite(slot_s) and slot_s > 0):
            raise ConfigError(f"must be positive, not {slot_s}", path=f"{_PATH}.slot_s")
        self.seed = seed
        self.online_hours = online_hours
        self.start_hour = start_hour
        self.p_online = p_online
        self.p_other = p_other
        self.slot_s = slot_s

    def _slot(self, t: float) -> int:
        if t < 0:
            raise ValueError(f"time must be >= 0, not {t}")
        return math.floor(t / self.slot_s)

    def probability(self, slot: int) -> float:
        """Probability of being online in ``slot``."""
        hour = local_hour((slot + 0.5) * self.slot_s, self.start_hour)
        return self.p_online if in_window(hour, self.online_hours) else self.p_other

    def slot_online(self, slot: int) -> bool:
        """Whether the device is online in ``slot`` (a pure function of seed and slot)."""
        p = self.probability(slot)
        if p in (0.0, 1.0):
            return p == 1.0
        return bool(np.random.default_rng([self.seed, slot]).random() < p)

    def available(self, t: float) -> bool:
        return self.slot_online(self._slot(t))

    def next_change(self, t: float) -> float:
        slot = self._slot(t)
        if self.p_online == self.p_other and self.p_online in (0.0, 1.0):
            return math.inf
        state = self.slot_online(slot)
        for later in range(slot + 1, slot + 1 + self.MAX_SCAN_SLOTS):
            if self.slot_online(later) != state:
                return later * self.slot_s
        return math.inf


def _trace_error(problem: str, source: str | None) -> ConfigError:
    prefix = f"trace file {source}: " if source else ""
    return ConfigError(prefix + problem, path=f"{_PATH}.trace")


def _parse_intervals(raw: object, source: str | None = None) -> list[tuple[float, float]]:
    if not isinstance(raw, list | tuple):
        raise _trace_error(
            f"expected a list of [start, end] pairs, got {type(raw).__name__}", source
        )
    out: list[tuple[float, float]] = []
    for item in raw:
        if (
            not isinstance(item, list | tuple)
            or len(item) != 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in item)
        ):
            raise _trace_error(f"expected a [start, end] pair of numbers, got {item!r}", source)
        out.append((float(item[0]), float(item[1])))
    return out


class Trace:
    """Online exactly during the given ``[start, end)`` intervals (seconds).

    Intervals must be sorted, each with ``start < end`` (``end`` may be ``inf``), and must not
    overlap; touching intervals are merged.
    """

    def __init__(
        self, intervals: Sequence[tuple[float, float]], *, source: str | None = None
    ) -> None:
        starts: list[float] = []
        ends: list[float] = []
        for start, end in intervals:
            if not (math.isfinite(start) and start < end) or math.isnan(end):
                raise _trace_error(f"interval [{start}, {end}] needs start < end", source)
            if ends and start < ends[-1]:
                raise _trace_error(
                    f"interval [{start}, {end}] overlaps or precedes [{starts[-1]}, {ends[-1]}]"
                    " (intervals must be sorted and disjoint)",
                    source,
                )
            if ends and start == ends[-1]:
                ends[-1] = end
            else:
                starts.append(start)
                ends.append(end)
        self._starts = starts
        self._ends = ends

    @property
    def intervals(self) -> tuple[tuple[float, float], ...]:
        """The (merged) active intervals."""
        return tuple(zip(self._starts, self._ends, strict=True))

    def available(self, t: float) -> bool:
        i = bisect.bisect_right(self._starts, t) - 1
        return i >= 0 and t < self._ends[i]

    def next_change(self, t: float) -> float:
        i = bisect.bisect_right(self._starts, t) - 1
        if i >= 0 and t < self._ends[i]:
            return self._ends[i]
        return self._starts[i + 1] if i + 1 < len(self._starts) else math.inf

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Trace:
        """Read a YAML or JSON list of ``[start, end]`` pairs."""
        return cls(_parse_intervals(_load(path), str(path)), source=str(path))


def _load(path: str | os.PathLike[str]) -> object:
    """Parse a trace file: JSON for ``*.json``, YAML otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _trace_error(f"cannot read: {exc}", str(path)) from exc
    try:
        data: object = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise _trace_error(f"cannot parse: {exc}", str(path)) from exc
    return data


def load_traces(path: str | os.PathLike[str]) -> dict[int, Trace]:
    """Read a YAML or JSON mapping ``{peer_id: [[start, end], ...]}``."""
    data = _load(path)
    source = str(path)
    if not isinstance(data, dict):
        raise _trace_error(
            f"expected a mapping of peer id to intervals, got {type(data).__name__}", source
        )
    traces: dict[int, Trace] = {}
    for key, raw in data.items():
        if isinstance(key, int) and not isinstance(key, bool):
            peer = key
        elif isinstance(key, str) and key.strip().isdigit():
            peer = int(key)
        else:
            raise _trace_error(f"peer id {key!r} is not a non-negative integer", source)
        if peer in traces:
            raise _trace_error(f"peer id {peer} is given twice", source)
        where = f"{source} (peer {peer})"
        traces[peer] = Trace(_parse_intervals(raw, where), source=where)
    return traces
