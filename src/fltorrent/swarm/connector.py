"""Connections of a swarm: dial neighbours (and redial), accept incoming ones, run sessions.

Each session runs as a task of the swarm (``spawn``), so it ends with the swarm. Dialing
backs off exponentially up to 2 s between attempts and stops when the swarm closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fltorrent.errors import ConnectError
from fltorrent.net.base import Address, Connection, Transport
from fltorrent.swarm.counters import Counters
from fltorrent.swarm.events import ConnectionEvent, EventSink, no_events
from fltorrent.swarm.session import Session, SessionHandler, SessionOptions

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, Any]], "asyncio.Task[Any]"]


class Connector:
    """Owns the connection side of one swarm."""

    def __init__(
        self,
        *,
        transport: Transport,
        session_options: SessionOptions,
        handler: SessionHandler,
        counters: Counters,
        sessions: dict[int, Session],
        spawn: Spawn,
        connect_timeout: float,
        max_handshaking: int,
        max_attempts: int = 0,
        events: EventSink = no_events,
    ) -> None:
        self.transport = transport
        self.session_options = session_options
        self.handler = handler
        self.counters = counters
        self.sessions = sessions
        self.spawn = spawn
        self.connect_timeout = connect_timeout
        self.max_handshaking = max_handshaking
        self.max_attempts = max_attempts  # failed dials in a row before giving up (0: never)
        self.events = events
        self.closing = False
        self._dialers: dict[int, asyncio.Task[Any]] = {}
        self._addresses: dict[int, Address] = {}
        self._ended: dict[int, asyncio.Event] = {}
        self._inbound: set[Session] = set()  # accepted connections, until they end

    @property
    def me(self) -> int:
        return self.session_options.peer_id

    async def accept(self, conn: Connection) -> None:
        """Listener handler: run a session for an incoming connection until it ends."""
        if self.closing:
            await conn.aclose()
            return
        pending = sum(not s.handshaken for s in self._inbound)
        if pending >= self.max_handshaking:
            # Unauthenticated connections cost memory and a timer each: bound them.
            log.warning("peer %d: refusing a connection: %d handshakes pending", self.me, pending)
            await conn.aclose()
            return
        task = self.spawn(self._run_session(conn, expected_peer=None))
        await asyncio.wait({task})

    def connect(self, peer_id: int, address: Address) -> None:
        """Keep a connection to ``peer_id`` open: dial, and redial when it breaks.

        A new address for a known peer (it restarted elsewhere) replaces the old dialer.
        """
        old = self._dialers.get(peer_id)
        if old is not None and self._addresses.get(peer_id) == address:
            return
        if old is not None:
            old.cancel()
        self._addresses[peer_id] = address
        self._dialers[peer_id] = self.spawn(self._dial_loop(peer_id, address))

    def disconnect(self, peer_id: int) -> None:
        """Stop keeping a connection to ``peer_id``: no more redials (a session stays open
        until either side closes it)."""
        dialer = self._dialers.pop(peer_id, None)
        if dialer is not None:
            dialer.cancel()
        self._addresses.pop(peer_id, None)

    def keeps(self, peer_id: int) -> bool:
        """Whether a connection to ``peer_id`` is being kept (dialed and redialed)."""
        return peer_id in self._dialers

    def drop(self, session: Session) -> None:
        """Close a session's connection (its task then ends the session)."""
        self.spawn(session.conn.aclose())

    def opened(self, peer_id: int) -> None:
        """A session with ``peer_id`` is now registered."""
        self._ended[peer_id] = asyncio.Event()

    def ended(self, peer_id: int) -> None:
        """The registered session with ``peer_id`` is gone: its dialer may dial again."""
        event = self._ended.pop(peer_id, None)
        if event is not None:
            event.set()

    async def _dial_loop(self, peer_id: int, address: Address) -> None:
        backoff = 0.05
        failures = 0
        where = f"{address[0]}:{address[1]}"
        loop = asyncio.get_running_loop()
        while not self.closing:
            if peer_id in self.sessions:
                await self._ended.setdefault(peer_id, asyncio.Event()).wait()
                continue
            try:
                conn = await self.transport.connect(*address, timeout=self.connect_timeout)
            except ConnectError as exc:
                log.debug("peer %d: dial %s failed: %s", self.me, address, exc)
                failures += 1
                self.events(
                    ConnectionEvent(
                        loop.time(), "dial_failed", peer_id, where, True, None, str(exc)
                    )
                )
                if self.max_attempts and failures >= self.max_attempts:
                    log.warning(
                        "peer %d: gave up on peer %d at %s after %d failed attempts",
                        self.me,
                        peer_id,
                        where,
                        failures,
                    )
                    self.events(
                        ConnectionEvent(
                            loop.time(),
                            "gave_up",
                            peer_id,
                            where,
                            True,
                            None,
                            f"{failures} failed dials",
                        )
                    )
                    self._dialers.pop(peer_id, None)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            failures = 0
            reason = await self._run_session(conn, expected_peer=peer_id)
            log.debug("peer %d: session to %d ended: %s", self.me, peer_id, reason)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _run_session(self, conn: Connection, *, expected_peer: int | None) -> str:
        session = Session(
            conn,
            options=self.session_options,
            handler=self.handler,
            counters=self.counters,
            expected_peer=expected_peer,
        )
        if expected_peer is None:
            self._inbound.add(session)
        try:
            return await session.run()
        finally:
            self._inbound.discard(session)
