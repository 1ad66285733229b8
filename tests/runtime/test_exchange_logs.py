"""Exchange logs (topology_logs/, bittorrent_logs/) and the figures summary.json takes from them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fltorrent.config import load_config
from fltorrent.runtime.federation import Federation
from fltorrent.swarm.events import ConnectionEvent, PieceEvent
from fltorrent.telemetry.exchange_log import (
    BITTORRENT_DIR,
    TOPOLOGY_DIR,
    ExchangeLog,
    exchange_summary,
    read_exchange_logs,
)
from tests.aio import aio

SMALL = ["federate.client_num=3", "federate.total_round_num=2", "data.num_samples=600"]


def _opened(t: float, remote: int) -> ConnectionEvent:
    return ConnectionEvent(t, "opened", remote, f"h:{remote}", True, 0.01 * remote)


@aio()
async def test_topology_complete_and_incomplete(tmp_path: Path) -> None:
    done = ExchangeLog(tmp_path, 1, origin=0.0)
    done(_opened(0.0, 2))  # before the watch starts: counted all the same
    done.watch_topology({2, 3}, timeout=60.0)
    done(_opened(0.1, 3))
    done.close()
    late = ExchangeLog(tmp_path, 2, origin=0.0)
    late.watch_topology({1, 3}, timeout=0.0)
    late(_opened(0.0, 1))
    late(ConnectionEvent(0.0, "dial_failed", 3, "h:3", True, None, "refused"))
    late.flush()  # a round ended after the deadline: 3 is named
    late.close()
    connections, pieces = read_exchange_logs(tmp_path)
    kinds = {(r["peer"], r["kind"]) for r in connections}
    assert (1, "topology_complete") in kinds and (2, "topology_incomplete") in kinds
    incomplete = next(r for r in connections if r["kind"] == "topology_incomplete")
    assert incomplete["missing"] == [3] and not pieces
    summary = exchange_summary(tmp_path)
    assert summary["topology_incomplete_peers"] == [2]
    assert summary["connections_opened"] == 3 and summary["connection_failures"] == 1
    assert summary["connection_establishment_s"]["max"] == pytest.approx(0.03)


@aio()
async def test_piece_records_and_a_line_cut_short(tmp_path: Path) -> None:
    log = ExchangeLog(tmp_path, 4, origin=100.0)
    log(PieceEvent(101.5, 2, 1, 0, 64, 3, (3,), 0.2, True))
    log(PieceEvent(102.0, 2, 1, 1, 64, 3, (3, 5), 0.4, False))
    log.close()
    with (tmp_path / BITTORRENT_DIR / "peer-4.jsonl").open("a") as f:
        f.write('{"t": 3.0, "auth')  # a crash mid-line
    _, pieces = read_exchange_logs(tmp_path)
    assert [(p["t"], p["verified"], p["sources"]) for p in pieces] == [
        (1.5, True, [3]),
        (2.0, False, [3, 5]),
    ]
    summary = exchange_summary(tmp_path)
    assert (summary["pieces_verified"], summary["pieces_rejected"]) == (1, 1)
    assert summary["piece_time_s"]["mean"] == pytest.approx(0.2)


@pytest.mark.slow
def test_a_run_logs_every_piece_it_received(tmp_path: Path) -> None:
    result = Federation(load_config(None, SMALL), output_dir=tmp_path, progress="none").run()
    connections, pieces = read_exchange_logs(tmp_path)
    assert sorted(p.name for p in (tmp_path / TOPOLOGY_DIR).iterdir()) == [
        "peer-1.jsonl",
        "peer-2.jsonl",
        "peer-3.jsonl",
    ]
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for peer in (1, 2, 3):
        mine = [p for p in pieces if p["peer"] == peer]
        received = sum(m["pieces_received"] for m in metrics if m["peer"] == peer)
        assert len(mine) == received > 0  # one line per piece that arrived
        assert all(p["author"] != peer and p["verified"] for p in mine)
        built = [c for c in connections if c["peer"] == peer and c["kind"] == "topology_complete"]
        assert len(built) == 1 and built[0]["construction_s"] >= 0
    s = result.summary
    assert s["connections_opened"] == 6  # 3 edges, seen from both ends
    assert s["topology_incomplete_peers"] == [] and s["pieces_rejected"] == 0
    assert s["pieces_verified"] == len(pieces)


@pytest.mark.slow
def test_logs_can_be_switched_off(tmp_path: Path) -> None:
    config = load_config(None, [*SMALL, "output.exchange_logs=false"])
    result = Federation(config, output_dir=tmp_path, progress="none").run()
    assert not (tmp_path / TOPOLOGY_DIR).exists() and not (tmp_path / BITTORRENT_DIR).exists()
    assert "pieces_verified" not in result.summary
    assert not load_config(None, ["federate.client_num=33"]).output.logs_exchange(33)


@aio()
async def test_a_full_disk_stops_the_logs_not_the_swarm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = ExchangeLog(tmp_path, 5, origin=0.0)
    full = open("/dev/full", "w", buffering=1)  # noqa: SIM115, ASYNC230 (closed by the log)
    log._files[log._files.index(log._pieces)] = log._pieces = full  # every line: no space left
    event = PieceEvent(1.0, 2, 1, 0, 64, 3, (3,), 0.2, True)
    log(event)  # the swarm's callback must not raise
    log(event)
    log.flush()
    log.close()
    assert [r.getMessage() for r in caplog.records if "stopped" in r.getMessage()] == [
        "peer 5: exchange logs stopped: [Errno 28] No space left on device"
    ]


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_costs_only_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import SafetensorError

    from fltorrent.runtime import checkpoint

    def full(*_args: object, **_kwargs: object) -> None:
        # what safetensors raises when the disk is full (not an OSError)
        raise SafetensorError("Error while serializing: I/O error: No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", full)
    config = load_config(None, [*SMALL, "federate.mode=sim"])
    result = Federation(config, output_dir=tmp_path, progress="none").run()
    assert result.summary["finished_peers"] == [1, 2, 3] and result.failed_peers == []
    assert not list((tmp_path / "checkpoints").glob("*/*"))  # nothing half-written left
