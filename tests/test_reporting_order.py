"""Progress reaches the tracker in the order it was made, and the terminal keeps every round."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any, cast

import pytest

from fltorrent import tracker_client
from fltorrent.control import Done, Progress
from fltorrent.errors import BrokenResourceError
from fltorrent.net.base import Connection
from fltorrent.telemetry.progress import RoundProgress
from fltorrent.tracker_client import TrackerClient
from tests.aio import aio


class _Recording:
    """A connection that records what is sent; the first send is slow (a busy link)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, data: bytes) -> None:
        if not self.sent:
            await asyncio.sleep(0.05)
        self.sent.append(data)


@aio()
async def test_reports_leave_in_order_even_as_separate_tasks() -> None:
    conn = _Recording()
    client = TrackerClient(cast(Connection, conn))
    async with asyncio.TaskGroup() as tg:
        # The last round's report is fired and forgotten; Done is awaited right after.
        tg.create_task(client.progress(Progress(round=1, phase="training")))
        tg.create_task(client.progress(Progress(round=2, phase="evaluated", accuracy=0.5)))
        await client.progress(Done())
    kinds = [line.split(b'"type":"')[1].split(b'"')[0] for line in conn.sent]
    assert kinds == [b"progress", b"progress", b"done"]
    assert b'"round":2' in conn.sent[1]
    assert client.finished


@aio()
async def test_a_report_whose_task_never_ran_does_not_block_the_next(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tracker_client, "REPORT_ORDER_WAIT", 0.2)
    conn = _Recording()
    client = TrackerClient(cast(Connection, conn))
    lost: Any = client.progress(Progress(round=1, phase="training"))
    lost.close()  # its task was cancelled before it started
    async with asyncio.timeout(5):
        await client.progress(Done())  # after the bounded wait
    assert len(conn.sent) == 1


def test_rich_display_keeps_a_line_per_round() -> None:
    out = io.StringIO()
    with RoundProgress(peers=2, rounds=2, mode="rich", stream=out) as display:
        for r in (1, 2):
            display.peer_round(1, r, 0.5 + r / 10, 1.0)
            display.peer_round(2, r, 0.4 + r / 10, 1.0)
    text = out.getvalue()
    assert "round 1/2: accuracy mean 0.550 min 0.500" in text
    assert "round 2/2: accuracy mean 0.650 min 0.600" in text


class _Broken:
    """A connection whose other end is gone."""

    async def receive(self, max_bytes: int = 65536) -> bytes:
        raise BrokenResourceError("Broken pipe")


@pytest.mark.parametrize("finished", [False, True])
@aio()
async def test_a_lost_tracker_is_a_warning_only_before_the_peer_finished(
    caplog: pytest.LogCaptureFixture, finished: bool
) -> None:
    client = TrackerClient(cast(Connection, _Broken()))
    client.finished = finished
    with caplog.at_level(logging.DEBUG, logger="fltorrent"):
        await client.listen()
    lost = [r for r in caplog.records if "tracker connection lost" in r.getMessage()]
    assert len(lost) == 1 and client.lost.is_set()
    assert lost[0].levelno == (logging.DEBUG if finished else logging.WARNING)
