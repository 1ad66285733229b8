"""A peer's side of the tracker connection: register (token and proof of its key), receive the
welcome, then membership events until the federation is done. See :mod:`fltorrent.tracker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fltorrent.admission import encode_token, register_message
from fltorrent.control import (
    AllDone,
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
    Welcome,
)
from fltorrent.errors import (
    AuthError,
    BrokenResourceError,
    ConnectError,
    RemoteProtocolError,
    TrackerError,
    TransportError,
)
from fltorrent.net.base import Address, Connection, Transport
from fltorrent.security.credentials import Credentials

log = logging.getLogger(__name__)

REPORT_ORDER_WAIT = 10.0  # seconds a progress report waits for the one before it to leave


class TrackerClient:
    """A peer's side of the tracker connection (``credentials``: what proves its membership)."""

    def __init__(self, conn: Connection, credentials: Credentials | None = None) -> None:
        self.channel = LineChannel(conn)
        self.credentials = credentials
        self.on_revoked: Callable[[str], None] | None = None
        self.welcome: Welcome | None = None
        self.left: set[int] = set()
        self.all_done = asyncio.Event()
        self.lost = asyncio.Event()
        self.finished = False  # we said we are done (or are closing): a lost link is expected
        self._last_report: asyncio.Future[None] | None = None
        self.on_left: Callable[[int], None] | None = None
        self.on_joined: Callable[[int, Address, int, str], None] | None = None
        self.on_skipped: Callable[[int, int], None] | None = None
        self.on_link: Callable[[int, Address], None] | None = None

    @classmethod
    async def connect(
        cls,
        transport: Transport,
        address: Address,
        *,
        timeout: float = 10.0,
        credentials: Credentials | None = None,
    ) -> TrackerClient:
        """Dial the tracker, retrying until ``timeout`` (it may be starting up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                conn = await transport.connect(*address, timeout=max(0.1, deadline - loop.time()))
                return cls(conn, credentials)
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
        try:
            async with asyncio.timeout(timeout):
                hello = await self.channel.receive()
                if not isinstance(hello, Hello):
                    raise TrackerError("the tracker did not say hello")
                await self.channel.send(
                    Register(
                        federation=federation,
                        peer_id=peer_id,
                        host=host,
                        port=port,
                        **self._proof(hello),
                    )
                )
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

    def _proof(self, hello: Hello) -> dict[str, str]:
        """Our token and our signature over the hello's nonce; over TLS, a check that the other
        end holds a tracker token of our federation (a member cannot pose as the tracker)."""
        creds = self.credentials
        if creds is None:
            return {}
        cert = self.channel.conn.peer_certificate
        if cert is not None:
            try:
                role = creds.verifier.member(cert).role
            except AuthError as exc:
                raise TrackerError(f"the tracker's certificate does not hold: {exc}") from None
            if role != "tracker":
                raise TrackerError(f"the tracker presented a {role} token")
        proof = creds.key.sign(register_message(hello.nonce, hello.federation))
        return {"token": encode_token(creds.member().token), "proof": proof.hex()}

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
                            self.on_joined(msg.peer_id, (msg.host, msg.port), msg.round, msg.token)
                    case Link():
                        if self.on_link is not None:
                            self.on_link(msg.peer_id, (msg.host, msg.port))
                    case Skipped():
                        if self.on_skipped is not None:
                            self.on_skipped(msg.peer_id, msg.round)
                    case AllDone():
                        self.all_done.set()
                    case Revoked():
                        if self.on_revoked is not None:
                            self.on_revoked(msg.revocations)
                    case Refused():
                        log.warning("tracker: %s", msg.reason)
                        return
                    case _:
                        raise RemoteProtocolError(f"unexpected {msg.type} from the tracker")
        except (RemoteProtocolError, TransportError) as exc:
            expected = self.finished or self.all_done.is_set()
            log.log(
                logging.DEBUG if expected else logging.WARNING, "tracker connection lost: %s", exc
            )
        finally:
            self.lost.set()

    def progress(self, msg: Progress | Skip | Done) -> Coroutine[Any, Any, None]:
        """Report progress; a lost tracker is not fatal to the peer.

        Reports leave in the order of these calls, even when the returned coroutines run as
        separate tasks (a round's last report never comes after ``Done``): each waits for the
        one before it (a bounded wait: one whose task never ran does not block the rest)."""
        if isinstance(msg, Done):
            self.finished = True
        previous, sent = self._last_report, asyncio.get_running_loop().create_future()
        self._last_report = sent
        return self._send_report(msg, previous, sent)

    async def _send_report(
        self,
        msg: Progress | Skip | Done,
        previous: asyncio.Future[None] | None,
        sent: asyncio.Future[None],
    ) -> None:
        try:
            if previous is not None and not previous.done():
                await asyncio.wait({previous}, timeout=REPORT_ORDER_WAIT)
            with contextlib.suppress(TransportError, BrokenResourceError):
                await self.channel.send(msg)
        finally:
            if not sent.done():
                sent.set_result(None)

    async def aclose(self) -> None:
        """Close the connection."""
        self.finished = True
        await self.channel.conn.aclose()
