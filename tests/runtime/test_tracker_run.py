"""A tracker-mode run writes the run directory from its members' round records, which it
checks as what they are: a remote party's word."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fltorrent.config import load_config
from fltorrent.runtime.tracker_run import TrackerRun
from fltorrent.tracker import MemberState
from tests.records import round_metrics


def _record(round_: int, peer: int, **changes: Any) -> dict[str, Any]:
    m = round_metrics(
        round_,
        peer,
        accuracy=0.5 + 0.1 * round_,
        loss=1.0,
        local_accuracy=0.5,
        train_loss=None,
        completion=1.0,
    )
    return {**m.as_dict(), **changes}


def _member(peer: int, done: bool) -> MemberState:
    return MemberState(peer_id=peer, address=("h", 1), channel=None, done=done)  # type: ignore[arg-type]


def test_records_are_checked_kept_once_and_summarised(tmp_path: Path) -> None:
    config = load_config(None, ["federate.client_num=2", "federate.total_round_num=2"])
    run = TrackerRun(config, tmp_path)
    good = [_record(1, 1), _record(1, 2), _record(2, 1)]
    for r in good:
        run.on_record(r["peer"], r)
    bad = [
        (1, _record(2, 2)),  # peer 1 speaking for peer 2
        (2, _record(3, 2)),  # not a round of this run
        (2, {**_record(2, 2), "evil": 1}),  # a field RoundMetrics has not
        (2, {**_record(2, 2), "bytes_up": "lots"}),  # a wrong type
        (2, {**_record(2, 2), "accuracy": 7.0}),  # out of range
        (1, _record(1, 1)),  # again
    ]
    for peer, r in bad:
        run.on_record(peer, r)
    assert run.dropped == len(bad)
    run.on_record(2, {**_record(2, 2), "loss": None})  # a NaN loss crossed JSON as null
    summary = run.finish({1: _member(1, True), 2: _member(2, False)})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [(json.loads(x)["round"], json.loads(x)["peer"]) for x in lines] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]
    assert summary["failed_peers"] == [2] and summary["records_dropped"] == len(bad)
    assert summary["mode"] == "tracker"
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "report" / "index.html").is_file()


def test_a_member_that_never_registered_failed(tmp_path: Path) -> None:
    config = load_config(None, ["federate.client_num=3", "federate.total_round_num=1"])
    run = TrackerRun(config, tmp_path)
    summary = run.finish({1: _member(1, True)})
    assert summary["failed_peers"] == [2, 3]
    assert not (tmp_path / "report").exists()  # no records, no figures


def test_non_finite_negative_or_missing_values_are_dropped(tmp_path: Path) -> None:
    # Such a record used to pass and crash the summary at the end of the run.
    config = load_config(None, ["federate.client_num=2", "federate.total_round_num=2"])
    run = TrackerRun(config, tmp_path)
    for change in (
        {"exchange_s": None},
        {"exchange_s": float("inf")},
        {"bytes_up": -5},
        {"completion": 2.0},
        {"wall_s": float("nan")},
        {"bytes_up": 10**400},  # once an OverflowError that cost the member its connection
    ):
        run.on_record(1, _record(1, 1, **change))
    assert run.dropped == 6 and not run.kept
    run.on_record(1, _record(1, 1, train_loss=float("nan")))  # a diverged loss is a fact
    summary = run.finish({1: _member(1, True), 2: _member(2, True)})
    assert run.kept == {(1, 1)} and summary["records_dropped"] == 6
