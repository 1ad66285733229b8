"""Availability: always-on, seeded diurnal slots, traces and trace files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fltorrent.devices import AlwaysOn, Availability, Diurnal, Trace, load_traces
from fltorrent.errors import ConfigError

H = 3600.0


def test_always_on() -> None:
    a = AlwaysOn()
    assert a.available(0.0) and a.available(1e9)
    assert a.next_change(5.0) == math.inf
    assert isinstance(a, Availability)


def test_diurnal_is_a_pure_function_of_seed_and_time() -> None:
    times = [i * 1800.0 + 7.0 for i in range(500)]
    a = [Diurnal(7).available(t) for t in times]
    b = Diurnal(7)
    assert [b.available(t) for t in reversed(times)] == a[::-1]
    assert [Diurnal(8).available(t) for t in times] != a


def test_diurnal_more_online_at_night_than_midday() -> None:
    d = Diurnal(3, start_hour=0.0)  # t = 0 is midnight; online hours 22:00-07:00
    by_hour = {h: [d.available((day * 24 + h + 0.5) * H) for day in range(60)] for h in range(24)}
    night = [x for h in (23, 0, 1, 2, 3, 4, 5) for x in by_hour[h]]
    midday = [x for h in (11, 12, 13, 14) for x in by_hour[h]]
    night_share, midday_share = sum(night) / len(night), sum(midday) / len(midday)
    assert night_share > 0.7 and midday_share < 0.3
    assert night_share > midday_share + 0.4


def test_diurnal_next_change_is_the_next_switch() -> None:
    d = Diurnal(11, slot_s=600.0)
    for t in (0.0, 1234.0, 50_000.0):
        nxt = d.next_change(t)
        assert nxt > t and nxt % 600.0 == 0.0
        state = d.available(t)
        probe = t
        while probe + 600.0 < nxt:
            probe += 600.0
            assert d.available(probe) == state
        assert d.available(nxt) != state


def test_diurnal_deterministic_extremes() -> None:
    d = Diurnal(0, p_online=1.0, p_other=0.0)  # starts 09:00; online 22:00-07:00
    assert not d.available(0.0)
    assert d.next_change(0.0) == 13 * H  # 22:00
    assert d.available(13 * H)
    assert d.next_change(13 * H) == 22 * H  # 07:00
    assert Diurnal(0, p_online=1.0, p_other=1.0).next_change(0.0) == math.inf


@pytest.mark.parametrize(
    ("kw", "path"),
    [
        ({"p_online": 1.5}, "devices.availability.p_online"),
        ({"online_hours": (3.0, 3.0)}, "devices.availability.online_hours"),
        ({"slot_s": 0.0}, "devices.availability.slot_s"),
        ({"start_hour": -1.0}, "devices.availability.start_hour"),
    ],
)
def test_diurnal_bad_params(kw: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as err:
        Diurnal(0, **kw)  # type: ignore[arg-type]
    assert err.value.path == path


def test_trace_available_and_next_change() -> None:
    tr = Trace([(10.0, 20.0), (30.0, 40.0)])
    assert isinstance(tr, Availability)
    expected = {5.0: False, 10.0: True, 19.9: True, 20.0: False, 35.0: True, 40.0: False}
    assert {t: tr.available(t) for t in expected} == expected
    changes = {0.0: 10.0, 10.0: 20.0, 15.0: 20.0, 20.0: 30.0, 35.0: 40.0, 40.0: math.inf}
    assert {t: tr.next_change(t) for t in changes} == changes


def test_trace_merges_touching_and_allows_open_end() -> None:
    tr = Trace([(0.0, 10.0), (10.0, 20.0), (30.0, math.inf)])
    assert tr.intervals == ((0.0, 20.0), (30.0, math.inf))
    assert tr.next_change(5.0) == 20.0
    assert tr.next_change(1e12) == math.inf and tr.available(1e12)
    assert Trace([]).next_change(0.0) == math.inf


@pytest.mark.parametrize(
    "intervals",
    [[(5.0, 5.0)], [(5.0, 1.0)], [(0.0, 10.0), (5.0, 15.0)], [(20.0, 30.0), (0.0, 10.0)]],
)
def test_trace_rejects_bad_intervals(intervals: list[tuple[float, float]]) -> None:
    with pytest.raises(ConfigError) as err:
        Trace(intervals)
    assert err.value.path == "devices.availability.trace"


def test_trace_files(tmp_path: Path) -> None:
    yml = tmp_path / "one.yaml"
    yml.write_text("- [0, 60]\n- [120.5, 180]\n")
    assert Trace.from_file(yml).intervals == ((0.0, 60.0), (120.5, 180.0))
    js = tmp_path / "one.json"
    js.write_text(json.dumps([[1, 2]]))
    assert Trace.from_file(str(js)).intervals == ((1.0, 2.0),)
    many = tmp_path / "many.json"
    many.write_text(json.dumps({"1": [[0, 10]], "2": [[5, 6], [7, 8]]}))
    traces = load_traces(many)
    assert sorted(traces) == [1, 2]
    assert traces[2].intervals == ((5.0, 6.0), (7.0, 8.0))
    many_yaml = tmp_path / "many.yml"
    many_yaml.write_text("3: [[0, 10]]\n4: []\n")
    assert load_traces(many_yaml)[4].intervals == ()


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("bad.yaml", "- [0, 10\n", "cannot parse"),
        ("bad.json", "[[0, 10]", "cannot parse"),
        ("shape.yaml", "start: 0\n", "list of [start, end] pairs"),
        ("pair.yaml", "- [0]\n", "pair of numbers"),
        ("text.yaml", "- [a, b]\n", "pair of numbers"),
        ("overlap.yaml", "- [0, 10]\n- [5, 20]\n", "overlaps"),
    ],
)
def test_bad_trace_file(tmp_path: Path, name: str, text: str, words: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        Trace.from_file(path)
    assert name in str(err.value) and words in str(err.value)
    assert err.value.path == "devices.availability.trace"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("- [0, 10]\n", "mapping"),
        ("abc: [[0, 10]]\n", "peer id"),
        ("1: [[10, 0]]\n", "peer 1"),
    ],
)
def test_bad_traces_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "traces.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_traces(path)
    assert "traces.yaml" in str(err.value) and words in str(err.value)


def test_missing_trace_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml.*cannot read"):
        Trace.from_file(tmp_path / "nope.yaml")
