"""Piece availability and the piece picker: rarest first, importance breaks ties.

Availability counts, per known blob and piece, how many connected neighbours hold the piece.
The picker chooses, for one neighbour, the piece to start next among those the neighbour holds,
we lack, we want, and nobody is downloading yet: the lowest availability first (so rare pieces
spread before their holders leave, as BEP 3 advises), then the highest importance, then at
random (so neighbours do not all start on the same piece).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Iterator, Sequence

from fltorrent.swarm.store import Blob

PieceKey = tuple[bytes, int]


class PiecePicker:
    """Availability bookkeeping and piece choice for one swarm."""

    def __init__(self, *, seed: int = 0) -> None:
        self.availability: dict[bytes, list[int]] = {}
        # Per blob, a random rank per piece (drawn once): the last tie-break, so that peers
        # start on different pieces without drawing a random number per candidate per pick.
        self._shuffle: dict[bytes, list[int]] = {}
        self._rng = random.Random(seed)

    def track(self, blob_id: bytes, num_pieces: int) -> None:
        """Start counting availability for a blob (idempotent)."""
        if blob_id not in self.availability:
            self.availability[blob_id] = [0] * num_pieces
            order = list(range(num_pieces))
            self._rng.shuffle(order)
            self._shuffle[blob_id] = order

    def forget(self, blob_id: bytes) -> None:
        """Stop counting availability for a blob."""
        self.availability.pop(blob_id, None)
        self._shuffle.pop(blob_id, None)

    def add(self, blob_id: bytes, bits: Iterable[int], sign: int = 1) -> None:
        """Count (or with ``sign=-1`` uncount) a neighbour's pieces of a blob."""
        avail = self.availability.get(blob_id)
        if avail is None:
            return
        for i, held in enumerate(bits):
            if held:
                avail[i] += sign

    def add_piece(self, blob_id: bytes, piece: int, sign: int = 1) -> None:
        """Count one more (or, with ``sign=-1``, one fewer) holder of one piece."""
        avail = self.availability.get(blob_id)
        if avail is not None:
            avail[piece] += sign

    def pick(
        self,
        candidates: Iterable[tuple[Blob, Sequence[int]]],
        busy: Callable[[PieceKey], bool],
        count: int = 1,
    ) -> list[PieceKey]:
        """The best ``count`` pieces to start among ``(blob, neighbour's bits)``, best first.

        ``busy`` says whether a piece is already being downloaded.
        """

        def ranked() -> Iterator[tuple[int, float, int, bytes, int]]:
            for blob, bits in candidates:
                blob_id = blob.blob_id
                avail = self.availability.get(blob_id)
                if avail is None:
                    continue
                shuffle = self._shuffle[blob_id]
                importance = blob.manifest.importance
                for i in blob.missing:
                    if bits[i] and not busy((blob_id, i)):
                        yield avail[i], -importance[i], shuffle[i], blob_id, i

        best = heapq.nsmallest(max(1, count), ranked())
        return [(blob_id, i) for *_, blob_id, i in best]

    def available_unstarted(self, blobs: Iterable[Blob], busy: Callable[[PieceKey], bool]) -> bool:
        """Whether some wanted piece is held by a neighbour and nobody downloads it yet."""
        for blob in blobs:
            avail = self.availability.get(blob.blob_id)
            if avail is None:
                continue
            for i in blob.missing:
                if avail[i] > 0 and not busy((blob.blob_id, i)):
                    return True
        return False
