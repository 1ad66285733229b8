"""The tracker's control protocol: one JSON object per line, each a pydantic model with a
``type`` tag, at most 16 MiB per line from the tracker and 64 KiB from a peer
(``docs/PROTOCOL.md``, "Tracker control messages").

Malformed, oversized or unknown lines are a :class:`~fltorrent.errors.RemoteProtocolError`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from fltorrent.errors import RemoteProtocolError
from fltorrent.net.base import Connection

# What the tracker sends: a welcome carries every member's address and token (about 500 bytes
# each), so 16 MiB is room for some 30,000 members.
MAX_LINE = 16 << 20
MAX_ROUND = 1_000_000  # rounds a member may report (a federation runs far fewer)
PEER_LINE = 64 * 1024  # what a peer sends the tracker (register, progress, ...) is small
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _host(value: str) -> str:
    """An IP address or a DNS host name (RFC 1123 labels, at most 253 characters): a peer
    dials what the tracker passes on, and a name such as ``..`` or one with a NUL must be
    refused where it enters, not fail in every peer's dialer."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    if not 0 < len(name) <= 253 or not all(_LABEL.fullmatch(x) for x in name.split(".")):
        raise ValueError("not an IP address or a host name")
    return value


Host = Annotated[str, AfterValidator(_host)]
Port = Annotated[int, Field(ge=1, le=65535)]


class ControlMessage(BaseModel):
    """Base of every control message."""

    model_config = ConfigDict(extra="forbid", frozen=True)


Token = Annotated[str, Field(max_length=12 * 1024)]  # base64 of a DER certificate


class Hello(ControlMessage):
    """Tracker → peer, first on every connection: a fresh nonce the registration signs."""

    type: Literal["hello"] = "hello"
    federation: str
    nonce: str = Field(pattern=r"^[0-9a-f]{32}$")


class Register(ControlMessage):
    """Peer → tracker: join the federation, with the peer's token and, as proof that it holds
    the token's key, its signature over the hello's nonce."""

    type: Literal["register"] = "register"
    federation: str | None = None  # None: whatever federation this tracker serves
    peer_id: int | None = Field(None, ge=1)
    host: Host
    port: Port
    token: Token = ""
    proof: str = Field("", pattern=r"^([0-9a-f]{128})?$")


class Progress(ControlMessage):
    """Peer → tracker: where the peer is (for status and progress display)."""

    type: Literal["progress"] = "progress"
    round: int = Field(ge=0, le=MAX_ROUND)
    phase: str = Field(max_length=32)
    completion: float = Field(0.0, ge=0.0, le=1.0)
    accuracy: float | None = Field(None, ge=0.0, le=1.0)
    # With phase "evaluated": the peer's whole record of the round (a metrics.jsonl line), for
    # a tracker that writes the run directory; the tracker validates it before use.
    record: dict[str, Any] | None = None


class Skip(ControlMessage):
    """Peer -> tracker: I publish no update in this round."""

    type: Literal["skip"] = "skip"
    round: int = Field(ge=1)


class Done(ControlMessage):
    """Peer → tracker: finished its last round (still seeding)."""

    type: Literal["done"] = "done"


class Welcome(ControlMessage):
    """Tracker → peer: the federation is complete."""

    type: Literal["welcome"] = "welcome"
    federation: str
    peer_id: int
    members: dict[int, tuple[Host, Port]]
    neighbours: list[int]
    config: dict[str, Any]
    round: int = 0  # the highest round a live member reported; a rejoining peer starts there
    departed: list[int] = Field(default_factory=list)  # members gone when this was sent
    degrees: dict[int, int] = Field(default_factory=dict)  # each member's degree, as built
    tokens: dict[int, Token] = Field(default_factory=dict)  # each member's token
    run: str = Field("", pattern=r"^([0-9a-f]{32})?$")  # this run's nonce: signatures bind it
    revocations: str = ""  # the federation's signed revocation list (JSON)


class Left(ControlMessage):
    """Tracker → peer: a member's connection to the tracker ended."""

    type: Literal["left"] = "left"
    peer_id: int


class Joined(ControlMessage):
    """Tracker -> peer: a member that had left registered again (new address)."""

    type: Literal["joined"] = "joined"
    peer_id: int
    host: Host
    port: Port
    round: int = 0  # the first round it takes part in
    token: Token = ""


class Link(ControlMessage):
    """Tracker -> peer: a new neighbour (the overlay was repaired after members left)."""

    type: Literal["link"] = "link"
    peer_id: int
    host: Host
    port: Port


class Skipped(ControlMessage):
    """Tracker -> peer: a member publishes no update in this round."""

    type: Literal["skipped"] = "skipped"
    peer_id: int
    round: int


class AllDone(ControlMessage):
    """Tracker → peer: every live member has finished; stop seeding."""

    type: Literal["all_done"] = "all_done"


class Revoked(ControlMessage):
    """Tracker -> peer: the admin revoked members; the newly signed list."""

    type: Literal["revoked"] = "revoked"
    revocations: str


class Refused(ControlMessage):
    """Tracker → peer: registration refused."""

    type: Literal["refused"] = "refused"
    reason: str


TrackerMessage = Annotated[
    Register
    | Progress
    | Skip
    | Done
    | Welcome
    | Left
    | Joined
    | Link
    | Skipped
    | AllDone
    | Hello
    | Revoked
    | Refused,
    Field(discriminator="type"),
]
_ADAPTER: TypeAdapter[TrackerMessage] = TypeAdapter(TrackerMessage)


def encode(msg: ControlMessage) -> bytes:
    """One JSON line."""
    return msg.model_dump_json().encode() + b"\n"


class LineChannel:
    """JSON-line messages over a :class:`Connection`, with a line-length limit."""

    def __init__(self, conn: Connection, *, max_line: int = MAX_LINE) -> None:
        self.conn = conn
        self.max_line = max_line
        self._buf = bytearray()

    async def send(self, msg: ControlMessage) -> None:
        await self.conn.send(encode(msg))

    async def receive(self) -> TrackerMessage | None:
        """Next message, or ``None`` at end of stream."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                try:
                    return _ADAPTER.validate_json(line)
                except ValidationError as exc:
                    first = exc.errors()[0]
                    raise RemoteProtocolError(
                        f"bad tracker message: {first['msg']} at {first['loc']}"
                    ) from None
            if len(self._buf) > self.max_line:
                raise RemoteProtocolError(f"tracker message over {self.max_line} bytes")
            data = await self.conn.receive()
            if not data:
                if self._buf:
                    raise RemoteProtocolError("connection closed inside a message")
                return None
            self._buf += data
