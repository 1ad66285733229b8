"""A peer run (``run_node``) that fails before the tracker assigned it an id says so."""

from __future__ import annotations

import logging
import socket

import pytest

from fltorrent.net import TcpTransport
from fltorrent.runtime.node import NodeOutcome, run_node
from tests.aio import aio


@aio(30)
async def test_unreachable_tracker_fails_without_a_made_up_peer_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on once this socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level(logging.INFO, logger="fltorrent"):
        outcome = await run_node(
            transport=TcpTransport(),
            tracker=("127.0.0.1", port),
            host="127.0.0.1",
            peer_id=None,
            model_dir=None,
            connect_timeout=0.3,
        )
    assert not outcome.finished
    assert outcome.error is not None and f"127.0.0.1', {port}" in outcome.error
    assert outcome.label == "peer (no id assigned yet)"
    assert "peer (no id assigned yet) failed: cannot reach the tracker" in caplog.text
    assert "peer 0" not in caplog.text


def test_label_names_an_assigned_id() -> None:
    assert NodeOutcome(3, finished=True).label == "peer 3"
