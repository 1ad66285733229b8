"""What reaches the status layer from outside is checked: members' progress reports, status
files and answers of status endpoints, and slow endpoints meet a deadline."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from fltorrent.control import Progress
from fltorrent.errors import ConfigError, DeadlineExceeded, FltorrentError
from fltorrent.runtime.preflight import check_listen
from fltorrent.tracker import MemberState, Tracker
from fltorrent.web.client import fetch_status, read_status
from fltorrent.web.source import TrackerSource


def test_progress_reports_are_bounded() -> None:
    for bad in (
        {"round": 10**400, "phase": "training"},
        {"round": -1, "phase": "training"},
        {"round": 1, "phase": "x" * 100},
        {"round": 1, "phase": "evaluated", "accuracy": float("nan")},
        {"round": 1, "phase": "evaluated", "completion": 3.0},
    ):
        with pytest.raises(ValidationError):
            Progress.model_validate(bad)


def test_the_history_keeps_only_rounds_of_the_run() -> None:
    tracker = Tracker(federation="f", client_num=2, config={"federate": {"total_round_num": 3}})
    source = TrackerSource(tracker)
    member = MemberState(peer_id=1, address=("h", 1), channel=None)  # type: ignore[arg-type]
    tracker.members[1] = member
    for r in (1, 2, 3, 4, 1000, 0):
        member.round, member.phase, member.accuracy = r, "evaluated", 0.5
        source.observe(member)
    rows = source.snapshot()["history"]
    assert [row["round"] for row in rows] == [1, 2, 3]


@pytest.mark.parametrize(
    "content",
    [
        {"peers": []},
        {"peers": {"1": {"peer": 1}}},
        {"peers": {"1": {"peer": 1, "phase": "x", "round": "late"}}},
        [1, 2],
    ],
)
def test_a_malformed_status_file_falls_back_to_the_metrics(tmp_path: Path, content: object) -> None:
    (tmp_path / "status.json").write_text(json.dumps(content))
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"round": 1, "peer": 2, "accuracy": 0.5, "completion": 1.0})
        + "\n"
        + json.dumps({"round": 1, "peer": 3})
        + "\n"  # no accuracy: not ours, left out
    )
    status = read_status(tmp_path)
    assert status["source"] == "run_dir" and list(status["peers"]) == [2]


class _Server:
    """A TCP server on loopback that answers every connection with ``reply(conn)``."""

    def __init__(self, reply: object) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                self.reply(conn)  # type: ignore[operator]


def _http(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


def test_an_endpoint_that_answers_badly_or_slowly() -> None:
    shape = _Server(lambda c: c.sendall(_http(json.dumps({"peers": []}).encode())))
    with pytest.raises(FltorrentError, match="the answer is not a status"):
        fetch_status("127.0.0.1", shape.port, timeout=5)

    def dribble(conn: socket.socket) -> None:  # a byte a second, forever
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
        conn.sendall(head)
        for _ in range(30):
            try:
                conn.sendall(b" ")
            except OSError:
                return
            time.sleep(0.5)

    slow = _Server(dribble)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="no whole answer within 1s"):
        fetch_status("127.0.0.1", slow.port, timeout=1)
    assert time.monotonic() - start < 3

    cut = _Server(lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{"))
    with pytest.raises(FltorrentError, match=r"not JSON|a broken answer"):  # cut short
        fetch_status("127.0.0.1", cut.port, timeout=5)
    for server in (shape, slow, cut):
        server.sock.close()


def test_an_empty_host_is_refused() -> None:
    with pytest.raises(ConfigError, match="--http-host: an empty host"):
        check_listen("", 0, host_key="--http-host", port_key="--http-port")
