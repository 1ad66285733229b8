"""The tracker: rendezvous and membership. Never in the data path.

Peers connect, register (id and listen address), and wait until ``client_num`` members are
present. The tracker then builds the topology over the member list and sends each peer a
``Welcome`` with every member's address, its own neighbours and the federation's configuration
(so peers on other hosts agree on model, data split and protocol settings). Afterwards it relays
membership changes (a peer's connection dropped: ``Left``; it registered again under its id:
``Joined``), relays round hints (a peer sits a round out: ``Skip`` -> ``Skipped``, so nobody
waits for its update), collects small progress reports for the status API and progress display,
and announces ``AllDone`` when every live peer finished. After departures it restores the
overlay's degree and connectivity (``Link`` to both ends of each new edge). A member whose
connection dropped may register again with its id (rejoin after a crash); its ``Welcome``
names the round the federation is in.

The control protocol (messages, line framing) is in :mod:`fltorrent.control`. Model updates
never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from fltorrent.control import (
    PEER_LINE,
    AllDone,
    ControlMessage,
    Done,
    Joined,
    Left,
    LineChannel,
    Link,
    Progress,
    Refused,
    Register,
    Skip,
    Skipped,
    TrackerMessage,
    Welcome,
)
from fltorrent.errors import (
    BrokenResourceError,
    ConnectError,
    RemoteProtocolError,
    TrackerError,
    TransportError,
)
from fltorrent.net.base import Address, Connection, Listener, Transport
from fltorrent.topology import build_topology, neighbours, repair_edges

log = logging.getLogger(__name__)


@dataclass
class MemberState:
    """What the tracker knows of one member."""

    peer_id: int
    address: Address
    channel: LineChannel
    round: int = 0
    phase: str = "registered"
    completion: float = 0.0
    accuracy: float | None = None
    done: bool = False
    alive: bool = True


@dataclass
class TopologySpec:
    """Arguments of :func:`build_topology`."""

    kind: str = "mesh"
    connections: int = 3
    branching: int = 2
    custom_graph: dict[int, list[int]] | None = None
    seed: int = 0
    use: bool = True


@dataclass
class Tracker:
    """Rendezvous service for one federation. Run with ``async with`` and :meth:`serve`."""

    federation: str
    client_num: int
    config: dict[str, Any] = field(default_factory=dict)
    topology: TopologySpec = field(default_factory=TopologySpec)
    registration_timeout: float = 120.0
    # Open connections at once (members, and anyone still to register): each costs a buffer
    # and a handler, so a flood of half-open lines is refused beyond this. 0: 4 x client_num
    # + 16.
    max_connections: int = 0
    on_progress: Callable[[MemberState], None] | None = None
    # Higher is better: which members should bridge parts of a split overlay (e.g. uplink rate).
    bridge_preference: Callable[[int], float] | None = None
    members: dict[int, MemberState] = field(default_factory=dict)
    welcomed: bool = False

    def __post_init__(self) -> None:
        self._listener: Listener | None = None
        self._all_done = asyncio.Event()
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._graph: nx.Graph = nx.empty_graph(0)
        self._degree: dict[int, int] = {}  # each member's degree in the topology as built
        self._open = 0  # connections being handled
        self.refused_connections = 0

    async def start(self, transport: Transport, host: str, port: int) -> Address:
        """Listen; returns the bound address."""
        self._listener = await transport.listen(host, port, self._handle)
        return self._listener.address

    async def aclose(self) -> None:
        """Stop listening (member connections end with their handlers)."""
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None

    async def __aenter__(self) -> Tracker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def wait_full(self) -> None:
        """Wait for every member to register; :class:`TrackerError` at the deadline."""
        try:
            async with asyncio.timeout(self.registration_timeout):
                await self._full.wait()
        except TimeoutError:
            reason = (
                f"the federation did not form: only {len(self.members)} of {self.client_num} "
                f"peers registered within {self.registration_timeout:.0f}s"
            )
            # Tell the peers waiting for a welcome, rather than leave them to their own timeout.
            async with self._lock:
                for member in self.members.values():
                    with contextlib.suppress(TransportError):
                        await member.channel.send(Refused(reason=reason))
                    await member.channel.conn.aclose()
            raise TrackerError(reason) from None

    async def wait_done(self, timeout: float | None = None) -> bool:
        """Wait until every live member reported done (or left); ``False`` on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._all_done.wait()
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------------ connections
    async def _handle(self, conn: Connection) -> None:
        limit = self.max_connections or 4 * self.client_num + 16
        if self._open >= limit:
            self.refused_connections += 1
            log.warning("tracker: refusing a connection: %d open (limit %d)", self._open, limit)
            await conn.aclose()
            return
        self._open += 1
        try:
            await self._serve_connection(conn)
        finally:
            self._open -= 1

    async def _serve_connection(self, conn: Connection) -> None:
        channel = LineChannel(conn, max_line=PEER_LINE)
        member: MemberState | None = None
        try:
            async with asyncio.timeout(self.registration_timeout):
                first = await channel.receive()
            if not isinstance(first, Register):
                raise RemoteProtocolError("first message must be register")
            member = await self._register(first, channel, conn)
            if member is None:
                return
            while True:
                msg = await channel.receive()
                if msg is None:
                    return
                await self._on_message(member, msg)
        except (RemoteProtocolError, TransportError, TimeoutError) as exc:
            log.info("tracker: member %s dropped: %s", member.peer_id if member else "?", exc)
        finally:
            if member is not None:
                await self._left(member)

    async def _register(
        self, msg: Register, channel: LineChannel, conn: Connection
    ) -> MemberState | None:
        async with self._lock:
            reason = None
            old = self.members.get(msg.peer_id) if msg.peer_id is not None else None
            if msg.federation is not None and msg.federation != self.federation:
                reason = f"federation {msg.federation!r} is not {self.federation!r}"
            elif self.welcomed and old is not None and not old.alive and not old.done:
                if self._all_done.is_set():
                    reason = "the federation has finished"
                else:
                    return await self._rejoin(old, msg, channel, conn)
            elif old is not None and old.alive:
                reason = f"peer id {msg.peer_id} is taken"
            elif self.welcomed or len(self.members) >= self.client_num:
                reason = "the federation is full"
            elif msg.peer_id is not None and msg.peer_id > self.client_num:
                reason = f"peer id {msg.peer_id} is above client_num {self.client_num}"
            if reason is not None:
                with contextlib.suppress(TransportError):
                    await channel.send(Refused(reason=reason))
                log.warning("tracker: registration refused: %s", reason)
                return None
            pid = msg.peer_id or min(set(range(1, self.client_num + 1)) - set(self.members))
            host = msg.host or conn.remote_address[0]
            member = MemberState(pid, (host, msg.port), channel)
            self.members[pid] = member
            log.info("tracker: peer %d registered from %s:%d", pid, host, msg.port)
            if len(self.members) == self.client_num:
                await self._welcome_all()
            return member

    async def _rejoin(
        self, old: MemberState, msg: Register, channel: LineChannel, conn: Connection
    ) -> MemberState:
        """A member that left registers again: welcome it, tell the others where it is."""
        host = msg.host or conn.remote_address[0]
        live_rounds = [m.round for m in self.members.values() if m.alive]
        member = MemberState(
            old.peer_id, (host, msg.port), channel, round=max(live_rounds, default=0)
        )
        self.members[old.peer_id] = member
        log.info("tracker: peer %d rejoined from %s:%d", old.peer_id, host, msg.port)
        addresses = {pid: m.address for pid, m in self.members.items()}
        with contextlib.suppress(TransportError):
            await channel.send(
                Welcome(
                    federation=self.federation,
                    peer_id=old.peer_id,
                    members=addresses,
                    neighbours=[
                        q for q in neighbours(self._graph, old.peer_id) if self.members[q].alive
                    ],
                    config=self.config,
                    round=member.round,
                    departed=[p for p, m in self.members.items() if not m.alive],
                    degrees=self._degree,
                )
            )
        joined = Joined(peer_id=old.peer_id, host=host, port=msg.port, round=max(1, member.round))
        await self._broadcast(joined, old.peer_id)
        # Its old neighbours may be gone: give it (and whoever lost degree meanwhile) links.
        await self._repair()
        return member

    async def _broadcast(self, msg: ControlMessage, sender: int) -> None:
        for other in self.members.values():
            if other.alive and other.peer_id != sender:
                with contextlib.suppress(TransportError):
                    await other.channel.send(msg)

    async def _welcome_all(self) -> None:
        spec = self.topology
        n = self.client_num
        if spec.use:
            graph = build_topology(
                spec.kind,
                n,
                connections=spec.connections,
                branching=spec.branching,
                custom_graph=spec.custom_graph,
                seed=spec.seed,
            )
        else:
            graph = build_topology("full", n)
        self._graph = graph
        self._degree = dict(graph.degree())
        addresses = {pid: m.address for pid, m in self.members.items()}
        self.welcomed = True
        for pid, member in self.members.items():
            welcome = Welcome(
                federation=self.federation,
                peer_id=pid,
                members=addresses,
                neighbours=neighbours(graph, pid),
                config=self.config,
                degrees=self._degree,
            )
            with contextlib.suppress(TransportError):
                await member.channel.send(welcome)
        self._full.set()

    async def _on_message(self, member: MemberState, msg: TrackerMessage) -> None:
        match msg:
            case Progress():
                member.round = msg.round
                if not member.done:  # reports may overtake each other; done is final
                    member.phase = msg.phase
                member.completion = msg.completion
                member.accuracy = msg.accuracy
                if self.on_progress is not None:
                    self.on_progress(member)
            case Skip():
                await self._broadcast(
                    Skipped(peer_id=member.peer_id, round=msg.round), member.peer_id
                )
            case Done():
                member.done = True
                member.phase = "done"
                await self._check_all_done()
            case _:
                raise RemoteProtocolError(f"unexpected {msg.type} message from a peer")

    async def _left(self, member: MemberState) -> None:
        # Under the registration lock: a rejoin must not overtake this member's Left.
        async with self._lock:
            await self._left_locked(member)

    async def _left_locked(self, member: MemberState) -> None:
        if not member.alive:
            return
        member.alive = False
        if not member.done:
            member.phase = "failed"
            log.warning("tracker: peer %d left before finishing", member.peer_id)
        if not self.welcomed:
            self.members.pop(member.peer_id, None)
            return
        await self._broadcast(Left(peer_id=member.peer_id), member.peer_id)
        await self._repair()
        await self._check_all_done()

    async def _repair(self) -> None:
        """Restore the live members' overlay after a departure (degree and connectivity).

        See :func:`fltorrent.topology.repair_edges`; both ends of each new edge get ``link``.
        """
        live = [p for p, m in self.members.items() if m.alive and not m.done]
        prefer = self.bridge_preference or (lambda _p: 0.0)
        for a, b in repair_edges(self._graph, live, self._degree, prefer):
            log.info("tracker: overlay repair links peers %d and %d", a, b)
            for x, y in ((a, b), (b, a)):
                host, port = self.members[y].address
                with contextlib.suppress(TransportError):
                    await self.members[x].channel.send(Link(peer_id=y, host=host, port=port))

    async def _check_all_done(self) -> None:
        if self._all_done.is_set() or not self.welcomed:
            return
        if all(m.done or not m.alive for m in self.members.values()):
            self._all_done.set()
            for m in self.members.values():
                if m.alive:
                    with contextlib.suppress(TransportError):
                        await m.channel.send(AllDone())


