"""TLS between members: mutual authentication by token, and what an attacker on the path sees.

Every connection here is over loopback (127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fltorrent.errors import BrokenResourceError, ConnectError, SecurityError
from fltorrent.net.base import Address, Connection
from fltorrent.net.tcp import TcpTransport
from fltorrent.security import Credentials, TokenVerifier, create_local_federation
from tests.aio import aio

HOST = "127.0.0.1"
SECRET = b"secret-model-bytes"
PAYLOAD = SECRET * 4000  # 72 kB: several TLS records
APPLICATION_DATA = 23  # TLS record type (in TLS 1.3 also that of the encrypted handshake)


def _transport(creds: Credentials) -> TcpTransport:
    server, client = creds.tls_contexts()
    assert isinstance(server, ssl.SSLContext)
    assert isinstance(client, ssl.SSLContext)
    return TcpTransport((server, client), handshake_timeout=5.0)


class Recorder:
    """A connection handler that notes each call and what it received."""

    def __init__(self, reply: bytes = b"") -> None:
        self.calls = 0
        self.received = bytearray()
        self.certificates: list[bytes | None] = []
        self.error: BaseException | None = None
        self.reply = reply
        self.done = asyncio.Event()

    async def __call__(self, conn: Connection) -> None:
        self.calls += 1
        self.certificates.append(conn.peer_certificate)
        try:
            while data := await conn.receive():
                self.received += data
                if len(self.received) >= len(PAYLOAD):
                    break
            if self.reply:
                await conn.send(self.reply)
        except BrokenResourceError as exc:
            self.error = exc
        finally:
            self.done.set()


async def _receive_all(conn: Connection, size: int) -> bytes:
    data = bytearray()
    while len(data) < size and (chunk := await conn.receive()):
        data += chunk
    return bytes(data)


@aio(timeout=30)
async def test_members_connect_and_see_each_others_token() -> None:
    fed = create_local_federation("tls", 2)
    verifier = TokenVerifier(fed.peers[1].federation)
    handler = Recorder(reply=b"pong")
    listener = await _transport(fed.peers[1]).listen(HOST, 0, handler)
    try:
        conn = await _transport(fed.peers[2]).connect(*listener.address, timeout=5)
        await conn.send(PAYLOAD)
        await asyncio.wait_for(handler.done.wait(), 10)
        assert await _receive_all(conn, 4) == b"pong"
        assert bytes(handler.received) == PAYLOAD
        # Each side proved the key of the token it presented.
        server_sees = handler.certificates[0]
        assert server_sees is not None
        assert verifier.member(server_sees).peer_id == 2
        client_sees = conn.peer_certificate
        assert client_sees is not None
        assert verifier.member(client_sees).peer_id == 1
        await conn.aclose()
    finally:
        await listener.aclose()


@aio(timeout=30)
async def test_member_of_another_federation_cannot_connect() -> None:
    ours, theirs = create_local_federation("ours", 2), create_local_federation("theirs", 1)
    handler = Recorder()
    listener = await _transport(ours.peers[1]).listen(HOST, 0, handler)
    try:
        with pytest.raises(ConnectError, match="TLS"):
            await _transport(theirs.peers[1]).connect(*listener.address, timeout=5)
        # Nor can one of ours reach a listener of theirs.
        foreign = await _transport(theirs.peers[1]).listen(HOST, 0, Recorder())
        try:
            with pytest.raises(ConnectError, match="TLS"):
                await _transport(ours.peers[2]).connect(*foreign.address, timeout=5)
        finally:
            await foreign.aclose()
        await asyncio.sleep(0.3)
        assert handler.calls == 0
        # The listener still serves members.
        conn = await _transport(ours.peers[2]).connect(*listener.address, timeout=5)
        await conn.send(PAYLOAD)
        await asyncio.wait_for(handler.done.wait(), 10)
        assert handler.calls == 1
        await conn.aclose()
    finally:
        await listener.aclose()


@aio(timeout=30)
async def test_tls_client_without_a_token_gets_nothing() -> None:
    fed = create_local_federation("tls", 1)
    handler = Recorder(reply=b"server-data")
    listener = await _transport(fed.peers[1]).listen(HOST, 0, handler)
    try:
        # Trusts the federation, but has no token to present.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(cadata=fed.peers[1].federation.decode())
        received = b""
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(*listener.address, ssl=ctx)
            writer.write(SECRET)
            received = await asyncio.wait_for(reader.read(), 5)  # until the server hangs up
        except (ssl.SSLError, ConnectionError):
            pass  # the server's alert (certificate required) may surface as an error instead
        finally:
            if writer is not None:
                writer.close()
        await asyncio.sleep(0.2)
        assert received == b""
        assert handler.calls == 0
    finally:
        await listener.aclose()


@aio(timeout=30)
async def test_plaintext_client_gets_no_application_data() -> None:
    fed = create_local_federation("tls", 1)
    handler = Recorder(reply=b"server-data")
    listener = await _transport(fed.peers[1]).listen(HOST, 0, handler)
    try:
        reader, writer = await asyncio.open_connection(*listener.address)
        writer.write(b"HELLO " + SECRET + b"\r\n\r\n")
        await writer.drain()
        answer = b""
        with contextlib.suppress(ConnectionError):
            answer = await asyncio.wait_for(reader.read(), 5)  # until the server hangs up
        writer.close()
        assert b"server-data" not in answer
        await asyncio.sleep(0.2)
        assert handler.calls == 0
        assert SECRET not in handler.received
    finally:
        await listener.aclose()


class Relay:
    """A man in the middle on plain TCP: forwards bytes both ways, keeps a copy of them, and
    can rewrite the first large TLS record of one direction."""

    def __init__(
        self,
        target: Address,
        tamper: Callable[[bytearray], None] | None = None,
        *,
        upstream: bool = True,
    ) -> None:
        self.target = target
        self.tamper = tamper
        self.upstream = upstream  # tamper with client -> server (else server -> client)
        self.seen = bytearray()
        self.tampered = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Address:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, self.upstream)),
            asyncio.create_task(self._pump(up_reader, writer, not self.upstream)),
        ]
        self._tasks.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tampered: bool
    ) -> None:
        pending = bytearray()
        try:
            while data := await reader.read(65536):
                self.seen += data
                if tampered and self.tamper is not None:
                    pending += data
                    data = self._records(pending)
                if data:
                    writer.write(data)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _records(self, pending: bytearray) -> bytes:
        """The whole TLS records at the start of ``pending`` (taken out of it), the first large
        application-data record rewritten; what is left waits for the rest of its record."""
        out = bytearray()
        while len(pending) >= 5:
            size = 5 + int.from_bytes(pending[3:5], "big")
            if len(pending) < size:
                break
            record = pending[:size]
            del pending[:size]
            # Handshake records are small; a record of application data is up to 16 kB.
            if record[0] == APPLICATION_DATA and size > 8000 and not self.tampered:
                assert self.tamper is not None
                self.tamper(record)
                self.tampered += 1
            out += record
        return bytes(out)


@aio(timeout=30)
async def test_relay_in_the_middle_sees_no_plaintext() -> None:
    fed = create_local_federation("tls", 2)
    verifier = TokenVerifier(fed.peers[1].federation)
    handler = Recorder(reply=b"reply-" + SECRET)
    listener = await _transport(fed.peers[1]).listen(HOST, 0, handler)
    relay = Relay(listener.address)
    try:
        conn = await _transport(fed.peers[2]).connect(*await relay.start(), timeout=5)
        await conn.send(PAYLOAD)
        await asyncio.wait_for(handler.done.wait(), 10)
        assert await _receive_all(conn, 24) == b"reply-" + SECRET
        assert bytes(handler.received) == PAYLOAD
        # The handshake went through the relay, and still proved who is at each end.
        certificate = conn.peer_certificate
        assert certificate is not None
        assert verifier.member(certificate).peer_id == 1
        assert len(relay.seen) > len(PAYLOAD)  # the relay did carry the traffic
        assert SECRET not in relay.seen
        assert SECRET[:8] not in relay.seen
        await conn.aclose()
    finally:
        await relay.aclose()
        await listener.aclose()


def _flip(record: bytearray) -> None:
    record[len(record) // 2] ^= 0x01


@aio(timeout=30)
async def test_byte_flipped_toward_the_server_breaks_the_connection() -> None:
    fed = create_local_federation("tls", 2)
    handler = Recorder()
    listener = await _transport(fed.peers[1]).listen(HOST, 0, handler)
    relay = Relay(listener.address, _flip, upstream=True)
    try:
        conn = await _transport(fed.peers[2]).connect(*await relay.start(), timeout=5)
        await conn.send(PAYLOAD)
        await asyncio.wait_for(handler.done.wait(), 10)
        assert relay.tampered == 1
        got = bytes(handler.received)
        # The receiver ends (error or end of stream) and never gets the altered bytes.
        assert len(got) < len(PAYLOAD)
        assert got == PAYLOAD[: len(got)]
        await conn.aclose()
    finally:
        await relay.aclose()
        await listener.aclose()


@aio(timeout=30)
async def test_byte_flipped_toward_the_client_breaks_the_connection() -> None:
    fed = create_local_federation("tls", 2)

    async def send_payload(conn: Connection) -> None:
        with contextlib.suppress(BrokenResourceError):
            await conn.send(PAYLOAD)
            await conn.receive()  # until the client hangs up

    listener = await _transport(fed.peers[1]).listen(HOST, 0, send_payload)
    relay = Relay(listener.address, _flip, upstream=False)
    try:
        conn = await _transport(fed.peers[2]).connect(*await relay.start(), timeout=5)
        got = bytearray()
        with contextlib.suppress(BrokenResourceError):
            while chunk := await conn.receive():
                got += chunk
        assert relay.tampered == 1
        assert len(got) < len(PAYLOAD)
        assert bytes(got) == PAYLOAD[: len(got)]
        await conn.aclose()
    finally:
        await relay.aclose()
        await listener.aclose()


def test_credentials_in_der_files_work_as_pem_ones(tmp_path: Path) -> None:
    # `keys show` accepts DER, so `fltorrent peer` must too (TLS contexts load PEM only).
    fed = create_local_federation("der", 1)
    fed.save(tmp_path)
    for name in ("federation.crt", "peer-1.token"):
        cert = x509.load_pem_x509_certificate((tmp_path / name).read_bytes())
        (tmp_path / f"{name}.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    creds = Credentials.load(
        tmp_path / "peer-1.key", tmp_path / "peer-1.token.der", tmp_path / "federation.crt.der"
    )
    assert creds.member().peer_id == 1
    server, client = creds.tls_contexts()
    assert server.verify_mode == client.verify_mode == ssl.CERT_REQUIRED
    (tmp_path / "junk.der").write_bytes(b"\x30\x03\x02\x01\x05")
    with pytest.raises(SecurityError, match="not a token"):
        Credentials.load(
            tmp_path / "peer-1.key", tmp_path / "junk.der", tmp_path / "federation.crt"
        )


@aio(timeout=30)
async def test_an_expired_token_cannot_connect() -> None:
    fed = create_local_federation("tls", 1)
    key = Ed25519PrivateKey.generate()
    expired = fed.authority.issue(key.public_key(), peer_id=2, valid_for=dt.timedelta(seconds=-1))
    stale = Credentials(key, expired, fed.peers[1].federation)
    handler = Recorder(reply=b"server-data")
    listener = await _transport(fed.peers[1]).listen(HOST, 0, handler)
    try:
        received = b""
        try:  # TLS 1.3: the server judges the client's certificate after the client finished
            conn = await _transport(stale).connect(*listener.address, timeout=5)
            await conn.send(SECRET)
            received = await _receive_all(conn, 1)
            await conn.aclose()
        except (ConnectError, BrokenResourceError):
            pass
        await asyncio.sleep(0.2)
        assert received == b""
        assert handler.calls == 0
        # And an expired listener is refused by a member that dials it.
        expired_listener = await _transport(stale).listen(HOST, 0, Recorder())
        try:
            with pytest.raises(ConnectError, match="TLS"):
                await _transport(fed.peers[1]).connect(*expired_listener.address, timeout=5)
        finally:
            await expired_listener.aclose()
    finally:
        await listener.aclose()
