"""fltorrent report: figures and one self-contained page from any run directory (finished,
interrupted, one process per peer), and the chunk-availability heatmap's numbers."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from fltorrent.cli import app
from fltorrent.config import load_config
from fltorrent.errors import FltorrentError
from fltorrent.runtime.federation import Federation
from fltorrent.telemetry.report import availability_grid, write_report
from fltorrent.telemetry.run_dir import read_run

PNG = b"\x89PNG\r\n\x1a\n"


def _record(round_: int, peer: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "round": round_,
        "peer": peer,
        "accuracy": 0.1 * round_ + 0.01 * peer,
        "loss": 2.0 / round_,
        "train_loss": 1.5 / round_,
        "bytes_up": 1000,
        "bytes_down": 2000,
        "duplicate_bytes": 10,
        "control_bytes": 50,
        "completion": 1.0,
        "deadline_hit": False,
        "train_s": 0.5,
        "exchange_s": 0.2,
        "aggregate_s": 0.01,
        "eval_s": 0.02,
        "wall_s": 1.0 * round_,
    }
    base.update(fields)
    return base


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def _figures(index: Path) -> set[str]:
    return set(re.findall(r'<figure id="(\w+)">', index.read_text()))


def test_an_interrupted_run_in_processes_layout(tmp_path: Path) -> None:
    # No summary.json, no merged metrics.jsonl: only each peer process's own file, the last
    # line of one cut short by the stop.
    for peer in (1, 2):
        _write(
            tmp_path / "peers" / f"peer-{peer}" / "metrics.jsonl",
            [_record(r, peer) for r in (1, 2, 3)],
        )
    with (tmp_path / "peers" / "peer-2" / "metrics.jsonl").open("a") as f:
        f.write('{"round": 4, "peer": 2, "accur')
    run = read_run(tmp_path)
    assert run.summary is None and run.peers == [1, 2] and run.rounds == [1, 2, 3]
    written = write_report(tmp_path)
    index = tmp_path / "report" / "index.html"
    assert written[-1] == index
    assert all(p.read_bytes().startswith(PNG) for p in written[:-1])
    page = index.read_text()
    assert "interrupted (no summary.json)" in page
    assert "mean 0.3150, min 0.3100" in page  # round 3: 0.31 and 0.32
    assert _figures(index) == {
        "accuracy",
        "loss",
        "bytes",
        "completion",
        "timing",
        "time_to_accuracy",
    }
    assert "Chunk availability: no exchange logs" in page
    assert "Devices: no device profiles in this run" in page
    # Self-contained: every figure is embedded, and is the PNG written beside it.
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in written[:-1]}


def test_robust_and_device_figures_when_the_run_has_them(tmp_path: Path) -> None:
    records = [
        _record(
            r,
            p,
            flagged=[3] if r > 1 else [],
            excluded=[3] if r > 1 else [],
            battery_level=1.0 - 0.1 * r,
            temperature_c=30.0 + r,
            trained=p != 2 or r == 1,
            sim_time_s=10.0 * r,
        )
        for r in (1, 2)
        for p in (1, 2, 3)
    ]
    _write(tmp_path / "metrics.jsonl", records)
    (tmp_path / "summary.json").write_text(
        json.dumps({"rounds": 2, "wall_time_s": 3.0, "sim_time_s": 20.0, "failed_peers": [3]})
    )
    write_report(tmp_path, tmp_path / "elsewhere")
    index = tmp_path / "elsewhere" / "index.html"
    assert {"robust", "devices"} <= _figures(index)
    page = index.read_text()
    assert "finished" in page and "20.0 s" in page and "[3]" in page


def test_availability_grid_counts_holders_per_piece() -> None:
    # Round 1: 2 peers x 1 other author, 2 pieces; piece 0 arrives at once on both, piece 1
    # only at the end on one of them. Round 2 the same, shifted in time.
    pieces = []
    for r, t0 in ((1, 100.0), (2, 200.0)):
        for peer, author in ((1, 2), (2, 1)):
            pieces.append(
                {"t": t0, "round": r, "peer": peer, "author": author, "piece": 0, "verified": True}
            )
        pieces.append(
            {"t": t0 + 1.0, "round": r, "peer": 1, "author": 2, "piece": 1, "verified": True}
        )
    pieces.append({"t": 150.0, "round": 1, "peer": 2, "author": 1, "piece": 1, "verified": False})
    grid, span, rounds = availability_grid(pieces, bins=4)
    assert rounds == 2 and span == pytest.approx(1.0)
    np.testing.assert_allclose(grid[0], [1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(grid[1], [0.0, 0.0, 0.0, 0.5])  # the rejected one is not held
    assert availability_grid([], bins=4)[2] == 0


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FltorrentError, match="no such run directory"):
        write_report(tmp_path / "missing")
    with pytest.raises(FltorrentError, match="no metrics"):
        write_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("error: ")


@pytest.mark.slow
def test_report_of_a_real_run(tmp_path: Path) -> None:
    config = load_config(
        None, ["federate.client_num=3", "federate.total_round_num=2", "data.num_samples=600"]
    )
    Federation(config, output_dir=tmp_path, progress="none").run()
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote 7 figures" in result.output
    assert "availability" in _figures(tmp_path / "report" / "index.html")


def test_files_anyone_may_have_edited(tmp_path: Path) -> None:
    _write(tmp_path / "metrics.jsonl", [_record(1, 1), _record(2, 1)])
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"round": "x", "peer": 1}\n{"round": 3, "peer": 1, "accuracy": "high"}\n')
    (tmp_path / "summary.json").write_text("[1]")
    logs = tmp_path / "bittorrent_logs"
    logs.mkdir()
    good = {
        "t": 1.0,
        "peer": 1,
        "author": 2,
        "round": 1,
        "piece": 0,
        "verified": True,
        "duration_s": 0.1,
    }
    bad = [{**good, "piece": 10**10}, {**good, "piece": -3}, {**good, "t": "a"}, [1, 2]]
    (logs / "peer-1.jsonl").write_text("".join(json.dumps(x) + "\n" for x in [good, *bad]))
    write_report(tmp_path)  # no traceback, no 5 TiB heatmap
    page = (tmp_path / "report" / "index.html").read_text()
    assert "interrupted (no summary.json)" in page and "availability" in _figures(
        tmp_path / "report" / "index.html"
    )
    (tmp_path / "summary.json").write_text(
        json.dumps({"rounds": 5, "interrupted": "CancelledError()", "finished_peers": []})
    )
    write_report(tmp_path)
    assert "interrupted (CancelledError())" in (tmp_path / "report" / "index.html").read_text()
