"""The status endpoints on a real uvicorn server (127.0.0.1, port 0) with real HTTP requests."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fltorrent.errors import ConfigError
from fltorrent.runtime.status import StatusBoard
from fltorrent.web.server import serve_status
from tests.aio import aio
from tests.web.helpers import aget, get_json, metrics


def _board() -> StatusBoard:
    board = StatusBoard(2, 5, edges=lambda: [(1, 2)])
    board.record(metrics(1, 1, accuracy=0.5, up=100, down=200))
    board.record(metrics(1, 2, accuracy=0.7, up=300, down=400))
    board.update(2, phase="training", round_=2, completion=0.0, accuracy=None)
    return board


@aio(timeout=30)
async def test_status_and_dashboard_page() -> None:
    board = _board()
    async with serve_status(board, port=0) as server:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"
        status = await get_json(server.url + "status")
        assert status["round"] == 1 and status["total_rounds"] == 5
        assert status["peers"]["2"]["phase"] == "training"
        assert status["peers"]["1"]["bytes_down"] == 200
        assert status["history"][0]["accuracy_min"] == 0.5
        assert status["edges"] == [[1, 2]]
        code, kind, page = await aget(server.url)
        assert code == 200 and kind.startswith("text/html")
        for marker in (
            'id="round"',
            'id="peers"',
            'id="topology"',
            "EventSource",
            'fetch("status"',
        ):
            assert marker in page
        assert "http://" not in page.replace('"http://www.w3.org/2000/svg"', "")  # offline


@aio(timeout=30)
async def test_metrics_are_prometheus_text_read_at_scrape_time() -> None:
    board = _board()
    async with serve_status(board, port=0) as server:
        code, kind, text = await aget(server.url + "metrics")
        assert code == 200 and kind.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["fltorrent_round"].samples[0].value == 1
        accuracy = {s.labels["peer"]: s.value for s in families["fltorrent_peer_accuracy"].samples}
        assert accuracy == {"1": 0.5, "2": 0.7}
        down = families["fltorrent_peer_bytes_down"]
        assert down.type == "counter"
        assert {s.labels["peer"]: s.value for s in down.samples if s.name.endswith("_total")} == {
            "1": 200.0,
            "2": 400.0,
        }
        phases = {s.labels["phase"]: s.value for s in families["fltorrent_peers"].samples}
        assert phases == {"evaluated": 1, "training": 1}
        board.record(metrics(2, 1, accuracy=0.9))  # read live, not at start
        _, _, text = await aget(server.url + "metrics")
        families = {f.name: f for f in text_string_to_metric_families(text)}
        accuracy = {s.labels["peer"]: s.value for s in families["fltorrent_peer_accuracy"].samples}
        assert accuracy["1"] == 0.9


async def _read_event(reader: asyncio.StreamReader) -> tuple[str, str]:
    """The next SSE block: (event name or ':' for a comment, data)."""
    name, data = "", ""
    while True:
        line = (await reader.readline()).decode()
        if line in ("\r\n", "\n", ""):
            if name or data:
                return name, data
            if line == "":
                raise EOFError
            continue
        if line.startswith(":"):
            name = ":"
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


async def _events(port: int) -> tuple[asyncio.StreamReader, asyncio.Task[None]]:
    """An ``/events`` stream's body, de-chunked, as a reader (fed by the task)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0]
    assert b"text/event-stream" in head
    out = asyncio.StreamReader()

    async def pump() -> None:
        try:
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    break
                out.feed_data(await reader.readexactly(size))
                await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            out.feed_eof()
            writer.close()

    return out, asyncio.create_task(pump())


@aio(timeout=30)
async def test_events_push_changes_and_heartbeats_and_end_when_the_server_stops() -> None:
    board = _board()
    async with serve_status(board, port=0, poll=0.05, heartbeat=0.3) as server:
        events, pump = await _events(server.port)
        name, data = await _read_event(events)
        assert name == "status" and json.loads(data)["round"] == 1
        board.record(metrics(2, 1))
        board.record(metrics(2, 2))
        async with asyncio.timeout(5):
            while True:
                name, data = await _read_event(events)
                if name == "status" and json.loads(data)["round"] == 2:
                    break
        async with asyncio.timeout(5):  # nothing changes: a heartbeat comment comes
            assert (await _read_event(events))[0] == ":"
        board.mark(1, "done")
        board.mark(2, "done")
        stopping = time.monotonic()
    # The last state went out before the stream closed, and the open stream did not hold the
    # server up.
    assert time.monotonic() - stopping < 2.5
    last = None
    async with asyncio.timeout(5):
        try:
            while True:
                name, data = await _read_event(events)
                if name == "status":
                    last = json.loads(data)
        except EOFError:
            pass
    assert last is not None and last["state"] == "finished"
    await pump


@aio(timeout=30)
async def test_a_port_in_use_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use"):
            async with serve_status(StatusBoard(1, 1), port=port):
                pass
    with pytest.raises(ConfigError, match="cannot resolve"):
        async with serve_status(StatusBoard(1, 1), host="no-such-host.invalid", port=0):
            pass
