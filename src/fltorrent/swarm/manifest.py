"""Manifests: the signed-later description of one blob (one author's topic for one round).

A manifest lists, per piece, its size, its SHA-256 and an importance score, plus the author,
the round, the topic (an update, an aggregated chunk range, a model), the author's sample
count and opaque metadata (the learn layer puts its chunk-plan digest there). The blob id is
the SHA-256 of the encoded manifest, as a torrent's info-hash is the hash of its info
dictionary: whoever holds the id can check both manifest and pieces.

Encoding (all integers big-endian)::

    magic "FLTM" | version u8 | author u32 | round u32 | num_samples u64
    | num_pieces u32 | meta_len u32 | meta
    | num_pieces x (size u32 | importance f32 | sha256 32 bytes)

Version 1 is an update (the topic every plan exchanges); version 2 inserts the topic
(``kind u8 | first u32 | last u32``) after ``meta_len`` and is used for every other topic. The
encoding stays canonical: an update in version 2 is refused.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from fltorrent.errors import ManifestError, RemoteProtocolError
from fltorrent.wire import TOPIC_SIZE, UPDATE, Topic

MAGIC = b"FLTM"
VERSION = 1  # an update
VERSION_TOPIC = 2  # any other topic, which follows the header
MAX_PIECES = 1 << 20
MAX_META = 1 << 16
MAX_PIECE_SIZE = 1 << 30
_HEAD = struct.Struct(">4sBIIQII")
_ENTRY = struct.Struct(">If32s")


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The hash used for blob ids and pieces."""
    return hashlib.sha256(data).digest()


@dataclass(frozen=True)
class Manifest:
    """What a blob is made of. Immutable; ``blob_id`` is derived from the encoding."""

    author: int
    round: int
    num_samples: int
    piece_sizes: tuple[int, ...]
    piece_hashes: tuple[bytes, ...]
    importance: tuple[float, ...]
    meta: bytes = b""
    topic: Topic = UPDATE

    def __post_init__(self) -> None:
        n = len(self.piece_sizes)
        if not 1 <= n <= MAX_PIECES:
            raise ManifestError(f"a manifest needs 1 to {MAX_PIECES} pieces, got {n}")
        if len(self.piece_hashes) != n or len(self.importance) != n:
            raise ManifestError("piece sizes, hashes and importance must have equal lengths")
        if any(not 0 < s <= MAX_PIECE_SIZE for s in self.piece_sizes):
            raise ManifestError("piece sizes must be between 1 byte and 1 GiB")
        if any(len(h) != 32 for h in self.piece_hashes):
            raise ManifestError("piece hashes must be 32 bytes")
        if any(not math.isfinite(x) for x in self.importance):
            raise ManifestError("importance scores must be finite")
        try:  # store scores as the f32 values the encoding carries, so equality is exact
            f32 = struct.unpack(f">{n}f", struct.pack(f">{n}f", *self.importance))
        except OverflowError as exc:
            raise ManifestError("importance scores must fit in float32") from exc
        object.__setattr__(self, "importance", f32)
        if len(self.meta) > MAX_META:
            raise ManifestError(f"manifest metadata over {MAX_META} bytes")
        for name in ("author", "round"):
            if not 0 <= getattr(self, name) < 1 << 32:
                raise ManifestError(f"{name} out of range")
        if not 0 <= self.num_samples < 1 << 64:
            raise ManifestError("num_samples out of range")

    @classmethod
    def build(
        cls,
        *,
        author: int,
        round: int,
        pieces: Sequence[bytes],
        num_samples: int,
        importance: Sequence[float] | None = None,
        meta: bytes = b"",
        topic: Topic = UPDATE,
    ) -> Manifest:
        """Describe ``pieces``; importance defaults to zero."""
        scores = tuple(float(x) for x in importance) if importance is not None else None
        return cls(
            author=author,
            round=round,
            num_samples=num_samples,
            piece_sizes=tuple(len(p) for p in pieces),
            piece_hashes=tuple(sha256(p) for p in pieces),
            importance=scores if scores is not None else (0.0,) * len(pieces),
            meta=meta,
            topic=topic,
        )

    @property
    def num_pieces(self) -> int:
        """How many pieces the blob has."""
        return len(self.piece_sizes)

    @property
    def total_size(self) -> int:
        """Bytes in the whole blob."""
        return sum(self.piece_sizes)

    @cached_property
    def encoded(self) -> bytes:
        """The canonical bytes; the blob id is their hash."""
        update = self.topic == UPDATE
        head = _HEAD.pack(
            MAGIC,
            VERSION if update else VERSION_TOPIC,
            self.author,
            self.round,
            self.num_samples,
            self.num_pieces,
            len(self.meta),
        )
        if not update:
            head += self.topic.encode()
        entries = b"".join(
            _ENTRY.pack(s, i, h)
            for s, i, h in zip(self.piece_sizes, self.importance, self.piece_hashes, strict=True)
        )
        return head + self.meta + entries

    @cached_property
    def blob_id(self) -> bytes:
        """SHA-256 of :attr:`encoded`."""
        return sha256(self.encoded)

    def verify(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` is piece ``index`` of this blob."""
        return len(data) == self.piece_sizes[index] and sha256(data) == self.piece_hashes[index]

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        """Parse :attr:`encoded` bytes; :class:`ManifestError` names what is wrong."""
        if len(data) < _HEAD.size:
            raise ManifestError("manifest truncated")
        magic, version, author, rnd, samples, n, meta_len = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise ManifestError("not a manifest (bad magic)")
        if version not in (VERSION, VERSION_TOPIC):
            raise ManifestError(f"unsupported manifest version {version}")
        if n > MAX_PIECES or meta_len > MAX_META:
            raise ManifestError("manifest too large")
        head = _HEAD.size + (TOPIC_SIZE if version == VERSION_TOPIC else 0)
        expected = head + meta_len + n * _ENTRY.size
        if len(data) != expected:
            raise ManifestError(f"manifest is {len(data)} bytes, its header implies {expected}")
        topic = UPDATE
        if version == VERSION_TOPIC:
            try:
                topic = Topic.decode(data[_HEAD.size : head])
            except RemoteProtocolError as exc:
                raise ManifestError(str(exc)) from None
        meta = bytes(data[head : head + meta_len])
        entries = list(_ENTRY.iter_unpack(data[head + meta_len :]))
        manifest = cls(
            author=author,
            round=rnd,
            num_samples=samples,
            piece_sizes=tuple(e[0] for e in entries),
            piece_hashes=tuple(e[2] for e in entries),
            importance=tuple(e[1] for e in entries),
            meta=meta,
            topic=topic,
        )
        if manifest.encoded != data:  # e.g. a NaN payload that re-encodes differently
            raise ManifestError("manifest is not in canonical form")
        return manifest
