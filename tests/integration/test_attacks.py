"""Attacks an outsider once ran against live peers, each now refused.

* impersonation at the connection: a member's TLS credentials with another member's peer id in
  the wire handshake; a non-member's TLS; a plaintext dialer to a TLS swarm;
* forged manifests: a member publishes an update naming another author, signed with its own key;
* replay: an author's signed manifest of an earlier round announced as a later one;
* the tracker: registrations without a valid token or proof, twice, under a departed member's
  id, and a join flood from one address;
* end to end: a federation with the default security runs over TLS only.

Transport attacks run over real loopback TCP with TLS (127.0.0.1 only); the tracker's checks run
on the in-memory network, where a connection's address is a name.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from fltorrent.admission import Admission, encode_token, register_message
from fltorrent.config import load_config
from fltorrent.control import Hello
from fltorrent.errors import BrokenResourceError, ConnectError, TrackerError
from fltorrent.membership import Membership
from fltorrent.net import MemoryNetwork, TcpTransport
from fltorrent.net.base import Address, Connection, ConnectionHandler, Listener, Transport
from fltorrent.net.memory import MemoryListener
from fltorrent.peer import Peer
from fltorrent.plans.base import round_blobs
from fltorrent.runtime.local import run_local
from fltorrent.security import (
    Credentials,
    LocalFederation,
    TokenVerifier,
    create_local_federation,
    identity_of,
)
from fltorrent.security.audit import AuditEvent, MemoryAudit
from fltorrent.security.guard import PeerGuard
from fltorrent.security.tls import contexts
from fltorrent.security.tokens import REVOKED, Revocations, certificate_der, load_certificate
from fltorrent.swarm import Swarm, SwarmOptions, SwarmSecurity, Topic
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.tracker import TopologySpec, Tracker
from fltorrent.tracker_client import TrackerClient
from fltorrent.wire import (
    Announce,
    Bitfield,
    Handshake,
    ManifestData,
    ManifestRequest,
    Unchoke,
    WireConnection,
    pack_bits,
)
from tests.aio import aio
from tests.integration.test_federation import SMALL
from tests.swarm.helpers import FED, RawPeer, random_blob

HOST = "127.0.0.1"
NAME = "attacked"  # the federation's name (its authority's)
FULL = TopologySpec(kind="full")  # any number of members


# ---------------------------------------------------------------------- swarms over TLS
def _tls(creds: Credentials) -> TcpTransport:
    return TcpTransport(creds.tls_contexts(), handshake_timeout=5.0)


def _guard(fed: LocalFederation, pid: int, audit: MemoryAudit) -> PeerGuard:
    """Peer ``pid``'s guard, every member admitted (as the welcome's tokens do)."""
    guard = PeerGuard(fed.peers[pid], peer_id=pid, require_tls=True, audit=audit)
    for other, creds in fed.peers.items():
        assert guard.admit(other, guard.verifier.member(creds.token).token)
    return guard


def _security(guard: PeerGuard) -> SwarmSecurity:
    """As the runtime wires a guard into a swarm (runtime/node.py ``_swarm_security``)."""
    return SwarmSecurity(
        sign=guard.sign,
        verify=guard.verify_manifest,
        authenticate=guard.authenticate,
        audit=guard.swarm_event,
    )


def _others(me: int) -> Callable[[int, int, Topic], bool]:
    return lambda _round, author, _topic: author != me


def _nothing(_round: int, _author: int, _topic: Topic) -> bool:
    return False


@dataclass
class Node:
    swarm: Swarm
    address: Address


@contextlib.asynccontextmanager
async def _node(
    fed: LocalFederation,
    pid: int,
    *,
    security: SwarmSecurity,
    want: Callable[[int, int, Topic], bool],
) -> AsyncIterator[Node]:
    """A swarm of peer ``pid`` listening on loopback TLS with its own token."""
    transport = _tls(fed.peers[pid])
    swarm = Swarm(
        SwarmOptions(federation=FED, peer_id=pid), transport=transport, want=want, security=security
    )
    async with swarm:
        listener = await transport.listen(HOST, 0, swarm.accept)
        try:
            yield Node(swarm, listener.address)
        finally:
            await listener.aclose()


async def _until_closed(raw: RawPeer, timeout: float = 5.0) -> None:
    """Read until the other side ends the connection (an error counts as an end)."""
    with contextlib.suppress(BrokenResourceError):
        await raw.pump(timeout=timeout)
    raw.closed = True


async def _drain(conn: Connection, timeout: float = 5.0) -> bytes:
    """Everything received until the other side ends the connection."""
    data = bytearray()
    with contextlib.suppress(BrokenResourceError):
        async with asyncio.timeout(timeout):
            while chunk := await conn.receive():
                data += chunk
    return bytes(data)


def _events(audit: MemoryAudit, kind: str) -> list[AuditEvent]:
    return [e for e in audit.events if e.kind == kind]


# ---------------------------------------------------------------------- 1. impersonation
@aio(timeout=60)
async def test_a_member_claiming_another_members_id_is_refused_and_the_victim_not_banned() -> None:
    fed = create_local_federation(NAME, 3)
    audit = MemoryAudit()
    verifier = TokenVerifier(fed.peers[1].federation)
    async with _node(fed, 1, security=_security(_guard(fed, 1, audit)), want=_others(1)) as one:
        victim = one.swarm
        # Peer 3's own valid token and key (TLS completes: it is a member), handshake says 2.
        conn = await _tls(fed.peers[3]).connect(*one.address, timeout=5)
        assert conn.peer_certificate is not None
        impostor = RawPeer(conn)
        await impostor.send(Handshake(FED, 2, 1))
        await _until_closed(impostor)
        assert victim.counters.refused_peers == 1
        assert victim.counters.sessions_opened == 0 and 2 not in victim.sessions
        assert not victim.banned(2)
        (refusal,) = _events(audit, "refused")
        assert refusal.peer == 2 and refusal.reason.startswith("identity_mismatch")
        assert fed.peers[3].identity in refusal.reason
        assert not _events(audit, "ban")

        # The real peer 2 connects as usual, and an impostor cannot replace its session.
        honest_sec = _security(_guard(fed, 2, MemoryAudit()))
        async with _node(fed, 2, security=honest_sec, want=_others(2)) as two:
            two.swarm.connect(1, one.address)
            assert await victim.wait_for(lambda: 2 in victim.sessions, 10)
            session = victim.sessions[2]
            cert = session.conn.peer_certificate
            assert cert is not None and verifier.member(cert).identity == fed.peers[2].identity
            again = RawPeer(await _tls(fed.peers[3]).connect(*one.address, timeout=5))
            await again.send(Handshake(FED, 2, 1))
            await _until_closed(again)
            assert victim.counters.refused_peers == 2
            assert victim.sessions.get(2) is session and not session.closed
            assert victim.counters.sessions_opened == 1
            assert not victim.banned(2)
            assert not _events(audit, "ban")


@aio(timeout=60)
async def test_a_non_member_cannot_complete_tls_and_plaintext_gets_nothing() -> None:
    fed = create_local_federation(NAME, 2)
    other = create_local_federation("elsewhere", 1)
    audit = MemoryAudit()
    async with _node(fed, 1, security=_security(_guard(fed, 1, audit)), want=_others(1)) as one:
        victim = one.swarm
        # A token of another federation (its own trust anchor): no TLS session.
        with pytest.raises(ConnectError, match="TLS"):
            await _tls(other.peers[1]).connect(*one.address, timeout=5)
        # The same foreign token, presented by a client that trusts our federation.
        outsider = other.peers[1]
        ours = fed.peers[1].federation
        sharp = TcpTransport(contexts(outsider.key, outsider.token, ours), handshake_timeout=5.0)
        try:
            conn = await sharp.connect(*one.address, timeout=5)
        except ConnectError:
            pass
        else:  # TLS 1.3: the server's verdict on our certificate may come after connect
            await conn.send(WireConnection(federation=FED).send(Handshake(FED, 2, 1)))
            assert await _drain(conn) == b""
            await conn.aclose()
        # Plaintext to a TLS listener: nothing of the protocol comes back.
        plain = await TcpTransport().connect(*one.address, timeout=5)
        with contextlib.suppress(BrokenResourceError):
            await plain.send(WireConnection(federation=FED).send(Handshake(FED, 2, 1)))
        answer = await _drain(plain)
        await plain.aclose()
        assert b"fltorrent" not in answer and FED.encode() not in answer
        # None of them reached the swarm: no session, not even a refused handshake.
        await asyncio.sleep(0.2)
        assert victim.counters.sessions_opened == 0
        assert victim.counters.refused_peers == 0
        assert victim.counters.bytes_down == 0
        assert audit.events == []


# ---------------------------------------------------------------------- 2. forged manifests
@aio(timeout=60)
async def test_a_manifest_naming_another_author_is_refused_and_its_sender_dropped() -> None:
    fed = create_local_federation(NAME, 3)
    audit = MemoryAudit()
    # Peer 3 signs with its own key, as the swarm of a member does; it claims author 1.
    forger = SwarmSecurity(sign=fed.peers[3].signer.sign_manifest)
    async with (
        _node(fed, 2, security=_security(_guard(fed, 2, audit)), want=_others(2)) as two,
        _node(fed, 3, security=forger, want=_nothing) as three,
        _node(fed, 1, security=_security(_guard(fed, 1, MemoryAudit())), want=_others(1)) as one,
    ):
        victim = two.swarm
        forged, forged_pieces = random_blob(1, 6000, 3)
        three.swarm.publish(forged, forged_pieces)
        victim.connect(3, three.address)

        def refused() -> bool:
            counters = victim.counters
            return counters.bad_signatures >= 1 and counters.sessions_failed >= 1

        assert await victim.wait_for(refused, 10), victim.counters
        victim.disconnect(3)
        assert forged.blob_id not in victim.blobs
        bad = _events(audit, "bad_signature")
        assert bad and all(e.peer == 3 for e in bad)
        assert "author 1" in bad[0].reason

        # The real author 1 publishes its update: the victim takes it, and author 1 is not
        # caught equivocating (the forgery never became a second blob of author 1).
        honest, honest_pieces = random_blob(1, 6000, 3)
        one.swarm.publish(honest, honest_pieces)
        victim.connect(1, one.address)

        def complete() -> bool:
            blob = victim.blobs.get(honest.blob_id)
            return blob is not None and blob.complete

        assert await victim.wait_for(complete, 10)
        assert victim.blobs[honest.blob_id].pieces == honest_pieces
        assert forged.blob_id not in victim.blobs
        membership = Membership(2, fed.peers)
        found = round_blobs(victim, membership, 1)
        assert list(found) == [1] and found[1].blob_id == honest.blob_id
        assert membership.caught(1) == set()
        assert 1 in victim.sessions and victim.counters.refused_peers == 0
        assert all(e.peer != 1 for e in audit.events)


# ---------------------------------------------------------------------- 3. replay
@aio(timeout=60)
async def test_a_signed_manifest_of_round_1_announced_as_round_3_is_a_replay() -> None:
    fed = create_local_federation(NAME, 3)
    audit = MemoryAudit()
    async with _node(fed, 2, security=_security(_guard(fed, 2, audit)), want=_others(2)) as two:
        victim = two.swarm
        manifest, _pieces = random_blob(1, 6000, 3, round_=1)
        signature = fed.peers[1].signer.sign_manifest(manifest.blob_id)  # author 1's, valid

        async def relay(claimed_round: int) -> RawPeer:
            """Peer 3 (authenticated as itself) announces author 1's manifest."""
            raw = RawPeer(await _tls(fed.peers[3]).connect(*two.address, timeout=5))
            await raw.send(Handshake(FED, 3, 1))
            await raw.send(Unchoke())
            await raw.send(
                Announce(0, manifest.blob_id, claimed_round, manifest.author, manifest.num_pieces)
            )
            await raw.send(Bitfield(0, pack_bits([True] * manifest.num_pieces)))
            await raw.pump(ManifestRequest)
            await raw.send(ManifestData(0, manifest.encoded, signature))
            return raw

        replayer = await relay(3)
        await _until_closed(replayer)
        assert victim.counters.replayed_manifests >= 1
        assert manifest.blob_id not in victim.blobs
        replays = _events(audit, "replay")
        assert replays and replays[0].peer == 3 and "round 1 announced as 3" in replays[0].reason
        assert victim.counters.bad_signatures == 0  # the signature itself holds

        # The same signed manifest relayed as what it is (round 1) is accepted.
        relayed = await relay(1)
        assert await victim.wait_for(lambda: manifest.blob_id in victim.blobs, 5)
        assert victim.counters.replayed_manifests == 1
        await relayed.conn.aclose()


