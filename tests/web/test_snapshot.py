"""The status snapshot and its sources: history, the federation's board, the status file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fltorrent.config import load_config
from fltorrent.errors import ConfigError
from fltorrent.runtime.status import (
    PeerBoard,
    StatusBoard,
    StatusFile,
    check_dashboard,
    write_status,
)
from fltorrent.telemetry.snapshot import PeerView, RoundHistory, make_snapshot, state_of
from fltorrent.web.source import StatusSource
from tests.web.helpers import metrics


def test_history_rows_mean_min_and_bytes() -> None:
    h = RoundHistory()
    assert h.add(1, 1, accuracy=0.5, completion=1.0, bytes_up=10, bytes_down=20)
    assert h.add(1, 2, accuracy=0.7, completion=0.5, bytes_up=30, bytes_down=40)
    assert h.add(2, 1, accuracy=0.9, completion=1.0)  # bytes unknown (a tracker's report)
    assert not h.add(2, 1, accuracy=0.9, completion=1.0)  # the same report changes nothing
    rows = h.rows()
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[0]["peers"] == 2
    assert rows[0]["accuracy_mean"] == pytest.approx(0.6)
    assert rows[0]["accuracy_min"] == 0.5
    assert rows[0]["completion_mean"] == 0.75
    assert (rows[0]["bytes_up"], rows[0]["bytes_down"]) == (40, 60)
    assert rows[1]["bytes_up"] is None
    # A fuller record of the same round replaces the entry; known bytes are kept.
    assert h.add(2, 1, accuracy=0.8, completion=1.0, bytes_up=5, bytes_down=6)
    assert h.rows()[1]["accuracy_mean"] == 0.8
    h.add(2, 1, accuracy=0.8, completion=1.0)
    assert h.peer_bytes(1) == (15, 26)
    assert h.peer_bytes(3) == (None, None)


def test_snapshot_round_state_and_no_nan() -> None:
    views = [
        PeerView(1, "training", 3, 0.5, 0.8),
        PeerView(2, "exchanging", 2, 1.0, math.nan),
        PeerView(3, "failed", 1, 0.0, None),
    ]
    s = make_snapshot(views, total_rounds=5, edges=[(2, 1), (2, 3)], source="test")
    assert s["round"] == 2  # the slowest live peer; the failed one does not count
    assert s["completion"] == 0.75
    assert s["state"] == "running"
    assert s["peers"][2]["accuracy"] is None  # NaN is not JSON
    assert s["edges"] == [[1, 2], [2, 3]]
    assert s["history"] == [] and s["accuracy_mean"] is None
    json.dumps(s, allow_nan=False)
    assert state_of([PeerView(1), PeerView(2)]) == "starting"
    assert state_of([PeerView(1, "done", 5), PeerView(2, "failed", 2)]) == "finished"


def test_board_is_a_status_source_with_history_bytes_and_versions() -> None:
    board = StatusBoard(3, 4)
    assert isinstance(board, StatusSource)
    seen: list[int] = []
    board.listen(lambda: seen.append(board.version))
    board.update(1, phase="training", round_=1, completion=0.0, accuracy=None)
    for peer in (1, 2, 3):
        board.record(metrics(1, peer, accuracy=0.1 * peer, up=100 * peer, down=10))
    board.record(metrics(2, 1, accuracy=0.6, up=1, down=2))
    board.mark(3, "failed")
    assert seen == [1, 2, 3, 4, 5, 6]
    s = board.snapshot()
    # What Federation.get_training_status always returned is still there.
    assert {"round", "total_rounds", "completion", "peers"} <= set(s)
    assert s["total_rounds"] == 4
    assert s["round"] == 1  # peer 2 is at round 1, peer 3 failed
    assert s["peers"][1] == {
        "peer": 1,
        "phase": "evaluated",
        "round": 2,
        "completion": 1.0,
        "accuracy": 0.6,
        "bytes_up": 101,
        "bytes_down": 12,
    }
    first = s["history"][0]
    assert first["accuracy_min"] == pytest.approx(0.1)
    assert first["bytes_up"] == 600
    assert s["accuracy_mean"] == 0.6  # the last round's figures
    assert s["edges"] is None  # a board without a topology


def test_progress_reports_enter_the_history_without_bytes() -> None:
    board = StatusBoard(2, 3)
    board.update(1, phase="evaluated", round_=1, completion=0.9, accuracy=0.4)
    board.update(1, phase="training", round_=2, completion=0.0, accuracy=None)
    (row,) = board.snapshot()["history"]
    assert (row["round"], row["accuracy_mean"], row["bytes_down"]) == (1, 0.4, None)
    assert board.snapshot()["peers"][1]["accuracy"] == 0.4  # kept while it trains


def test_board_for_config_has_the_trackers_overlay() -> None:
    config = load_config(None, ["federate.client_num=6", "topology.type=ring"])
    s = StatusBoard.for_config(config).snapshot()
    assert s["edges"] == [[1, 2], [1, 6], [2, 3], [3, 4], [4, 5], [5, 6]]
    assert set(s["peers"]) == set(range(1, 7))


def test_peer_board_tracks_one_peer() -> None:
    board = PeerBoard()
    board.record(metrics(1, 4, accuracy=0.3))
    s = board.snapshot()
    assert s["source"] == "peer" and list(s["peers"]) == [4] and s["total_rounds"] is None


def test_status_file_is_written_atomically_and_throttled(tmp_path: Path) -> None:
    board = StatusBoard(2, 2)
    path = tmp_path / "status.json"
    status = StatusFile(board, path, interval=3600, periodic=False)
    board.listen(status.changed)
    status.write()
    first = json.loads(path.read_text())
    assert first["state"] == "starting" and "written_at" in first
    board.record(metrics(1, 1))  # within the interval: not written yet
    assert json.loads(path.read_text())["round"] == 0
    status.interval = 0
    board.record(metrics(1, 2))
    assert json.loads(path.read_text())["round"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left
    write_status(board, tmp_path, name="other.json")
    assert (tmp_path / "other.json").is_file()


def test_a_dashboard_is_refused_in_virtual_time_and_on_a_bad_host() -> None:
    with pytest.raises(ConfigError, match="virtual time"):
        check_dashboard(virtual_time=True, host="127.0.0.1", port=0)
    with pytest.raises(ConfigError, match="dashboard host"):
        check_dashboard(virtual_time=False, host="no-such-host.invalid", port=0)
