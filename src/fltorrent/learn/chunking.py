"""Chunk plans: a lossless, layer-aware mapping between a state dict and a list of byte chunks.

Layout rules (both peers must follow them to agree on a plan, which :meth:`ChunkPlan.digest`
lets them check):

- Tensors are packed in state-dict order, group by group (a group may pull a later tensor
  forward: a batch norm with its conv). Empty tensors (no elements) are in no chunk; the plan
  still records them, and :meth:`ChunkPlan.join` recreates them.
- By default each tensor is its own group (:mod:`fltorrent.learn.packing`): it is split only when
  its byte size exceeds the target chunk size, and then only along its first dimension into
  runs of whole rows, each as many rows as fit in the target (at least one). 0-dim and
  single-row tensors are never split. :mod:`fltorrent.learn.layout` gives architecture-aware
  groups instead (a conv filter with its batch norm, an attention head with its Q/K/V).
- The units (whole groups and runs of slices) are packed greedily in order: a unit joins the
  current chunk if that keeps it within the target, otherwise it starts a new chunk.

A chunk's bytes are its segments' raw element bytes, little-endian, C order, concatenated.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from fltorrent.errors import LearnError
from fltorrent.learn._elements import bytes_tensor, check_tensor, decode, encode, tensor_bytes
from fltorrent.learn.packing import (
    Chunk,
    Group,
    Segment,
    TensorSpec,
    check_groups,
    default_groups,
    pack,
    target_for_count,
)

__all__ = ["Chunk", "ChunkPlan", "Group", "Segment", "TensorSpec", "specs_of"]

_DIGEST_MAGIC = b"fltorrent.chunkplan.v1\x00"


@dataclass(frozen=True)
class ChunkPlan:
    """How a state dict with the given tensors is cut into chunks (see the module docstring).

    Build one with :meth:`from_state_dict` or :meth:`from_specs`; the constructor only checks
    that the chunks cover every element exactly once. Plans compare equal when their tensors and
    chunks are equal.
    """

    tensors: tuple[TensorSpec, ...]
    chunks: tuple[Chunk, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        object.__setattr__(self, "chunks", tuple(self.chunks))
        _validate(self.tensors, self.chunks)

    @classmethod
    def from_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        *,
        num_chunks: int | None = None,
        chunk_bytes: int | None = None,
        groups: Sequence[Group] | None = None,
    ) -> ChunkPlan:
        """The plan for ``state``; give exactly one of ``num_chunks`` and ``chunk_bytes``."""
        return cls.from_specs(
            specs_of(state), num_chunks=num_chunks, chunk_bytes=chunk_bytes, groups=groups
        )

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[TensorSpec],
        *,
        num_chunks: int | None = None,
        chunk_bytes: int | None = None,
        groups: Sequence[Group] | None = None,
    ) -> ChunkPlan:
        """The plan for tensors ``specs`` (in order), packed by ``groups`` (default: per tensor).

        ``chunk_bytes`` is the target chunk size. ``num_chunks`` asks for a number of chunks: the
        target is the smallest one whose chunk count is closest to it (on a tie between a count
        above and one below, the larger count). It is a target, not a guarantee: three 4-byte
        tensors cannot make 20 chunks, and one big row cannot be cut. The search assumes that
        the count falls as the target grows, which cutting groups into runs of slices can break
        locally: the count may then miss the closest reachable one by one or two.
        """
        specs = tuple(specs)
        if groups is None:
            groups = default_groups(specs)
        else:
            check_groups(specs, groups)
        if chunk_bytes is not None and num_chunks is None:
            if chunk_bytes < 1:
                raise LearnError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
            target = chunk_bytes
        elif num_chunks is not None and chunk_bytes is None:
            if num_chunks < 1:
                raise LearnError(f"num_chunks must be at least 1, got {num_chunks}")
            target = target_for_count(specs, groups, num_chunks)
        else:
            raise LearnError("give exactly one of num_chunks and chunk_bytes")
        return cls(tensors=specs, chunks=pack(specs, groups, target))

    @property
    def total_bytes(self) -> int:
        """Bytes of all tensors (= the sum of the chunk sizes)."""
        return sum(spec.nbytes for spec in self.tensors)

    @property
    def num_chunks(self) -> int:
        """Number of chunks."""
        return len(self.chunks)

    def digest(self) -> bytes:
        """SHA-256 of a canonical encoding of names, shapes, dtypes and segments."""
        return self._digest

    @cached_property
    def _digest(self) -> bytes:
        h = hashlib.sha256(_DIGEST_MAGIC)

        def text(s: str) -> None:
            b = s.encode()
            h.update(struct.pack(">I", len(b)) + b)

        h.update(struct.pack(">I", len(self.tensors)))
        for spec in self.tensors:
            text(spec.name)
            text(str(spec.dtype))
            h.update(struct.pack(f">I{len(spec.shape)}Q", len(spec.shape), *spec.shape))
        h.update(struct.pack(">I", len(self.chunks)))
        for chunk in self.chunks:
            h.update(struct.pack(">I", len(chunk.segments)))
            for seg in chunk.segments:
                h.update(struct.pack(">IQQ", seg.tensor, seg.start, seg.stop))
        return h.digest()

    # --- bytes ---------------------------------------------------------------------------------

    def split(self, state: Mapping[str, torch.Tensor]) -> list[bytes]:
        """The chunks of ``state``, which must have this plan's names, shapes and dtypes."""
        raw = self._raw(state)
        return [
            b"".join(raw[t][a:b].data for t, a, b in self._byte_ranges(chunk))
            for chunk in self.chunks
        ]

    def join(self, chunks: Sequence[bytes]) -> dict[str, torch.Tensor]:
        """The state dict whose :meth:`split` is ``chunks`` (new CPU tensors, plan order)."""
        if len(chunks) != len(self.chunks):
            raise LearnError(f"expected {len(self.chunks)} chunks, got {len(chunks)}")
        bufs = [np.empty(spec.nbytes, dtype=np.uint8) for spec in self.tensors]
        for chunk, data in zip(self.chunks, chunks, strict=True):
            src = self._chunk_array(chunk, data)
            offset = 0
            for t, a, b in self._byte_ranges(chunk):
                bufs[t][a:b] = src[offset : offset + b - a]
                offset += b - a
        return {
            spec.name: bytes_tensor(buf, spec.shape, spec.dtype)
            for spec, buf in zip(self.tensors, bufs, strict=True)
        }

    # --- float64 vectors -----------------------------------------------------------------------

    def chunk_to_vector(self, index: int, data: bytes | bytearray | memoryview) -> np.ndarray:
        """The chunk's elements as a float64 vector (``numel`` long), in byte order."""
        chunk = self._chunk(index)
        src = self._chunk_array(chunk, data)
        out = np.empty(chunk.numel, dtype=np.float64)
        pos = offset = 0
        for seg in chunk.segments:
            spec = self.tensors[seg.tensor]
            n, nb = seg.stop - seg.start, (seg.stop - seg.start) * spec.itemsize
            out[pos : pos + n] = decode(src[offset : offset + nb], spec.name, spec.dtype)
            pos, offset = pos + n, offset + nb
        return out

    def vector_to_chunk(self, index: int, vector: np.ndarray) -> bytes:
        """Inverse of :meth:`chunk_to_vector`, casting each element back to its dtype.

        Floating dtypes round to nearest (overflow gives ±inf); integer and bool dtypes round
        to nearest (ties to even), clip to the dtype's range (as far as float64 reaches: int64
        saturates at 2**63 - 1024) and map NaN to 0.
        """
        chunk = self._chunk(index)
        vec = _as_vector(vector, chunk)
        parts = []
        pos = 0
        for seg in chunk.segments:
            spec, n = self.tensors[seg.tensor], seg.stop - seg.start
            parts.append(encode(vec[pos : pos + n], spec.name, spec.dtype).data)
            pos += n
        return b"".join(parts)

    def state_to_vectors(self, state: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
        """``[chunk_to_vector(i, c) for i, c in enumerate(split(state))]``, computed directly.

        Integers above 2**53 in magnitude do not survive the float64 conversion exactly.
        """
        raw = self._raw(state)
        flat = [
            decode(r, spec.name, spec.dtype) if spec.numel else np.zeros(0)
            for r, spec in zip(raw, self.tensors, strict=True)
        ]
        out = []
        for chunk in self.chunks:
            pieces = [flat[seg.tensor][seg.start : seg.stop] for seg in chunk.segments]
            out.append(np.concatenate(pieces) if pieces else np.zeros(0))
        return out

    def vectors_to_state(self, vectors: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """``join([vector_to_chunk(i, v) for i, v in enumerate(vectors)])``, computed directly."""
        if len(vectors) != len(self.chunks):
            raise LearnError(f"expected {len(self.chunks)} vectors, got {len(vectors)}")
        flat = [np.empty(spec.numel, dtype=np.float64) for spec in self.tensors]
        for chunk, vector in zip(self.chunks, vectors, strict=True):
            vec = _as_vector(vector, chunk)
            pos = 0
            for seg in chunk.segments:
                n = seg.stop - seg.start
                flat[seg.tensor][seg.start : seg.stop] = vec[pos : pos + n]
                pos += n
        return {
            spec.name: bytes_tensor(encode(f, spec.name, spec.dtype), spec.shape, spec.dtype)
            for spec, f in zip(self.tensors, flat, strict=True)
        }

    def floating(self, index: int) -> np.ndarray:
        """Per element of chunk ``index`` (byte order): whether its tensor is floating point
        (model weights, as opposed to integer counters such as ``num_batches_tracked``)."""
        chunk = self._chunk(index)
        return np.concatenate(
            [
                np.full(seg.stop - seg.start, self.tensors[seg.tensor].dtype.is_floating_point)
                for seg in chunk.segments
            ]
            or [np.zeros(0, dtype=bool)]
        )

    # --- helpers -------------------------------------------------------------------------------

    def _chunk(self, index: int) -> Chunk:
        if not 0 <= index < len(self.chunks):
            raise LearnError(f"chunk index {index} out of range 0..{len(self.chunks) - 1}")
        return self.chunks[index]

    def _byte_ranges(self, chunk: Chunk) -> Iterator[tuple[int, int, int]]:
        """(tensor, first byte, end byte) of each segment of ``chunk``."""
        for seg in chunk.segments:
            size = self.tensors[seg.tensor].itemsize
            yield seg.tensor, seg.start * size, seg.stop * size

    def _chunk_array(self, chunk: Chunk, data: bytes | bytearray | memoryview) -> np.ndarray:
        src = np.frombuffer(data, dtype=np.uint8)
        if src.size != chunk.nbytes:
            raise LearnError(f"chunk {chunk.index} must be {chunk.nbytes} bytes, got {src.size}")
        return src

    def _raw(self, state: Mapping[str, torch.Tensor]) -> list[np.ndarray]:
        """Each planned tensor of ``state`` as a flat uint8 array of its bytes."""
        names = {spec.name for spec in self.tensors}
        missing = [spec.name for spec in self.tensors if spec.name not in state]
        extra = [name for name in state if name not in names]
        if missing or extra:
            raise LearnError(
                f"state dict does not match the chunk plan: missing {missing[:5]}, "
                f"unexpected {extra[:5]}"
            )
        out = []
        for spec in self.tensors:
            value = state[spec.name]
            check_tensor(spec.name, value)
            if tuple(value.shape) != spec.shape or value.dtype != spec.dtype:
                raise LearnError(
                    f"{spec.name}: the plan has {spec.dtype} {spec.shape}, "
                    f"the state dict {value.dtype} {tuple(value.shape)}"
                )
            out.append(tensor_bytes(value))
        return out


def specs_of(state: Mapping[str, torch.Tensor]) -> list[TensorSpec]:
    """The specs of a state dict's tensors, in order (refuses unsupported tensors)."""
    specs = []
    for name, value in state.items():
        check_tensor(name, value)
        specs.append(TensorSpec(name, tuple(int(d) for d in value.shape), value.dtype))
    return specs


def _as_vector(vector: np.ndarray, chunk: Chunk) -> np.ndarray:
    vec = np.asarray(vector, dtype=np.float64)
    if vec.shape != (chunk.numel,):
        raise LearnError(
            f"chunk {chunk.index} has {chunk.numel} elements, got a vector of shape {vec.shape}"
        )
    return vec


# --- building and checking plans ---------------------------------------------------------------


def _validate(tensors: tuple[TensorSpec, ...], chunks: tuple[Chunk, ...]) -> None:
    """Every element of every tensor in exactly one segment; chunk totals consistent."""
    names = [spec.name for spec in tensors]
    if len(set(names)) != len(names):
        raise LearnError("tensor names in a chunk plan must be unique")
    if not chunks:
        raise LearnError("a chunk plan needs at least one chunk")
    total = sum(spec.nbytes for spec in tensors)
    ranges: list[list[tuple[int, int]]] = [[] for _ in tensors]
    for pos, chunk in enumerate(chunks):
        if chunk.index != pos:
            raise LearnError(f"chunk at position {pos} has index {chunk.index}")
        if not chunk.segments and (total or len(chunks) > 1):
            raise LearnError(f"chunk {pos} is empty")
        nbytes = numel = 0
        for seg in chunk.segments:
            if not 0 <= seg.tensor < len(tensors):
                raise LearnError(f"chunk {pos} refers to unknown tensor {seg.tensor}")
            spec = tensors[seg.tensor]
            if not 0 <= seg.start < seg.stop <= spec.numel:
                raise LearnError(f"chunk {pos}: bad segment {seg} of {spec.name} {spec.shape}")
            ranges[seg.tensor].append((seg.start, seg.stop))
            numel += seg.stop - seg.start
            nbytes += (seg.stop - seg.start) * spec.itemsize
        if (chunk.nbytes, chunk.numel) != (nbytes, numel):
            raise LearnError(f"chunk {pos} declares wrong sizes")
    for spec, spans in zip(tensors, ranges, strict=True):
        covered = 0
        for start, stop in sorted(spans):
            if start != covered:
                raise LearnError(f"{spec.name}: segments overlap or leave a gap at {covered}")
            covered = stop
        if covered != spec.numel:
            raise LearnError(f"{spec.name}: segments cover {covered} of {spec.numel} elements")
