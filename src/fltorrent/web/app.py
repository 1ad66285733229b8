"""The status web app: ``/status`` (JSON), ``/metrics`` (Prometheus), ``/events`` (server-sent
events) and ``/`` (the dashboard), over one :class:`~fltorrent.web.source.StatusSource`.

Everything is read from the source when asked: ``/metrics`` through a collector registered in
a registry of this app's own (never the process-wide one), ``/events`` by polling the source's
``version`` every ``poll`` seconds and pushing the snapshot when its JSON changed, with a
comment line every ``heartbeat`` seconds so that proxies and browsers keep the stream open.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from fltorrent.web.source import StatusSource

NO_STORE = {"Cache-Control": "no-store"}


def dumps(snapshot: dict[str, Any]) -> str:
    """A snapshot as compact JSON (snapshots hold no NaN: see ``telemetry.snapshot.finite``)."""
    return json.dumps(snapshot, separators=(",", ":"), allow_nan=False)


def dashboard_html() -> str:
    """The dashboard page (package data)."""
    return resources.files("fltorrent.web").joinpath("dashboard.html").read_text("utf-8")


class StatusCollector(Collector):
    """Prometheus metrics read from a status source at scrape time."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        s = self.source.snapshot()
        yield GaugeMetricFamily("fltorrent_round", "The slowest live peer's round.", s["round"])
        if s.get("total_rounds") is not None:
            yield GaugeMetricFamily(
                "fltorrent_total_rounds", "Rounds the federation runs.", s["total_rounds"]
            )
        yield GaugeMetricFamily(
            "fltorrent_completion", "Mean completion of the live peers' rounds.", s["completion"]
        )
        for key, text in (("accuracy_mean", "Mean"), ("accuracy_min", "Lowest")):
            if s.get(key) is not None:
                yield GaugeMetricFamily(
                    f"fltorrent_{key}", f"{text} test accuracy of the last round.", s[key]
                )
        phases = GaugeMetricFamily("fltorrent_peers", "Peers by phase.", labels=["phase"])
        counts: dict[str, int] = {}
        for p in s["peers"].values():
            counts[p["phase"]] = counts.get(p["phase"], 0) + 1
        for phase, count in sorted(counts.items()):
            phases.add_metric([phase], count)
        yield phases
        yield from self._peer_metrics(s["peers"].values())

    @staticmethod
    def _peer_metrics(peers: Any) -> Iterator[Metric]:
        rounds = GaugeMetricFamily("fltorrent_peer_round", "A peer's round.", labels=["peer"])
        completion = GaugeMetricFamily(
            "fltorrent_peer_completion",
            "Share of a peer's expected pieces that arrived.",
            labels=["peer"],
        )
        accuracy = GaugeMetricFamily(
            "fltorrent_peer_accuracy", "A peer's last test accuracy.", labels=["peer"]
        )
        up = CounterMetricFamily("fltorrent_peer_bytes_up", "Bytes a peer sent.", labels=["peer"])
        down = CounterMetricFamily(
            "fltorrent_peer_bytes_down", "Bytes a peer received.", labels=["peer"]
        )
        for p in peers:
            label = [str(p["peer"])]
            rounds.add_metric(label, p["round"])
            completion.add_metric(label, p["completion"])
            if p.get("accuracy") is not None:
                accuracy.add_metric(label, p["accuracy"])
            if p.get("bytes_up") is not None:
                up.add_metric(label, p["bytes_up"])
            if p.get("bytes_down") is not None:
                down.add_metric(label, p["bytes_down"])
        yield from (rounds, completion, accuracy, up, down)


def create_app(
    source: StatusSource,
    *,
    poll: float = 0.25,
    heartbeat: float = 5.0,
    closing: asyncio.Event | None = None,
) -> Starlette:
    """The app over ``source``. ``closing``, once set, ends every ``/events`` stream (a server
    stopping must not wait for browsers to hang up)."""
    registry = CollectorRegistry()
    registry.register(StatusCollector(source))
    page = dashboard_html()
    stop = closing or asyncio.Event()

    async def index(_request: Request) -> Response:
        return HTMLResponse(page, headers=NO_STORE)

    async def status(_request: Request) -> Response:
        return Response(dumps(source.snapshot()), media_type="application/json", headers=NO_STORE)

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def events(request: Request) -> Response:
        return StreamingResponse(
            _stream(request, source, poll=poll, heartbeat=heartbeat, stop=stop),
            media_type="text/event-stream",
            headers={**NO_STORE, "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/", index),
            Route("/status", status),
            Route("/metrics", metrics),
            Route("/events", events),
        ]
    )


async def _stream(
    request: Request, source: StatusSource, *, poll: float, heartbeat: float, stop: asyncio.Event
) -> AsyncIterator[str]:
    """``status`` events with the snapshot when it changed; a comment every ``heartbeat`` s;
    the last state when ``stop`` is set."""
    loop = asyncio.get_running_loop()
    yield "retry: 2000\n\n"
    version: int | None = None
    last = ""
    quiet_since = loop.time()
    while not stop.is_set():
        if source.version != version:
            version = source.version
            data = dumps(source.snapshot())
            if data != last:
                last = data
                quiet_since = loop.time()
                yield f"event: status\ndata: {data}\n\n"
        if loop.time() - quiet_since >= heartbeat:
            quiet_since = loop.time()
            yield ": heartbeat\n\n"
        if await request.is_disconnected():
            return
        try:
            async with asyncio.timeout(poll):
                await stop.wait()
        except TimeoutError:
            pass
    if source.version != version:  # the server is stopping: the last state goes out first
        data = dumps(source.snapshot())
        if data != last:
            yield f"event: status\ndata: {data}\n\n"