# ---------------------------------------------------------------------- 4. the tracker
class Forger(TrackerClient):
    """Registers with whatever token it shows and whatever key signs the hello's nonce."""

    def __init__(self, conn: Connection, token: bytes | None, key: Ed25519PrivateKey | None):
        super().__init__(conn)
        self.token = token
        self.key = key

    def _proof(self, hello: Hello) -> dict[str, str]:
        proof: dict[str, str] = {}
        if self.token is not None:
            proof["token"] = encode_token(certificate_der(load_certificate(self.token)))
        if self.key is not None:
            signed = self.key.sign(register_message(hello.nonce, hello.federation))
            proof["proof"] = signed.hex()
        return proof


async def _forger(
    net: Transport, address: Address, token: bytes | None, key: Ed25519PrivateKey | None
) -> Forger:
    return Forger(await net.connect(*address, timeout=2), token, key)


async def _member(net: Transport, address: Address, creds: Credentials) -> TrackerClient:
    return await TrackerClient.connect(net, address, timeout=2, credentials=creds)


async def _register(client: TrackerClient, peer_id: int | None = None, timeout: float = 2) -> int:
    welcome = await client.register(
        federation=None, peer_id=peer_id, host=HOST, port=4000, timeout=timeout
    )
    return welcome.peer_id


