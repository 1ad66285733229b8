"""Upload slots: piece data goes to a few neighbours at a time, in turns.

Why. A peer that serves every requester at once splits its uplink so many ways that none of
them finishes a piece early; a piece then spreads as a slow fan-out from its first holder
instead of doubling (each receiver relays it as soon as it is whole). BitTorrent's answer is
its choking algorithm, four unchoked peers at a time; this is the same idea without the
protocol messages: requests are accepted from every neighbour, but the blocks of only
``slots`` neighbours are written at once. A neighbour keeps its slot while it has requests
queued, up to ``quantum`` bytes when others are waiting; then it goes to the back of the line.
Control messages (haves, requests, manifests) never wait for a slot.
"""

from __future__ import annotations

from typing import Protocol

UNLIMITED = 1 << 62


class _Uploader(Protocol):
    def wake(self) -> None: ...

    def has_uploads(self) -> bool: ...


class UploadSlots:
    """Turns of neighbours at our uplink; ``slots=0`` serves everyone at once."""

    def __init__(self, slots: int, quantum: int) -> None:
        self.slots = slots
        self.quantum = quantum
        self._active: dict[_Uploader, int] = {}  # holder -> bytes sent in this turn
        self._waiting: dict[_Uploader, None] = {}  # in arrival order

    def may_send(self, who: _Uploader) -> bool:
        """Whether ``who`` may write piece data now (takes a free slot if there is one)."""
        if self.slots <= 0 or who in self._active:
            return True
        if len(self._active) < self.slots and not self._waiting:
            self._active[who] = 0
            return True
        self._waiting[who] = None
        return False

    def sent(self, who: _Uploader, nbytes: int) -> None:
        """``who`` wrote ``nbytes`` of piece data; ends its turn when done or past the quantum."""
        if self.slots <= 0 or who not in self._active:
            return
        used = self._active[who] + nbytes
        if not who.has_uploads():
            del self._active[who]
        elif used >= self.quantum and self._waiting:
            del self._active[who]
            self._waiting[who] = None
        else:
            self._active[who] = used
            return
        self._grant()

    def forget(self, who: _Uploader) -> None:
        """``who`` is gone: free its slot or its place in line."""
        self._waiting.pop(who, None)
        if self._active.pop(who, None) is not None:
            self._grant()

    def budget(self, who: _Uploader) -> int:
        """Bytes ``who`` may still write in this turn before others get theirs."""
        if self.slots <= 0 or not self._waiting:
            return UNLIMITED  # nobody waits: the writer's own batch size applies
        return max(1, self.quantum - self._active.get(who, 0))

    def _grant(self) -> None:
        while self._waiting and len(self._active) < self.slots:
            who = next(iter(self._waiting))
            del self._waiting[who]
            if who.has_uploads():
                self._active[who] = 0
                who.wake()
