"""Link emulation: per-peer upload and download bandwidth, latency, jitter and loss.

Theory of operation. A :class:`ShapedTransport` wraps any transport (asyncio TCP or the
in-memory network) and gives every connection it makes or accepts the shape of *one peer's
access link*, described by a :class:`LinkProfile`:

* **upload**: bytes sent on any of the peer's connections draw from one token bucket at the
  upload rate, in segments of about ``SEGMENT_SECONDS`` of that rate; waiters are served in
  FIFO order, so concurrent connections share the uplink fairly, as TCP flows roughly do, and
  a segment of one packet or less (a request, a have) goes ahead of the bulk, as fq_codel
  serves sparse flows first;
* **latency and jitter**: a segment that has left the uplink reaches the other end ``latency``
  (plus a uniform jitter of up to ``jitter``) later, never overtaking the previous segment of
  the same connection (TCP keeps order); a per-connection task delivers it then;
* **loss** shows up as it does on TCP, as delay rather than lost data: each lost packet
  (``PACKET_BYTES``) of a segment is sent again (its bytes draw from the uplink a second time)
  and the segment arrives one round trip (2 x latency) later, as after a fast retransmit;
* **download**: bytes read from any of the peer's connections draw from a second bucket at the
  download rate before the reader gets them, so a peer cannot take in more than its downlink.

Both ends of a link are shaped when both peers use a shaped transport: the sender's uplink
and the receiver's downlink, which is how access links of home and mobile users behave (the
core of the network is not the bottleneck). Every wait goes through the event loop's clock,
so the same shaper runs in real time on TCP and in virtual time (:mod:`fltorrent.net.clock`)
on the in-memory network; the randomness (jitter, loss) comes from a seeded generator.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fltorrent.errors import BrokenResourceError, ClosedResourceError, TransportError
from fltorrent.net.base import Address, Connection, ConnectionHandler, Listener, Transport

SEGMENT_SECONDS = 0.02
MIN_SEGMENT = 1460
MAX_SEGMENT = 256 * 1024
UNSHAPED_SEGMENT = 256 * 1024
PACKET_BYTES = 1460
MIN_WINDOW = 256 * 1024
TIME_SLACK = 1e-9
CLOSE_TIMEOUT = 5.0  # seconds a closing connection may take to deliver what it already sent


@dataclass(frozen=True)
class LinkProfile:
    """One peer's access link. Rates in bits per second (``None``: unlimited)."""

    up_bps: float | None = None
    down_bps: float | None = None
    latency_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        for name in ("up_bps", "down_bps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be positive or None, got {value}")
        if self.latency_s < 0 or self.jitter_s < 0:
            raise ValueError("latency_s and jitter_s must be >= 0")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss must be in [0, 1), got {self.loss}")

    @classmethod
    def from_mbit(
        cls,
        up: float | None,
        down: float | None,
        *,
        latency_ms: float = 0.0,
        jitter_ms: float = 0.0,
        loss: float = 0.0,
    ) -> LinkProfile:
        """Rates in Mbit/s and times in milliseconds, as device profiles state them."""
        return cls(
            up_bps=None if up is None else up * 1e6,
            down_bps=None if down is None else down * 1e6,
            latency_s=latency_ms / 1000.0,
            jitter_s=jitter_ms / 1000.0,
            loss=loss,
        )


class TokenBucket:
    """A rate limiter in bytes per second; ``acquire`` waits in FIFO order.

    Tokens accrue at ``rate`` up to ``burst``; an acquisition may overdraw the bucket, and the
    next waiter then waits until the debt is repaid. Time is the event loop's, so the bucket is
    exact in virtual time and does not drift in real time (sleeping late is made up by the
    tokens that accrued meanwhile).
    """

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._stamp: float | None = None
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, n: int, *, sparse: bool = False) -> None:
        """Take ``n`` tokens, waiting until the bucket is out of debt.

        ``sparse`` takes them at once, ahead of the waiting bulk (whose wait grows by as
        much): what fq_codel, Linux's default queue discipline, does for the packets of
        flows that send little (requests, acks), so that they do not queue behind bulk data.
        """
        if sparse:
            self._refill()
            self._tokens -= n
            return
        async with self._lock:
            self._refill()
            self._tokens -= n
            if self._tokens < 0:
                await asyncio.sleep(-self._tokens / self.rate)


class PeerLink:
    """The shared state of one peer's access link: its buckets and its random generator."""

    def __init__(self, profile: LinkProfile, *, seed: int = 0) -> None:
        self.profile = profile
        self.rng = random.Random(seed)
        self.up = self._bucket(profile.up_bps)
        self.down = self._bucket(profile.down_bps)
        self.up_segment = self._segment(profile.up_bps)
        self.down_segment = self._segment(profile.down_bps)
        self.retransmitted_bytes = 0

    @staticmethod
    def _segment(bps: float | None) -> int:
        if bps is None:
            return UNSHAPED_SEGMENT
        return max(MIN_SEGMENT, min(MAX_SEGMENT, int(bps / 8 * SEGMENT_SECONDS)))

    def _bucket(self, bps: float | None) -> TokenBucket | None:
        if bps is None:
            return None
        rate = bps / 8
        return TokenBucket(rate, burst=self._segment(bps))

    def transit_delay(self, size: int) -> tuple[float, int]:
        """(seconds after leaving the uplink, bytes to send again) for one segment."""
        p = self.profile
        delay = p.latency_s
        if p.jitter_s:
            delay += self.rng.uniform(0.0, p.jitter_s)
        resent = 0
        if p.loss:
            rng = self.rng
            resent = sum(
                min(PACKET_BYTES, size - off)
                for off in range(0, size, PACKET_BYTES)
                if rng.random() < p.loss
            )
            if resent:
                delay += 2 * p.latency_s
        return delay, resent

    def window(self) -> int:
        """Bytes a connection may have in flight: twice the bandwidth-delay product."""
        p = self.profile
        if p.up_bps is None:
            return max(MIN_WINDOW, 4 * UNSHAPED_SEGMENT)
        rtt = 2 * p.latency_s + p.jitter_s
        return max(MIN_WINDOW, int(2 * p.up_bps / 8 * rtt) + 4 * self.up_segment)


