"""Piece availability and the piece picker: rarer and more important pieces first.

Availability counts, per known blob and piece, how many connected neighbours hold the piece.
The picker chooses, for one neighbour, the piece to start next among those the neighbour holds,
we lack, we want, and nobody is downloading yet.

Importance (the author's score per piece, in the manifest) is turned into ``LEVELS`` priority
levels by rank within its blob (level 3 when fewer than a quarter of the blob's pieces score
higher, level 0 for all when they score the same), so scores from authors with different
scales compare fairly. In the spirit of libtorrent's piece picker, a piece's priority is
``(availability + 1) * PRIO_FACTOR - level`` (lower first): one holder more weighs as much as
three levels, so rarity comes first (rare pieces spread before their holders leave, as BEP 3
advises) and importance reorders pieces whose availability differs by at most one holder
(the top level beats levels 1-3 one holder rarer, and ties with level 0). Ties go to the
higher share of the blob's top score, then to a random rank drawn once per piece (so that
neighbours do not all start on the same piece).

*Critical* mode (as a round's deadline nears, see ``Downloader.critical_from``): top-level
pieces of that round's blobs (not of the next round's, fetched early) ignore availability and
go before everything else, most important first, as libtorrent's top priority and
time-critical pieces do: what matters most must arrive before the round closes.
"""

from __future__ import annotations

import heapq
import random
from bisect import bisect_right
from collections.abc import Callable, Collection, Iterable, Sequence

from fltorrent.swarm.store import Blob

PieceKey = tuple[bytes, int]
LEVELS = 4
PRIO_FACTOR = 3


def importance_levels(scores: Sequence[float]) -> tuple[list[int], list[float]]:
    """Per piece, its priority level and its score as a share of the blob's top score.

    The level is ``LEVELS - 1`` minus ``LEVELS`` times the share of the blob's pieces scoring
    strictly higher (rounded down, at least 0): the best pieces are always on the top level,
    ties included; when every piece scores the same, all are on level 0 (no information).
    """
    n = len(scores)
    order = sorted(scores)
    top = order[-1] if order and order[-1] > 0 else 0.0
    if not order or order[0] == order[-1]:
        return [0] * n, [1.0 if top else 0.0] * n
    levels = [max(0, LEVELS - 1 - LEVELS * (n - bisect_right(order, s)) // n) for s in scores]
    shares = [s / top if top else 0.0 for s in scores]
    return levels, shares


def _missing_of(blob: Blob, subset: Collection[int]) -> list[int]:
    return [i for i in subset if not blob.has(i)]


class PiecePicker:
    """Availability bookkeeping and piece choice for one swarm."""

    def __init__(self, *, seed: int = 0) -> None:
        self.availability: dict[bytes, list[int]] = {}
        # Per blob, a random rank per piece (drawn once): the last tie-break, so that peers
        # start on different pieces without drawing a random number per candidate per pick.
        self._shuffle: dict[bytes, list[int]] = {}
        self._levels: dict[bytes, tuple[list[int], list[float]]] = {}
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
        self._levels.pop(blob_id, None)

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
        *,
        critical_round: int | None = None,
        subsets: Callable[[bytes], Collection[int] | None] | None = None,
    ) -> list[PieceKey]:
        """The best ``count`` pieces to start among ``(blob, neighbour's bits)``, best first.

        ``busy`` says whether a piece is already being downloaded; top-level pieces of blobs
        of rounds up to ``critical_round`` go first regardless of availability (critical mode,
        see the module docstring). ``subsets`` names, per blob, the only pieces wanted
        (``None``: all).
        """
        top = LEVELS - 1
        # A flat list, not a generator: this runs on every pipeline top-up.
        ranked: list[tuple[int, float, int, bytes, int]] = []
        add = ranked.append
        for blob, bits in candidates:
            blob_id = blob.blob_id
            avail = self.availability.get(blob_id)
            if avail is None:
                continue
            shuffle = self._shuffle[blob_id]
            levels, shares = self._levels_of(blob)
            critical = critical_round is not None and blob.manifest.round <= critical_round
            subset = subsets(blob_id) if subsets is not None else None
            for i in blob.missing if subset is None else _missing_of(blob, subset):
                if bits[i] and not busy((blob_id, i)):
                    level = levels[i]
                    if critical and level == top:
                        prio = -PRIO_FACTOR
                    else:
                        prio = (avail[i] + 1) * PRIO_FACTOR - level
                    add((prio, -shares[i], shuffle[i], blob_id, i))
        if not ranked:
            return []
        best = [min(ranked)] if count <= 1 else heapq.nsmallest(count, ranked)
        return [(blob_id, i) for *_, blob_id, i in best]

    def _levels_of(self, blob: Blob) -> tuple[list[int], list[float]]:
        cached = self._levels.get(blob.blob_id)
        if cached is None:
            cached = self._levels[blob.blob_id] = importance_levels(blob.manifest.importance)
        return cached

    def available_unstarted(
        self,
        blobs: Iterable[Blob],
        busy: Callable[[PieceKey], bool],
        *,
        subsets: Callable[[bytes], Collection[int] | None] | None = None,
    ) -> bool:
        """Whether some wanted piece is held by a neighbour and nobody downloads it yet."""
        for blob in blobs:
            avail = self.availability.get(blob.blob_id)
            if avail is None:
                continue
            subset = subsets(blob.blob_id) if subsets is not None else None
            for i in blob.missing if subset is None else _missing_of(blob, subset):
                if avail[i] > 0 and not busy((blob.blob_id, i)):
                    return True
        return False