def _admission(
    fed: LocalFederation,
    audit: MemoryAudit,
    *,
    revocations_path: Path | None = None,
    max_refusals_per_address: int = 64,
) -> Admission:
    """The tracker's checks, as the runtime sets them up (plaintext: the memory network)."""
    return Admission(
        TokenVerifier(fed.tracker.federation, fed.tracker.revocations),
        require_tls=False,
        revocations_path=revocations_path,
        audit=audit,
        max_refusals_per_address=max_refusals_per_address,
    )


REFUSALS = ["no_token", "bad_token", "expired_token", "revoked", "bad_proof"]


@aio(timeout=30)
@pytest.mark.parametrize("reason", REFUSALS)
async def test_a_registration_without_valid_credentials_is_refused_and_audited(
    reason: str, tmp_path: Path
) -> None:
    fed = create_local_federation(NAME, 3)
    audit = MemoryAudit()
    revoked = tmp_path / REVOKED
    fed.authority.save(tmp_path)  # federation.crt, admin.key, an empty signed revoked.json
    admission = _admission(fed, audit, revocations_path=revoked)
    async with (
        MemoryNetwork() as net,
        Tracker(NAME, 3, topology=FULL, admission=admission) as tracker,
        contextlib.AsyncExitStack() as stack,
    ):
        address = await tracker.start(net, "tracker", 0)
        client: TrackerClient
        if reason == "no_token":
            client = await _forger(net, address, None, None)
        elif reason == "bad_token":  # a member of another federation, with its own credentials
            client = await _member(net, address, create_local_federation("elsewhere", 2).peers[2])
        elif reason == "expired_token":
            key = Ed25519PrivateKey.generate()
            expired = fed.authority.issue(
                key.public_key(), peer_id=2, valid_for=dt.timedelta(seconds=-1)
            )
            client = await _forger(net, address, expired, key)
        elif reason == "revoked":  # the admin revokes peer 2 while the tracker runs
            signed = Revocations.from_bytes(revoked.read_bytes())
            identity = fed.peers[2].identity
            fed.authority.revoke(signed, serial=None, identity=identity, reason="key stolen")
            revoked.write_bytes(signed.to_bytes())
            client = await _member(net, address, fed.peers[2])
        else:  # peer 2's token (seen on the wire), the nonce signed with peer 3's key
            client = await _forger(net, address, fed.peers[2].token, fed.peers[3].key)
        stack.push_async_callback(client.aclose)
        with pytest.raises(TrackerError, match="refused registration"):
            await _register(client)
        assert tracker.members == {}
        refused = _events(audit, "refused")
        assert [e.reason.split(":")[0] for e in refused] == [reason], refused
        assert refused[0].address == "memory-client"
        assert not _events(audit, "join")


