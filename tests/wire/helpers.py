"""Two wire connections wired back to back, in the spirit of h11's ConnectionPair."""

from __future__ import annotations

from fltorrent.wire import NEED_DATA, Event, Handshake, Message, WireConnection

FED = "test-fed"


class ConnectionPair:
    """``a`` and ``b`` are the two ends; ``send`` delivers one side's bytes to the other."""

    def __init__(self, *, handshake: bool = True, **kwargs: int) -> None:
        self.a = WireConnection(federation=FED, **kwargs)
        self.b = WireConnection(federation=FED, **kwargs)
        if handshake:
            self.send("a", Handshake(FED, 1, 7001))
            self.send("b", Handshake(FED, 2, 7002))

    def send(self, side: str, msg: Message) -> list[Event]:
        src, dst = (self.a, self.b) if side == "a" else (self.b, self.a)
        dst.receive_data(src.send(msg))
        return drain(dst)


def drain(conn: WireConnection) -> list[Event]:
    events: list[Event] = []
    while True:
        ev = conn.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)
