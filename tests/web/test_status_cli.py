"""``fltorrent status`` on run directories and tracker endpoints; the dashboard of a real run;
``--dashboard`` and ``--http-port`` refused before anything starts; the tracker's and a peer's
own endpoints from the real commands."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import urllib.error
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fltorrent.cli import app
from fltorrent.control import Progress
from fltorrent.net import MemoryNetwork
from fltorrent.runtime.federation import Federation
from fltorrent.security import Authority, load_or_create_key
from fltorrent.tracker import TopologySpec, Tracker
from fltorrent.tracker_client import TrackerClient
from fltorrent.web.server import serve_status
from fltorrent.web.source import TrackerSource
from tests.web.helpers import get_json

runner = CliRunner()

SMALL = {
    "federate": {"client_num": 3, "total_round_num": 3},
    "data": {"num_samples": 600},
    "bittorrent": {"seed_grace": 1},
    "output": {"save_model": False},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    """A small in-process run with the dashboard on, and its /status as seen during the run."""
    out = tmp_path_factory.mktemp("run") / "run"
    urls: list[str] = []
    seen: list[dict[str, Any]] = []
    files: list[str] = []  # dashboard.url while the run goes on

    async def main() -> None:
        fed = Federation(
            SMALL, output_dir=out, progress="none", dashboard=0, on_dashboard=urls.append
        )
        task = asyncio.create_task(fed.arun())
        while not task.done():
            if urls:
                if not files and (out / "dashboard.url").is_file():
                    files.append((out / "dashboard.url").read_text().strip())
                try:
                    seen.append(await get_json(urls[0] + "status"))
                except urllib.error.URLError:  # the run is ending: its server stopped
                    await task
                    break
            await asyncio.sleep(0.05)
        task.result()

    asyncio.run(main())
    assert urls and urls[0].startswith("http://127.0.0.1:") and urls[0].endswith("/")
    assert files == urls[:1]  # written while the server was up...
    assert not (out / "dashboard.url").exists()  # ... and gone with it
    return out, seen


def test_a_run_serves_its_status_while_it_runs(
    finished_run: tuple[Path, list[dict[str, Any]]],
) -> None:
    out, seen = finished_run
    assert seen, "the dashboard answered no request during the run"
    assert all(s["source"] == "federation" and len(s["peers"]) == 3 for s in seen)
    rounds = [s["round"] for s in seen]
    assert rounds == sorted(rounds)
    assert seen[0]["edges"] == [[1, 2], [1, 3], [2, 3]]
    final = json.loads((out / "status.json").read_text())
    assert final["state"] == "finished" and final["round"] == 3
    assert all(p["phase"] == "done" for p in final["peers"].values())
    assert [r["round"] for r in final["history"]] == [1, 2, 3]
    assert all(r["bytes_down"] > 0 for r in final["history"])


def test_status_of_a_run_directory(finished_run: tuple[Path, list[dict[str, Any]]]) -> None:
    out, _ = finished_run
    result = runner.invoke(app, ["status", str(out)], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    assert f"{out}: finished, round 3/3" in result.output
    assert result.output.count(" done ") == 3
    as_json = runner.invoke(app, ["status", str(out), "--json"])
    assert as_json.exit_code == 0
    status = json.loads(as_json.output)
    on_disk = json.loads((out / "status.json").read_text())
    assert status == on_disk


def test_status_without_status_json_reads_metrics_and_summary(
    finished_run: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    out, _ = finished_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    live = json.loads((old / "status.json").read_text())
    (old / "status.json").unlink()
    result = runner.invoke(app, ["status", str(old), "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["source"] == "run_dir" and status["state"] == "finished"
    assert status["round"] == 3 and status["total_rounds"] == 3
    assert status["history"] == live["history"]
    for peer, p in status["peers"].items():
        assert p["phase"] == "done"
        assert p["bytes_up"] == live["peers"][peer]["bytes_up"]
    (old / "summary.json").unlink()  # an interrupted run: records only
    status = json.loads(runner.invoke(app, ["status", str(old), "--json"]).output)
    assert status["state"] == "running"


def test_status_errors_are_one_line_with_exit_codes(tmp_path: Path) -> None:
    def refused(args: list[str], code: int, match: str) -> None:
        result = runner.invoke(app, ["status", *args])
        assert result.exit_code == code, result.output
        lines = [x for x in result.output.splitlines() if x.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], lines

    refused([str(tmp_path / "nothing")], 2, "no such run directory")
    refused([str(tmp_path)], 1, "no metrics")
    refused([], 2, "give a run directory or --tracker")
    refused([str(tmp_path), "--tracker", "h:1"], 2, "one of the two")
    refused(["--tracker", "localhost"], 2, "--tracker: must be HOST:PORT")
    refused(["--tracker", "localhost:99999"], 2, "--tracker: must be HOST:PORT")
    port = _free_port()
    refused(["--tracker", f"127.0.0.1:{port}"], 1, f"cannot reach http://127.0.0.1:{port}/status")


def test_status_of_a_tracker_over_http() -> None:
    async def main() -> None:
        async with MemoryNetwork() as net:
            training = asyncio.Event()
            tracker = Tracker(
                federation="f",
                client_num=2,
                config={"federate": {"total_round_num": 4}},
                topology=TopologySpec(kind="ring"),
                on_progress=lambda m: training.set() if m.phase == "training" else None,
            )
            source = TrackerSource(tracker)
            address = await tracker.start(net, "tracker", 0)
            clients = [await TrackerClient.connect(net, address, timeout=1) for _ in range(2)]
            await asyncio.gather(
                *(
                    c.register(federation="f", peer_id=i + 1, host="h", port=1000 + i, timeout=2)
                    for i, c in enumerate(clients)
                )
            )
            record = {"bytes_up": 1000, "bytes_down": 2000}
            await clients[0].progress(
                Progress(round=1, phase="evaluated", completion=1.0, accuracy=0.5, record=record)
            )
            await clients[1].progress(Progress(round=2, phase="training", completion=0.5))
            async with serve_status(source, port=0) as server:
                async with asyncio.timeout(5):
                    await training.wait()  # the reports arrived (in order)
                address_arg = f"127.0.0.1:{server.port}"
                result = await asyncio.to_thread(
                    runner.invoke, app, ["status", "--tracker", address_arg, "--json"]
                )
                assert result.exit_code == 0, result.output
                status = json.loads(result.output)
                assert status["source"] == "tracker" and status["total_rounds"] == 4
                assert status["peers"]["1"]["phase"] == "evaluated"
                assert status["peers"]["1"]["bytes_down"] == 2000
                assert status["peers"]["2"]["phase"] == "training"
                assert status["round"] == 1 and status["edges"] == [[1, 2]]
                assert status["history"][0]["accuracy_mean"] == 0.5
                table = await asyncio.to_thread(
                    runner.invoke, app, ["status", "--tracker", address_arg]
                )
                assert table.exit_code == 0 and "training" in table.output
                await clients[1].aclose()  # a member leaves
                for _ in range(500):
                    if not tracker.members[2].alive:
                        break
                    await asyncio.sleep(0.01)
                status = await get_json(server.url + "status")
                assert status["peers"]["2"]["phase"] == "failed"
            await clients[0].aclose()
            await tracker.aclose()

    asyncio.run(main())


def test_dashboard_and_http_ports_in_use_are_refused_before_anything(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        out = tmp_path / "out"
        result = runner.invoke(
            app,
            ["run", "--peers", "2", "-o", str(out), "--dashboard", "--dashboard-port", port],
        )
        assert result.exit_code == 2, result.output
        assert f"dashboard port: port {port} on 127.0.0.1 is in use" in result.output
        assert not out.exists()
        sim = ["run", "--mode", "sim", "--peers", "2", "-o", str(out), "--dashboard"]
        result = runner.invoke(app, sim)
        assert result.exit_code == 2 and "virtual time" in result.output
        assert not out.exists()
        fed = tmp_path / "fed"
        Authority.new("t").save(fed)
        args = ["tracker", "--federation", str(fed), "--port", "0", "-o", str(out)]
        result = runner.invoke(app, [*args, "--http-port", port])
        assert result.exit_code == 2 and f"--http-port: port {port}" in result.output
        assert not out.exists()


def _wait_for(process: subprocess.Popen[str], *markers: str) -> list[str]:
    """The word after each marker in ``process``'s stderr, read until all were seen."""
    assert process.stderr is not None
    found: dict[str, str] = {}
    for line in process.stderr:
        for m in markers:
            if m in line:
                found[m] = line.split(m)[1].split()[0]
        if len(found) == len(markers):
            return [found[m] for m in markers]
    raise AssertionError(f"exited before saying {markers}: {found}")