def _broken_version(token: bytes) -> bytes:
    """``token`` as DER with its X.509 version field set to a value no parser knows."""
    der = bytearray(certificate_der(load_certificate(token)))
    at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 0x40
    return bytes(der)


@aio(timeout=30)
async def test_a_malformed_token_is_a_counted_refusal_not_a_crash() -> None:
    # A token whose version field is unknown made the parser raise something other than a
    # ValueError, which escaped the tracker's handler: nothing was refused, counted or audited.
    fed = create_local_federation(NAME, 2)
    audit = MemoryAudit()
    admission = _admission(fed, audit, max_refusals_per_address=2)
    bad = _broken_version(fed.peers[1].token)
    async with MemoryNetwork() as net, Tracker(NAME, 2, topology=FULL, admission=admission) as t:
        address = await t.start(net, "tracker", 0)
        for _ in range(2):
            conn = await net.connect(*address, timeout=2)
            client = RawForger(conn, bad, fed.peers[1].key)
            with pytest.raises(TrackerError, match="refused registration"):
                await _register(client)
            await client.aclose()
        assert [e.reason.split(":")[0] for e in _events(audit, "refused")] == ["bad_token"] * 2
        assert admission.blocked("memory-client")  # the refusals counted against the address
    guard = _guard(fed, 2, MemoryAudit())
    assert not guard.admit(1, bad)  # a peer handed such a token refuses it, and carries on


