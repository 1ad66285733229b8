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

Membership is checked by an :class:`~fltorrent.admission.Admission` (the runtime always gives
one): each connection first gets a ``Hello`` nonce, which a registration signs with the key of
its federation token; one identity holds one membership and its id for good. The welcome carries
every member's token (peers check them and verify manifest signatures with their keys) and the
signed revocation list; on a revocation the tracker sends the new list (``Revoked``) and closes
the revoked members' connections. Messages are in :mod:`fltorrent.control`, the peer's side in
:mod:`fltorrent.tracker_client`. Model updates never pass through here.

Over 500 lines on purpose: one class whose methods share one lock and one member table; split
across modules, what holds the lock would no longer be visible in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from fltorrent.admission import Admission
from fltorrent.control import (
    PEER_LINE,
    AllDone,
    ControlMessage,
    Done,
    Hello,
    Joined,
    Left,
    LineChannel,
    Link,
    Progress,
    Refused,
    Register,
    Revoked,
    Skip,
    Skipped,
    TrackerMessage,
    Welcome,
)
from fltorrent.errors import (
    AuthError,
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
    identity: str | None = None  # from its token (None: the tracker checks no tokens)
    token: str = ""  # base64 DER, passed on to the other members


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
    # A member's record of a round (untrusted: the receiver validates it) and its peer id.
    on_record: Callable[[int, dict[str, Any]], None] | None = None
    # Higher is better: which members should bridge parts of a split overlay (e.g. uplink rate).
    bridge_preference: Callable[[int], float] | None = None
    # Tokens, proofs, identities, revocations (None: anyone may register; tracker unit tests).
    admission: Admission | None = None
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
        self._owners: dict[int, str] = {}  # peer id -> the identity that registered it
        self.run = os.urandom(16).hex()  # this run's nonce: manifest signatures are bound to it
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

    def edges(self) -> list[tuple[int, int]]:
        """The overlay as built and repaired (no edge before the welcome), for status."""
        return [(int(a), int(b)) for a, b in self._graph.edges()]

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
            self._limited(conn, f"{self._open} connections open (limit {limit})")
            log.warning("tracker: refusing a connection: %d open (limit %d)", self._open, limit)
            await conn.aclose()
            return
        self._open += 1
        try:
            await self._serve_connection(conn)
        finally:
            self._open -= 1

    def _limited(self, conn: Connection, reason: str) -> None:
        """Count a connection dropped unheard; audit the 1st, 2nd, 4th, 8th... (a flood must
        not grow the audit log by a line per connection)."""
        self.refused_connections += 1
        n = self.refused_connections
        if self.admission is not None and n & (n - 1) == 0:
            self.admission.report(
                "limit", f"{reason} ({n} dropped so far)", address=conn.remote_address[0]
            )

    async def _serve_connection(self, conn: Connection) -> None:
        channel = LineChannel(conn, max_line=PEER_LINE)
        member: MemberState | None = None
        host = conn.remote_address[0]
        if self.admission is not None and self.admission.blocked(host):
            self._limited(conn, "address cut off after repeated authentication failures")
            return
        nonce = Admission.nonce()
        try:
            await channel.send(Hello(federation=self.federation, nonce=nonce))
            async with asyncio.timeout(self.registration_timeout):
                first = await channel.receive()
            if not isinstance(first, Register):
                raise RemoteProtocolError("first message must be register")
            member = await self._register(first, channel, conn, nonce)
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

    async def _refuse(self, channel: LineChannel, reason: str) -> None:
        with contextlib.suppress(TransportError):
            await channel.send(Refused(reason=reason))
        log.warning("tracker: registration refused: %s", reason)

    async def _register(
        self, msg: Register, channel: LineChannel, conn: Connection, nonce: str
    ) -> MemberState | None:
        identity: str | None = None
        host = conn.remote_address[0]
        if self.admission is not None:
            await self._check_revocations()  # a member revoked a moment ago must not join
            try:
                member_of_token = self.admission.admit(
                    msg, nonce, self.federation, conn.peer_certificate
                )
            except AuthError as exc:
                self.admission.refused(host, exc.reason, str(exc), msg.peer_id)
                await self._refuse(channel, str(exc))
                return None
            identity = member_of_token.identity
            if member_of_token.peer_id is not None:
                msg = msg.model_copy(update={"peer_id": member_of_token.peer_id})
        async with self._lock:
            msg, reason = self._bind_identity(msg, identity)
            old = self.members.get(msg.peer_id) if msg.peer_id is not None else None
            reason = reason or self._refusal(msg, old)
            if reason is None and old is not None and self.welcomed and not old.alive:
                return await self._rejoin(old, msg, channel, conn)
            taken = set(self.members) | {p for p, i in self._owners.items() if i != identity}
            free = sorted(set(range(1, self.client_num + 1)) - taken)
            if reason is None and msg.peer_id is None and not free:
                reason = "no peer id is free (every id is held by another identity)"
            if reason is not None:
                if self.admission is not None:  # audited; not counted against the address
                    self.admission.refused(host, "membership", reason, msg.peer_id, count=False)
                await self._refuse(channel, reason)
                return None
            pid = msg.peer_id or free[0]
            if identity is not None:
                self._owners[pid] = identity  # for good: the id is this identity's
            member = MemberState(
                pid, (msg.host, msg.port), channel, identity=identity, token=msg.token
            )
            self.members[pid] = member
            self._joined(member, host)
            log.info("tracker: peer %d registered from %s:%d", pid, msg.host, msg.port)
            if len(self.members) == self.client_num:
                await self._welcome_all()
            return member

    def _bind_identity(self, msg: Register, identity: str | None) -> tuple[Register, str | None]:
        """One identity, one membership: a live identity cannot register twice, a departed one
        gets its old id back, and an id that an identity held is not given to another."""
        if identity is None:
            return msg, None
        live = next((m for m in self.members.values() if m.identity == identity and m.alive), None)
        if live is not None:
            return msg, f"identity {identity} is already registered as peer {live.peer_id}"
        held = next((p for p, i in self._owners.items() if i == identity), None)
        if held is not None:
            if msg.peer_id not in (None, held):
                return msg, f"identity {identity} was peer {held}, not {msg.peer_id}"
            return msg.model_copy(update={"peer_id": held}), None
        if msg.peer_id is not None and self._owners.get(msg.peer_id) not in (None, identity):
            return msg, f"peer id {msg.peer_id} belongs to another identity"
        return msg, None

    def _refusal(self, msg: Register, old: MemberState | None) -> str | None:
        """Why a registration cannot be taken (``None``: a new member, or a rejoin)."""
        if msg.federation is not None and msg.federation != self.federation:
            return f"federation {msg.federation!r} is not {self.federation!r}"
        if old is not None and old.alive:
            return f"peer id {msg.peer_id} is taken"
        if self.welcomed and old is not None and not old.done:  # a rejoin, unless all is over
            return "the federation has finished" if self._all_done.is_set() else None
        if self.welcomed or len(self.members) >= self.client_num:
            return "the federation is full"
        if msg.peer_id is not None and msg.peer_id > self.client_num:
            return f"peer id {msg.peer_id} is above client_num {self.client_num}"
        return None

    def _joined(self, member: MemberState, address: str) -> None:
        if self.admission is not None:
            self.admission.report(
                "join", "", identity=member.identity, peer=member.peer_id, address=address
            )

    async def _rejoin(
        self, old: MemberState, msg: Register, channel: LineChannel, conn: Connection
    ) -> MemberState:
        """A member that left registers again: welcome it, tell the others where it is."""
        host = msg.host
        live_rounds = [m.round for m in self.members.values() if m.alive]
        member = MemberState(
            old.peer_id,
            (host, msg.port),
            channel,
            round=max(live_rounds, default=0),
            identity=old.identity,
            token=msg.token,
        )
        self.members[old.peer_id] = member
        self._joined(member, conn.remote_address[0])
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
                    tokens=self._tokens(),
                    revocations=self._revocations(),
                    run=self.run,
                )
            )
        joined = Joined(
            peer_id=old.peer_id,
            host=host,
            port=msg.port,
            round=max(1, member.round),
            token=member.token,
        )
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
        tokens, revocations = self._tokens(), self._revocations()
        self.welcomed = True
        for pid, member in self.members.items():
            welcome = Welcome(
                federation=self.federation,
                peer_id=pid,
                members=addresses,
                neighbours=neighbours(graph, pid),
                config=self.config,
                degrees=self._degree,
                tokens=tokens,
                revocations=revocations,
                run=self.run,
            )
            with contextlib.suppress(TransportError):
                await member.channel.send(welcome)
        self._full.set()

    def _tokens(self) -> dict[int, str]:
        return {pid: m.token for pid, m in self.members.items() if m.token}

    def _revocations(self) -> str:
        return self.admission.revocations_text() if self.admission is not None else ""

    async def _check_revocations(self, *, at_most_every: float = 0.0) -> None:
        """Adopt a changed revocation list: pass it on, and end revoked members' connections.
        Every registration looks; members' messages (many per round) at most once a second."""
        if self.admission is None:
            return
        revoked = self.admission.reload(at_most_every=at_most_every)
        if not revoked:
            return
        text = self.admission.revocations_text()
        for m in list(self.members.values()):
            if m.identity in revoked:
                self.admission.report(
                    "revoked", "revoked by the admin", identity=m.identity, peer=m.peer_id
                )
                with contextlib.suppress(TransportError):
                    await m.channel.send(Refused(reason="your membership was revoked"))
                await self._left(m)  # now, not when its handler notices: it must not be counted
                await m.channel.conn.aclose()
        if not self.welcomed:
            return  # members still waiting get the list with their welcome
        for m in self.members.values():
            if m.alive and m.identity not in revoked:
                with contextlib.suppress(TransportError):
                    await m.channel.send(Revoked(revocations=text))

    async def _on_message(self, member: MemberState, msg: TrackerMessage) -> None:
        await self._check_revocations(at_most_every=1.0)
        match msg:
            case Progress():
                member.round = msg.round
                if not member.done:  # reports may overtake each other; done is final
                    member.phase = msg.phase
                member.completion = msg.completion
                member.accuracy = msg.accuracy
                if self.on_progress is not None:
                    self.on_progress(member)
                if msg.record is not None and self.on_record is not None:
                    self.on_record(member.peer_id, msg.record)
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