class ShapedConnection:
    """A connection whose traffic goes through one peer's :class:`PeerLink`."""

    def __init__(self, inner: Connection, link: PeerLink, tg: asyncio.TaskGroup) -> None:
        self._inner = inner
        self._link = link
        self._queue: deque[tuple[float, bytes]] = deque()
        self._queued = 0
        self._last_arrival = 0.0
        self._changed = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
        self._error: BaseException | None = None
        self._pump = tg.create_task(self._deliver())
        self.on_close: Callable[[ShapedConnection], None] | None = None

    @property
    def remote_address(self) -> Address:
        return self._inner.remote_address

    @property
    def peer_certificate(self) -> bytes | None:
        return self._inner.peer_certificate

    async def send(self, data: bytes) -> None:
        await self.send_all((data,))

    async def send_all(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        link = self._link
        seg = link.up_segment
        window = link.window()
        loop = asyncio.get_running_loop()
        # A write of one packet (a request, a have) skips the bulk queue; bulk data never does,
        # even where a slow link cuts it into one-packet segments.
        sparse = sum(len(b) for b in buffers) <= PACKET_BYTES
        for buf in buffers:
            view = memoryview(buf).cast("B")
            for off in range(0, len(view), seg):
                self._check()
                piece = bytes(view[off : off + seg])
                while self._queued >= window:
                    self._drained.clear()
                    await self._drained.wait()
                    self._check()
                if link.up is not None:
                    await link.up.acquire(len(piece), sparse=sparse)
                delay, resent = link.transit_delay(len(piece))
                if resent:
                    link.retransmitted_bytes += resent
                    if link.up is not None:
                        await link.up.acquire(resent)
                self._check()
                arrival = max(loop.time() + delay, self._last_arrival)
                self._last_arrival = arrival
                self._queue.append((arrival, piece))
                self._queued += len(piece)
                self._changed.set()

    def _check(self) -> None:
        if self._closed:
            raise ClosedResourceError("connection closed")
        if self._error is not None:
            raise BrokenResourceError(f"link broke: {self._error}") from self._error

    async def _deliver(self) -> None:
        """Hand each segment to the inner connection when it has crossed the link."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                while not self._queue:
                    if self._closed:
                        return
                    self._changed.clear()
                    await self._changed.wait()
                arrival = self._queue[0][0]
                now = loop.time()
                if arrival > now:
                    await asyncio.sleep(arrival - now)
                    now = loop.time()
                now += TIME_SLACK  # a sleep may end an ulp before its target
                due: list[bytes] = []
                while self._queue and self._queue[0][0] <= now:
                    due.append(self._queue.popleft()[1])
                await self._inner.send_all(due)
                self._queued -= sum(len(d) for d in due)
                self._drained.set()
        except TransportError as exc:
            self._error = exc
            self._queue.clear()
            self._queued = 0
            self._drained.set()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        link = self._link
        data = await self._inner.receive(min(max_bytes, link.down_segment))
        if data and link.down is not None:
            await link.down.acquire(len(data))
        return data

    async def aclose(self) -> None:
        """Close after the bytes already sent have crossed the link (as TCP's close does).

        Delivery gets at most ``CLOSE_TIMEOUT`` (loop time) and is then abandoned, so a
        receiver that stopped reading cannot hold the close up.
        """
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close(self)
        self._changed.set()
        self._drained.set()
        if not self._pump.done():
            await asyncio.wait({self._pump}, timeout=CLOSE_TIMEOUT)
        if not self._pump.done():
            self._pump.cancel()
            await asyncio.wait({self._pump})
        await self._inner.aclose()


class ShapedTransport:
    """A :class:`~fltorrent.net.base.Transport` whose connections share one peer's link.

    Owns the delivery tasks of its connections: use it as ``async with ShapedTransport(...)``.
    """

    def __init__(self, inner: Transport, link: PeerLink) -> None:
        self.inner = inner
        self.link = link
        self._tg: asyncio.TaskGroup | None = None
        self._open: set[ShapedConnection] = set()

    async def __aenter__(self) -> ShapedTransport:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        tg, self._tg = self._tg, None
        # Connections their owners left open would keep their delivery tasks waiting.
        for conn in list(self._open):
            await conn.aclose()
        await tg.__aexit__(None, None, None)

    def _wrap(self, conn: Connection) -> ShapedConnection:
        if self._tg is None:
            raise TransportError("the shaped transport is not running (use 'async with')")
        shaped = ShapedConnection(conn, self.link, self._tg)
        self._open.add(shaped)
        shaped.on_close = self._open.discard
        return shaped

    def shaped_handler(self, handler: ConnectionHandler) -> ConnectionHandler:
        """``handler`` for connections accepted by the inner transport, shaped on this link."""

        async def shaped(conn: Connection) -> None:
            wrapped = self._wrap(conn)
            try:
                await handler(wrapped)
            finally:
                await wrapped.aclose()

        return shaped

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> Listener:
        return await self.inner.listen(host, port, self.shaped_handler(handler))

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        return self._wrap(await self.inner.connect(host, port, timeout=timeout))