class RawForger(Forger):
    """A forger that sends its token's bytes as they are (not re-encoded from a parse)."""

    def _proof(self, hello: Hello) -> dict[str, str]:
        assert self.token is not None and self.key is not None
        signed = self.key.sign(register_message(hello.nonce, hello.federation))
        return {"token": encode_token(self.token), "proof": signed.hex()}


@aio(timeout=30)
async def test_a_revocation_while_the_federation_forms_spares_the_others(tmp_path: Path) -> None:
    fed = create_local_federation(NAME, 3)
    audit = MemoryAudit()
    revoked = tmp_path / REVOKED
    fed.authority.save(tmp_path)
    admission = _admission(fed, audit, revocations_path=revoked)
    async with (
        MemoryNetwork() as net,
        Tracker(NAME, 3, topology=FULL, admission=admission) as tracker,
    ):
        address = await tracker.start(net, "tracker", 0)
        one = await _member(net, address, fed.peers[1])
        two = await _member(net, address, fed.peers[2])
        first = asyncio.create_task(_register(one, timeout=5))
        second = asyncio.create_task(_register(two, timeout=5))
        await asyncio.sleep(0.1)
        signed = Revocations.from_bytes(revoked.read_bytes())
        fed.authority.revoke(signed, serial=None, identity=fed.peers[1].identity, reason="lost")
        revoked.write_bytes(signed.to_bytes())
        three = await _member(net, address, fed.peers[3])
        third = asyncio.create_task(_register(three, timeout=5))  # the tracker sees the list
        with pytest.raises(TrackerError, match="revoked"):
            await first
        await asyncio.sleep(0.2)
        # Peer 2, waiting for its welcome, was not sent the list (it gets it in the welcome):
        # before, that message broke its registration and the federation could never form.
        assert not second.done() and not third.done()
        assert {p: m.alive for p, m in tracker.members.items()} == {2: True, 3: True}
        assert [e.peer for e in _events(audit, "revoked")] == [1]
        for task in (second, third):
            task.cancel()
        for c in (one, two, three):
            await c.aclose()