def test_tracker_and_peer_commands_serve_their_status(tmp_path: Path) -> None:
    fed = tmp_path / "fed"
    authority = Authority.new("t")
    authority.save(fed)
    key = load_or_create_key(fed / "peer1.key")
    (fed / "peer1.token").write_bytes(authority.issue(key.public_key(), peer_id=1))
    command = [sys.executable, "-m", "fltorrent"]
    tracker = subprocess.Popen(
        [
            *command,
            *("tracker", "--federation", str(fed), "--port", "0", "--peers", "2"),
            *("-o", str(tmp_path / "t"), "--http-port", "0", "--log-level", "warning"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    peer = None
    try:
        tracker_url, address = _wait_for(tracker, "tracker status at ", "listening on ")
        http = tracker_url.removeprefix("http://").rstrip("/")
        empty = json.loads(runner.invoke(app, ["status", "--tracker", http, "--json"]).output)
        assert empty["source"] == "tracker" and empty["peers"] == {}
        assert runner.invoke(app, ["status", "--tracker", http]).exit_code == 0
        # A peer with its own endpoint, waiting for the second member (so its state holds).
        peer = subprocess.Popen(
            [
                *command,
                *("peer", "--tracker", address, "--id", "1", "--federation", str(fed)),
                *("--key", str(fed / "peer1.key"), "--token", str(fed / "peer1.token")),
                *("-o", str(tmp_path / "p"), "--http-port", "0"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        (peer_url,) = _wait_for(peer, "peer status at ")
        mine = asyncio.run(get_json(peer_url + "status"))
        assert mine["source"] == "peer"
        for _ in range(100):  # the tracker hears the peer register
            status = asyncio.run(get_json(tracker_url + "status"))
            if status["peers"]:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert status["peers"]["1"]["phase"] == "registered"
    finally:
        for p in (peer, tracker):
            if p is not None:
                p.kill()
                p.wait(10)
                assert p.stderr is not None
                p.stderr.close()
