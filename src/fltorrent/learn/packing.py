"""Packing tensors into chunks: the plan's building blocks and the packing rules.

Elements are packed by *groups*. A group is a layer-like set of tensor parts that are cut the
same way: it has ``n_slices`` equal slices (a conv filter with its bias and batch-norm entries,
an attention head with its Q/K/V rows and its output-projection columns, a row of a plain
tensor), and it is cut only between slices. A group that fits in the target chunk size stays in
one packing unit; a larger one becomes runs of consecutive slices, each run as many slices as fit
(at least one). A group's *extras* (whole tensors such as a batch norm's ``num_batches_tracked``)
form one more unit right after the group's last run.

Units are then packed greedily in order: a unit joins the current chunk if that keeps the chunk
within the target, otherwise it starts a new chunk. Within a unit, segments are sorted by tensor
and start and adjacent ones merged, so a plan has one canonical form.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from fltorrent.errors import LearnError
from fltorrent.learn._elements import SUPPORTED_DTYPES


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one state-dict entry."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    def __post_init__(self) -> None:
        if any(d < 0 for d in self.shape):
            raise LearnError(f"{self.name}: negative dimension in shape {self.shape}")
        if self.dtype not in SUPPORTED_DTYPES:
            raise LearnError(f"{self.name}: dtype {self.dtype} cannot be chunked")

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        """Bytes of the whole tensor."""
        return self.numel * self.itemsize


@dataclass(frozen=True)
class Segment:
    """Elements [start, stop) of tensor ``tensor`` (flat, C order)."""

    tensor: int
    start: int
    stop: int


@dataclass(frozen=True)
class Chunk:
    """One chunk: its segments in byte order, and their total bytes and elements."""

    index: int
    segments: tuple[Segment, ...]
    nbytes: int
    numel: int


@dataclass(frozen=True)
class Part:
    """The elements one slice of a group takes from one tensor.

    Slice ``k`` takes, for each ``r`` in ``range(rows)``, the elements
    ``[start + r * row_stride + k * length, ... + length)``: ``rows == 1`` is one contiguous run
    per slice (a filter, a bias entry, a head's Q rows); ``rows > 1`` takes a column block of a
    matrix (a head's columns of the output projection).
    """

    tensor: int
    length: int
    start: int = 0
    rows: int = 1
    row_stride: int = 0

    def segments(self, first: int, last: int) -> Iterator[Segment]:
        """The segments of slices ``[first, last)``."""
        for r in range(self.rows):
            base = self.start + r * self.row_stride
            yield Segment(self.tensor, base + first * self.length, base + last * self.length)


@dataclass(frozen=True)
class Group:
    """``n_slices`` equal slices made of ``parts``, plus whole ``extras`` tensors."""

    parts: tuple[Part, ...]
    n_slices: int
    extras: tuple[int, ...] = ()

    def tensors(self) -> set[int]:
        """Every tensor index this group covers."""
        return {p.tensor for p in self.parts} | set(self.extras)


def tensor_group(index: int, spec: TensorSpec) -> Group:
    """The default group of one tensor: its rows along the first dimension."""
    rows = spec.shape[0] if spec.shape else 1
    if rows <= 1:
        return Group((Part(index, spec.numel),), 1)
    return Group((Part(index, spec.numel // rows),), rows)


def default_groups(specs: Sequence[TensorSpec]) -> list[Group]:
    """One :func:`tensor_group` per non-empty tensor, in order."""
    return [tensor_group(i, s) for i, s in enumerate(specs) if s.numel]


def check_groups(specs: Sequence[TensorSpec], groups: Sequence[Group]) -> None:
    """Refuse groups that leave out, repeat or overrun an element (names the tensor)."""
    covered = [0] * len(specs)
    for g in groups:
        if g.n_slices < 1:
            raise LearnError("a group needs at least one slice")
        for t in [p.tensor for p in g.parts] + list(g.extras):
            if not 0 <= t < len(specs):
                raise LearnError(f"a group refers to tensor {t}; the plan has {len(specs)}")
        for p in g.parts:
            spec = specs[p.tensor]
            top = p.start + (p.rows - 1) * p.row_stride + g.n_slices * p.length
            if p.length < 1 or p.start < 0 or top > spec.numel:
                raise LearnError(f"{spec.name}: a group part runs outside the tensor")
            covered[p.tensor] += p.rows * p.length * g.n_slices
        for t in g.extras:
            covered[t] += specs[t].numel
    for spec, n in zip(specs, covered, strict=True):
        if n != spec.numel:
            raise LearnError(f"{spec.name}: groups cover {n} of its {spec.numel} elements")


Unit = tuple[tuple[Segment, ...], int]  # segments, bytes


def _merged(segments: list[Segment]) -> tuple[Segment, ...]:
    out: list[Segment] = []
    for seg in sorted(segments, key=lambda s: (s.tensor, s.start)):
        if out and out[-1].tensor == seg.tensor and out[-1].stop == seg.start:
            out[-1] = Segment(seg.tensor, out[-1].start, seg.stop)
        else:
            out.append(seg)
    return tuple(out)


def _units(specs: Sequence[TensorSpec], groups: Sequence[Group], target: int) -> Iterator[Unit]:
    for g in groups:
        per_slice = sum(p.rows * p.length * specs[p.tensor].itemsize for p in g.parts)
        total = per_slice * g.n_slices
        run = g.n_slices if total <= target else max(1, target // max(1, per_slice))
        for first in range(0, g.n_slices, run):
            last = min(g.n_slices, first + run)
            segs = [s for p in g.parts for s in p.segments(first, last)]
            yield _merged(segs), per_slice * (last - first)
        extra = [Segment(t, 0, specs[t].numel) for t in g.extras if specs[t].numel]
        if extra:
            yield _merged(extra), sum(specs[t].nbytes for t in g.extras)


def _unit_sizes(specs: Sequence[TensorSpec], groups: Sequence[Group], target: int) -> Iterator[int]:
    """The bytes of each unit of :func:`_units`, without building segments."""
    for g in groups:
        per_slice = sum(p.rows * p.length * specs[p.tensor].itemsize for p in g.parts)
        total = per_slice * g.n_slices
        run = g.n_slices if total <= target else max(1, target // max(1, per_slice))
        full, rest = divmod(g.n_slices, run)
        yield from [per_slice * run] * full
        if rest:
            yield per_slice * rest
        extra = sum(specs[t].nbytes for t in g.extras)
        if extra:
            yield extra


def pack(specs: Sequence[TensorSpec], groups: Sequence[Group], target: int) -> tuple[Chunk, ...]:
    """The chunks for target chunk size ``target`` (see the module docstring)."""
    chunks: list[list[Segment]] = [[]]
    size = 0
    for segs, nbytes in _units(specs, groups, target):
        if chunks[-1] and size + nbytes > target:
            chunks.append([])
            size = 0
        chunks[-1].extend(segs)
        size += nbytes
    return tuple(
        Chunk(
            index=i,
            segments=tuple(segs),
            nbytes=sum((s.stop - s.start) * specs[s.tensor].itemsize for s in segs),
            numel=sum(s.stop - s.start for s in segs),
        )
        for i, segs in enumerate(chunks)
    )


def _count(specs: Sequence[TensorSpec], groups: Sequence[Group], target: int) -> int:
    """len(pack(specs, groups, target)) without building the chunks."""
    count, size = 1, 0
    for nbytes in _unit_sizes(specs, groups, target):
        if size and size + nbytes > target:
            count, size = count + 1, 0
        size += nbytes
    return count


def target_for_count(specs: Sequence[TensorSpec], groups: Sequence[Group], num_chunks: int) -> int:
    """The smallest target whose chunk count is closest to ``num_chunks`` (ties: more chunks)."""
    total = sum(spec.nbytes for spec in specs)
    if total == 0:
        return 1
    # Binary search for the smallest target with at most num_chunks chunks (the target `total`
    # always gives one chunk), then see whether one byte less lands closer to num_chunks.
    lo, hi = 1, total
    while lo < hi:
        mid = (lo + hi) // 2
        if _count(specs, groups, mid) <= num_chunks:
            hi = mid
        else:
            lo = mid + 1
    below = _count(specs, groups, lo - 1) if lo > 1 else None
    if below is not None and below - num_chunks <= num_chunks - _count(specs, groups, lo):
        return lo - 1
    return lo