@aio(timeout=30)
async def test_when_every_id_is_held_by_another_identity_the_refusal_says_so() -> None:
    fed = create_local_federation(NAME, 0)
    audit = MemoryAudit()

    def unbound() -> Credentials:
        key = Ed25519PrivateKey.generate()
        return Credentials(key, fed.authority.issue(key.public_key()), fed.tracker.federation)

    async with (
        MemoryNetwork() as net,
        Tracker(NAME, 2, topology=FULL, admission=_admission(fed, audit)) as tracker,
    ):
        address = await tracker.start(net, "tracker", 0)
        gone = await _member(net, address, unbound())
        waiting = asyncio.create_task(_register(gone, timeout=5))
        await asyncio.sleep(0.1)
        await gone.aclose()  # id 1 stays with its identity, which left before the welcome
        with contextlib.suppress(TrackerError):
            await waiting
        await asyncio.sleep(0.05)
        second = await _member(net, address, unbound())
        waits = asyncio.create_task(_register(second, timeout=5))  # gets id 2, and waits
        await asyncio.sleep(0.1)
        third = await _member(net, address, unbound())
        with pytest.raises(TrackerError, match="no peer id is free"):
            await _register(third)
        assert list(tracker.members) == [2]
        waits.cancel()
        for c in (second, third):
            await c.aclose()


def test_a_peer_refuses_one_identity_under_two_ids() -> None:
    # The tracker maps ids to tokens; a peer does not trust it for that: one identity, one id.
    fed = create_local_federation(NAME, 3)
    key = Ed25519PrivateKey.generate()
    token = fed.authority.issue(key.public_key())  # binds no id
    guard = _guard(fed, 3, MemoryAudit())
    assert guard.admit(1, token)
    assert not guard.admit(2, token)
    assert guard.keys.identity(2) is None and guard.keys.peers_of({identity_of(key)}) == [1]


@aio(timeout=30)
async def test_a_member_cannot_register_twice() -> None:
    fed = create_local_federation(NAME, 2)
    audit = MemoryAudit()
    async with (
        MemoryNetwork() as net,
        Tracker(NAME, 2, topology=FULL, admission=_admission(fed, audit)) as tracker,
        contextlib.AsyncExitStack() as stack,
    ):
        address = await tracker.start(net, "tracker", 0)
        first = await _member(net, address, fed.peers[1])
        stack.push_async_callback(first.aclose)
        waiting = asyncio.create_task(_register(first))
        stack.callback(waiting.cancel)
        await asyncio.sleep(0.05)
        assert tracker.members[1].identity == fed.peers[1].identity
        # The same identity again: under its id, under none, under another.
        for peer_id in (1, None, 2):
            twin = await _member(net, address, fed.peers[1])
            stack.push_async_callback(twin.aclose)
            with pytest.raises(TrackerError, match="refused registration"):
                await _register(twin, peer_id)
        assert list(tracker.members) == [1]
        refused = _events(audit, "refused")
        assert len(refused) == 3
        assert all(e.reason.startswith(("membership", "identity_mismatch")) for e in refused)
        # The federation still forms with the real peer 2.
        second = await _member(net, address, fed.peers[2])
        stack.push_async_callback(second.aclose)
        assert await _register(second) == 2
        assert await asyncio.wait_for(waiting, 2) == 1


