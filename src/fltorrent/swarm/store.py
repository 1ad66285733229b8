"""In-memory piece store: manifests, verified pieces, and pieces being assembled from blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from fltorrent.errors import SwarmError
from fltorrent.swarm.manifest import Manifest
from fltorrent.wire import SIGNATURE_SIZE

_NOBODY: frozenset[int] = frozenset()
Buffer = bytes | bytearray | memoryview


def num_blocks(size: int, block_size: int) -> int:
    """How many blocks of ``block_size`` cover ``size`` bytes."""
    return (size + block_size - 1) // block_size


@dataclass
class Assembly:
    """A piece being assembled from blocks; ``sources`` are the remote peers that sent blocks.

    Blocks are copied straight into the piece's buffer: one copy per byte received, and the
    finished buffer becomes the stored piece (never modified again).
    """

    buf: bytearray
    received: list[bool]
    count: int = 0
    sources: set[int] = field(default_factory=set)


class BlockResult(Enum):
    """What writing one block did."""

    STORED = auto()  # useful: a gap was filled, the piece is not complete yet
    COMPLETED = auto()  # the piece is complete and matched its hash
    CORRUPT = auto()  # the piece is complete but failed its hash; it was discarded
    DUPLICATE = auto()  # we already had these bytes


class Blob:
    """One blob: its manifest and the pieces held so far."""

    def __init__(self, manifest: Manifest, block_size: int) -> None:
        self.manifest = manifest
        self.blob_id = manifest.blob_id
        self.block_size = block_size
        # Verified pieces: bytes, the bytearray they were assembled in, or a read-only view of
        # the received bytes; never mutated once stored.
        self.pieces: list[Buffer | None] = [None] * manifest.num_pieces
        self.num_have = 0
        # Indices of pieces not held yet, in order: the picker scans these, not every piece.
        self.missing: dict[int, None] = dict.fromkeys(range(manifest.num_pieces))
        self.assembly: dict[int, Assembly] = {}
        # The author's signature over the blob id, served with the manifest (zeros: unsigned).
        self.signature = bytes(SIGNATURE_SIZE)

    @property
    def complete(self) -> bool:
        """All pieces held and verified."""
        return self.num_have == len(self.pieces)

    def has(self, piece: int) -> bool:
        """Whether ``piece`` is held and verified."""
        return self.pieces[piece] is not None

    def held(self) -> list[bool]:
        """One flag per piece."""
        return [p is not None for p in self.pieces]

    def set_piece(self, index: int, data: Buffer) -> bool:
        """Store a whole piece if it verifies; returns whether it did."""
        if self.pieces[index] is not None:
            return True
        if not self.manifest.verify(index, data):
            return False
        self.put_verified(index, data)
        return True

    def put_verified(self, index: int, data: Buffer) -> None:
        """Store a piece known to match its hash (e.g. one we built the manifest from)."""
        if self.pieces[index] is not None:
            return
        self.pieces[index] = data
        self.num_have += 1
        del self.missing[index]
        self.assembly.pop(index, None)

    def block_range(self, piece: int, block: int) -> tuple[int, int]:
        """(offset, length) of ``block`` of ``piece``."""
        size = self.manifest.piece_sizes[piece]
        offset = block * self.block_size
        return offset, min(self.block_size, size - offset)

    def blocks_in(self, piece: int) -> int:
        """How many blocks ``piece`` has."""
        return num_blocks(self.manifest.piece_sizes[piece], self.block_size)

    def has_block(self, piece: int, offset: int) -> bool:
        """Whether the block at ``offset`` of ``piece`` is already held."""
        if self.pieces[piece] is not None:
            return True
        asm = self.assembly.get(piece)
        return asm is not None and asm.received[offset // self.block_size]

    def write_block(
        self, piece: int, offset: int, data: bytes | memoryview, source: int
    ) -> tuple[BlockResult, frozenset[int]]:
        """Place a received block; verifies the piece when its last block arrives.

        Returns what happened and, for a completed or corrupt piece, who sent its blocks.
        """
        size = self.manifest.piece_sizes[piece]
        if offset % self.block_size or offset + len(data) > size:
            raise SwarmError(f"block at {offset}+{len(data)} does not fit piece of {size} bytes")
        if self.pieces[piece] is not None:
            return BlockResult.DUPLICATE, _NOBODY
        block = offset // self.block_size
        expected = min(self.block_size, size - offset)
        if len(data) != expected:
            raise SwarmError(f"block of {len(data)} bytes where {expected} were requested")
        if expected == size:
            # A one-block piece is verified and kept as it arrived: no assembly, no copy.
            ok = self.set_piece(piece, data)
            return (BlockResult.COMPLETED if ok else BlockResult.CORRUPT), frozenset((source,))
        asm = self.assembly.get(piece)
        if asm is None:
            asm = Assembly(bytearray(size), [False] * num_blocks(size, self.block_size))
            self.assembly[piece] = asm
        if asm.received[block]:
            return BlockResult.DUPLICATE, _NOBODY
        asm.buf[offset : offset + len(data)] = data
        asm.received[block] = True
        asm.count += 1
        asm.sources.add(source)
        if asm.count < len(asm.received):
            return BlockResult.STORED, _NOBODY
        del self.assembly[piece]
        sources = frozenset(asm.sources)
        if self.set_piece(piece, asm.buf):
            return BlockResult.COMPLETED, sources
        return BlockResult.CORRUPT, sources

    def read(self, piece: int, offset: int, length: int) -> Buffer | None:
        """A zero-copy view of part of a held piece, or ``None`` (not held, or a bad range)."""
        data = self.pieces[piece]
        if data is None or offset + length > len(data):
            return None
        if offset == 0 and length == len(data):
            return data
        return memoryview(data)[offset : offset + length]