class TrackerClient:
    """A peer's side of the tracker connection."""

    def __init__(self, conn: Connection) -> None:
        self.channel = LineChannel(conn)
        self.welcome: Welcome | None = None
        self.left: set[int] = set()
        self.all_done = asyncio.Event()
        self.lost = asyncio.Event()
        self.on_left: Callable[[int], None] | None = None
        self.on_joined: Callable[[int, Address, int], None] | None = None
        self.on_skipped: Callable[[int, int], None] | None = None
        self.on_link: Callable[[int, Address], None] | None = None

    @classmethod
    async def connect(
        cls, transport: Transport, address: Address, *, timeout: float = 10.0
    ) -> TrackerClient:
        """Dial the tracker, retrying until ``timeout`` (it may be starting up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                conn = await transport.connect(*address, timeout=max(0.1, deadline - loop.time()))
                return cls(conn)
            except ConnectError as exc:
                if loop.time() >= deadline:
                    raise TrackerError(f"cannot reach the tracker at {address}: {exc}") from None
                await asyncio.sleep(0.1)

    async def register(
        self,
        *,
        federation: str | None,
        peer_id: int | None,
        host: str,
        port: int,
        timeout: float,
    ) -> Welcome:
        """Register and wait (until ``timeout``) for the welcome."""
        await self.channel.send(
            Register(federation=federation, peer_id=peer_id, host=host, port=port)
        )
        try:
            async with asyncio.timeout(timeout):
                msg = await self.channel.receive()
        except TimeoutError:
            raise TrackerError(f"no welcome from the tracker within {timeout:.0f}s") from None
        except (RemoteProtocolError, TransportError) as exc:
            raise TrackerError(f"tracker connection failed: {exc}") from None
        if isinstance(msg, Refused):
            raise TrackerError(f"tracker refused registration: {msg.reason}")
        if not isinstance(msg, Welcome):
            raise TrackerError("tracker closed the connection before the welcome")
        self.welcome = msg
        return msg

    async def listen(self) -> None:
        """Receive membership events until the connection ends."""
        try:
            while True:
                msg = await self.channel.receive()
                match msg:
                    case None:
                        return
                    case Left():
                        self.left.add(msg.peer_id)
                        if self.on_left is not None:
                            self.on_left(msg.peer_id)
                    case Joined():
                        self.left.discard(msg.peer_id)
                        if self.on_joined is not None:
                            self.on_joined(msg.peer_id, (msg.host, msg.port), msg.round)
                    case Link():
                        if self.on_link is not None:
                            self.on_link(msg.peer_id, (msg.host, msg.port))
                    case Skipped():
                        if self.on_skipped is not None:
                            self.on_skipped(msg.peer_id, msg.round)
                    case AllDone():
                        self.all_done.set()
                    case _:
                        raise RemoteProtocolError(f"unexpected {msg.type} from the tracker")
        except (RemoteProtocolError, TransportError) as exc:
            log.warning("tracker connection lost: %s", exc)
        finally:
            self.lost.set()

    async def progress(self, msg: Progress | Skip | Done) -> None:
        """Report progress; a lost tracker is not fatal to the peer."""
        with contextlib.suppress(TransportError, BrokenResourceError):
            await self.channel.send(msg)

    async def aclose(self) -> None:
        """Close the connection."""
        await self.channel.conn.aclose()