@aio(timeout=30)
@pytest.mark.parametrize("welcomed", [True, False], ids=["after-welcome", "before-welcome"])
async def test_a_departed_members_id_is_not_given_to_another_identity(welcomed: bool) -> None:
    fed = create_local_federation(NAME, 3)
    audit = MemoryAudit()
    async with (
        MemoryNetwork() as net,
        Tracker(
            NAME, 2 if welcomed else 3, topology=FULL, admission=_admission(fed, audit)
        ) as tracker,
        contextlib.AsyncExitStack() as stack,
    ):
        address = await tracker.start(net, "tracker", 0)
        pending: list[asyncio.Task[int]] = []
        stack.callback(lambda: [t.cancel() for t in pending])
        clients: dict[int, TrackerClient] = {}
        for pid in (1, 2):
            clients[pid] = await _member(net, address, fed.peers[pid])
            stack.push_async_callback(clients[pid].aclose)
            pending.append(asyncio.create_task(_register(clients[pid], pid, timeout=5)))
        await asyncio.sleep(0.05)
        assert tracker.welcomed is welcomed
        await clients[1].aclose()  # peer 1 leaves
        await asyncio.sleep(0.05)
        assert 1 not in tracker.members or not tracker.members[1].alive
        # A member whose token binds no id asks for id 1; so does peer 3 (its token binds 3).
        key = Ed25519PrivateKey.generate()
        unbound = fed.authority.issue(key.public_key(), peer_id=None)
        for bound in (None, 3):
            thief = await (
                _forger(net, address, unbound, key)
                if bound is None
                else _member(net, address, fed.peers[bound])
            )
            stack.push_async_callback(thief.aclose)
            with pytest.raises(TrackerError, match="refused registration"):
                await _register(thief, 1, timeout=1)
            await thief.aclose()
        assert 1 not in tracker.members or tracker.members[1].identity == fed.peers[1].identity
        # Peer 1 itself gets its id back.
        back = await _member(net, address, fed.peers[1])
        stack.push_async_callback(back.aclose)
        if welcomed:
            assert await _register(back, 1) == 1
            assert tracker.members[1].alive
        else:
            pending.append(asyncio.create_task(_register(back, 1, timeout=5)))
            await asyncio.sleep(0.05)
            assert tracker.members[1].identity == fed.peers[1].identity


class _FromHost:
    """A connection as the tracker sees it: from ``host``."""

    def __init__(self, conn: Connection, host: str) -> None:
        self._conn = conn
        self._host = host

    @property
    def remote_address(self) -> Address:
        return (self._host, self._conn.remote_address[1])

    @property
    def peer_certificate(self) -> bytes | None:
        return self._conn.peer_certificate

    async def send(self, data: bytes) -> None:
        await self._conn.send(data)

    async def send_all(self, buffers: Sequence[bytes | bytearray | memoryview]) -> None:
        await self._conn.send_all(buffers)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._conn.receive(max_bytes)

    async def aclose(self) -> None:
        await self._conn.aclose()


class Hosts:
    """The memory network names every dialer ``memory-client``: this one gives each connection
    to a listener the name of the host that dialed it (connections are served in the order
    they were made)."""

    def __init__(self, net: MemoryNetwork) -> None:
        self.net = net
        self._dialers: deque[str] = deque()

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> MemoryListener:
        async def tagged(conn: Connection) -> None:
            await handler(_FromHost(conn, self._dialers.popleft()))

        return await self.net.listen(host, port, tagged)

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        return await self.host("memory-client").connect(host, port, timeout=timeout)

    def host(self, name: str) -> Transport:
        return _Dialer(self, name)


class _Dialer:
    def __init__(self, hosts: Hosts, name: str) -> None:
        self.hosts = hosts
        self.name = name

    async def listen(self, host: str, port: int, handler: ConnectionHandler) -> Listener:
        return await self.hosts.net.listen(host, port, handler)

    async def connect(self, host: str, port: int, *, timeout: float) -> Connection:
        self.hosts._dialers.append(self.name)
        try:
            return await self.hosts.net.connect(host, port, timeout=timeout)
        except ConnectError:
            self.hosts._dialers.pop()
            raise


