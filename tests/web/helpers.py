"""Shared by the web tests: round records and plain HTTP against a real server."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

from fltorrent.telemetry.events import RoundMetrics


def metrics(
    round_: int,
    peer: int,
    *,
    accuracy: float = 0.5,
    completion: float = 1.0,
    up: int = 100,
    down: int = 200,
) -> RoundMetrics:
    """A round record with the fields the status cares about (the rest zero)."""
    zero: dict[str, Any] = dict.fromkeys(
        (
            "loss",
            "local_accuracy",
            "train_s",
            "exchange_s",
            "aggregate_s",
            "eval_s",
            "wall_s",
        ),
        0.0,
    )
    counts: dict[str, Any] = dict.fromkeys(
        (
            "num_samples",
            "payload_bytes_up",
            "payload_bytes_down",
            "duplicate_bytes",
            "control_bytes",
            "corrupt_pieces",
            "pieces_expected",
            "pieces_received",
            "authors_expected",
            "authors_aggregated",
            "partial_chunks",
        ),
        0,
    )
    return RoundMetrics(
        round=round_,
        peer=peer,
        accuracy=accuracy,
        completion=completion,
        bytes_up=up,
        bytes_down=down,
        train_loss=None,
        deadline_hit=False,
        **zero,
        **counts,
    )


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """(status, content type, body) of ``GET url`` (blocking: call it in a thread)."""
    with _OPENER.open(url, timeout=timeout) as response:
        body = response.read().decode("utf-8")
        return response.status, response.headers.get("Content-Type", ""), body


async def aget(url: str, timeout: float = 5.0) -> tuple[int, str, str]:
    """:func:`get` without blocking the event loop (the server runs in it)."""
    return await asyncio.to_thread(get, url, timeout)


async def get_json(url: str) -> dict[str, Any]:
    """The JSON body of ``GET url``."""
    _, _, body = await aget(url)
    data = json.loads(body)
    assert isinstance(data, dict)
    return data
