"""What a peer publishes for one round, and how a receiver turns each piece back into a vector.

Two encodings, told apart by the manifest's metadata (the chunk-plan digest, plus one marker
byte when compressed):

* **raw** (metadata = plan digest): piece ``c`` is chunk ``c`` of the author's trained model,
  in the model's own dtypes. The receiver averages these parameters directly.
* **compressed delta** (metadata = plan digest + ``b"d"``): piece ``c`` is the author's *update*
  for chunk ``c`` (trained parameters minus the author's parameters at the start of the round),
  encoded by :mod:`fltorrent.learn.compress` (top-k with error feedback or 8-bit quantization).
  The receiver adds it to *its own* round-start parameters. On a complete graph with full
  delivery every peer starts the round from the same aggregate, so this equals the author's
  model up to compression error; where peers' models differ (sparse topologies, partial
  delivery) it is the usual approximation of compressed decentralized averaging, which moves
  each peer by the average of the others' updates. The author aggregates its own *decoded*
  update, so that every peer that holds the same pieces computes the same model.

  Limitation: deltas never carry absolute parameters, so a peer whose model drifted from its
  neighbours' (it rejoined after rounds away, or missed updates) is only pulled back by the raw
  updates of uncompressed (high-tier) peers; in a federation where every peer compresses, it
  keeps its offset. A delta that does not fit float32 (training diverged) is published raw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fltorrent.errors import LearnError
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.compress import (
    Codec,
    CompressionError,
    ErrorFeedback,
    decode,
    encoded_size_bound,
)

DELTA_MARKER = b"d"


@dataclass(frozen=True)
class EncodedUpdate:
    """Pieces to publish, the manifest metadata, the vectors the author itself aggregates."""

    pieces: list[bytes]
    meta: bytes
    vectors: list[np.ndarray]
    bytes_saved: int


class UpdateEncoder:
    """One author's encoder; keeps the error-feedback memory across rounds."""

    def __init__(self, plan: ChunkPlan, *, topk_ratio: float = 0.1, seed: int = 0) -> None:
        self.plan = plan
        self.topk_ratio = topk_ratio
        self.seed = seed
        self._feedback: dict[Codec, ErrorFeedback] = {}

    def encode(
        self,
        codec: Codec,
        *,
        before: Sequence[np.ndarray],
        after: Sequence[np.ndarray],
        raw_pieces: list[bytes],
    ) -> EncodedUpdate:
        """Encode one round's update (``after`` trained, ``before`` the round-start model)."""
        digest = self.plan.digest()
        if codec == "none":
            return EncodedUpdate(raw_pieces, digest, list(after), 0)
        fb = self._feedback.get(codec)
        if fb is None:
            fb = self._feedback[codec] = ErrorFeedback(codec, ratio=self.topk_ratio, seed=self.seed)
        pieces = []
        vectors = []
        try:
            for c, (b, a) in enumerate(zip(before, after, strict=True)):
                data = fb.compress(c, a - b)
                pieces.append(data)
                vectors.append(b + decode(data, len(b)))
        except CompressionError:
            # A delta beyond float32 (training diverged): publish the model as it is.
            return EncodedUpdate(raw_pieces, digest, list(after), 0)
        saved = sum(len(r) for r in raw_pieces) - sum(len(p) for p in pieces)
        return EncodedUpdate(pieces, digest + DELTA_MARKER, vectors, saved)


def manifest_problem(plan: ChunkPlan, meta: bytes, piece_sizes: Sequence[int]) -> str | None:
    """Why a manifest's metadata and piece sizes cannot belong to an update of ``plan``."""
    digest = plan.digest()
    sizes = tuple(piece_sizes)
    if meta == digest:
        if sizes != tuple(c.nbytes for c in plan.chunks):
            return "piece count or sizes do not match the chunk plan"
        return None
    if meta == digest + DELTA_MARKER:
        if len(sizes) != plan.num_chunks:
            return "piece count does not match the chunk plan"
        for c, size in zip(plan.chunks, sizes, strict=True):
            bound = max(encoded_size_bound(c.numel, k, 1.0) for k in ("topk", "q8"))
            if size > bound:
                return f"compressed piece of {size} bytes exceeds its bound {bound}"
        return None
    return "chunk plan differs from ours (another model or chunking)"


def piece_vector(
    plan: ChunkPlan, meta: bytes, index: int, data: bytes | bytearray | memoryview, base: np.ndarray
) -> np.ndarray:
    """The parameters piece ``index`` stands for; raises on a malformed compressed piece."""
    if meta.endswith(DELTA_MARKER) and meta != plan.digest():
        return base + decode(bytes(data), len(base))
    return plan.chunk_to_vector(index, data)


Decoded = dict[int, tuple[float, dict[int, np.ndarray]]]


def decode_updates(
    plan: ChunkPlan,
    base: Sequence[np.ndarray],
    held: Mapping[int, tuple[float, bytes, Sequence[bytes | bytearray | memoryview | None]]],
) -> tuple[Decoded, dict[int, str]]:
    """Per author (weight, meta, pieces or None): its weight and decoded chunk vectors.

    An author with a hash-verified but undecodable piece sent garbage on purpose, and one whose
    values are not all finite (NaN or infinity: one such value makes a mean useless for every
    peer): its whole update is dropped (second result: author -> reason).
    """
    decoded: Decoded = {}
    dropped: dict[int, str] = {}
    for a in sorted(held):
        weight, meta, pieces = held[a]
        try:
            vectors = {
                c: piece_vector(plan, meta, c, data, base[c])
                for c, data in enumerate(pieces)
                if data is not None
            }
        except LearnError as exc:
            dropped[a] = str(exc)
            continue
        bad = next((c for c, v in vectors.items() if not np.isfinite(v).all()), None)
        if bad is not None:
            dropped[a] = f"chunk {bad} holds values that are not finite (NaN or infinity)"
            continue
        decoded[a] = (weight, vectors)
    return decoded, dropped