@aio(timeout=30)
async def test_a_join_flood_from_one_address_is_cut_off_and_others_still_join() -> None:
    fed = create_local_federation(NAME, 2)
    audit = MemoryAudit()
    admission = _admission(fed, audit, max_refusals_per_address=3)
    async with (
        MemoryNetwork() as net,
        Tracker(NAME, 2, topology=FULL, admission=admission) as tracker,
    ):
        hosts = Hosts(net)
        address = await tracker.start(hosts, "tracker", 0)
        attacker = hosts.host("attacker")
        for _ in range(3):
            flood = await _forger(attacker, address, None, None)
            with pytest.raises(TrackerError, match="refused registration"):
                await _register(flood)
            await flood.aclose()
        assert admission.refusals == {"attacker": 3}
        assert tracker.refused_connections == 0
        # From now on the address is dropped at once: no hello, nothing counted as a refusal.
        for n in range(1, 6):
            conn = await attacker.connect(*address, timeout=2)
            assert await _drain(conn, 2) == b""
            await conn.aclose()
            assert tracker.refused_connections == n
        # Even a member's credentials from that address are not heard.
        member = await _member(attacker, address, fed.peers[2])
        with pytest.raises(TrackerError, match="did not say hello"):
            await _register(member)
        await member.aclose()
        assert tracker.refused_connections == 6
        assert len(_events(audit, "refused")) == 3
        assert all(e.address == "attacker" for e in audit.events)
        # Honest peers from other addresses join and the federation forms.
        honest = [await _member(hosts.host(f"honest-{p}"), address, fed.peers[p]) for p in (1, 2)]
        ids = await asyncio.gather(*(_register(c) for c in honest))
        assert sorted(ids) == [1, 2]
        joins = _events(audit, "join")
        assert sorted((e.peer, e.address) for e in joins) == [(1, "honest-1"), (2, "honest-2")]
        for c in honest:
            await c.aclose()


# ---------------------------------------------------------------------- 5. end to end


def _uid(certificate: bytes) -> str | None:
    found = x509.load_der_x509_certificate(certificate).subject.get_attributes_for_oid(
        NameOID.USER_ID
    )
    value = found[0].value if found else None
    return value if isinstance(value, str) else None


@aio(timeout=120)
async def test_a_federation_with_the_default_security_runs_over_tls_only() -> None:
    config = load_config(None, SMALL)
    assert config.security.transport == "tls"
    peers: dict[int, Peer] = {}
    seen: list[tuple[int, int, str | None]] = []  # (peer, neighbour, display id in its cert)

    def on_metrics(m: RoundMetrics) -> None:
        # Right after peer m.peer aggregated round m.round: its sessions are open.
        for rid, session in peers[m.peer].swarm.sessions.items():
            cert = session.conn.peer_certificate
            seen.append((m.peer, rid, None if cert is None else _uid(cert)))

    outcomes = await run_local(
        config,
        model_dir=None,
        on_metrics=on_metrics,
        on_phase=lambda s: None,
        on_peer=lambda p: peers.__setitem__(p.peer_id, p),
    )
    assert sorted(o.peer_id for o in outcomes if o.finished) == [1, 2, 3, 4], outcomes
    assert all(o.error is None for o in outcomes)
    assert all(m.completion == 1.0 for o in outcomes for m in o.metrics)
    assert {p for p, _, _ in seen} == {1, 2, 3, 4}  # every peer had open sessions to look at
    assert all(uid == str(rid) for _, rid, uid in seen), seen
    for o in outcomes:
        assert o.counters is not None
        assert o.counters.refused_peers == 0 and o.counters.bad_signatures == 0


def test_a_revoked_member_cannot_open_a_session() -> None:
    fed = create_local_federation(NAME, 3)
    guard = _guard(fed, 1, MemoryAudit())
    cert = certificate_der(load_certificate(fed.peers[2].token))
    assert guard.authenticate(cert, 2) is None
    assert fed.tracker.revocations is not None
    signed = fed.tracker.revocations.copy()
    fed.authority.revoke(signed, serial=None, identity=fed.peers[2].identity, reason="stolen")
    assert guard.revoke(signed.to_bytes().decode()) == [2]
    refusal = guard.authenticate(cert, 2)
    assert refusal is not None and refusal.startswith("revoked")
    # An unsigned list (anyone could write one) revokes nobody.
    forged = signed.copy()
    forged.entries.append({"identity": fed.peers[3].identity, "reason": "forged"})
    assert guard.revoke(forged.to_bytes().decode()) == []
    assert guard.authenticate(certificate_der(load_certificate(fed.peers[3].token)), 3) is None
