"""Chunk ownership for reduce_scatter: deterministic, balanced, minimal moves on departure."""

from __future__ import annotations

from collections import Counter

import pytest

from fltorrent.plans.owners import Ownership, ranges


def _draw(
    n: int = 10,
    chunks: int = 20,
    *,
    seed: int = 0,
    departed: frozenset[int] = frozenset(),
) -> Ownership:
    return Ownership.draw(
        seed=seed,
        members=range(1, n + 1),
        chunks=chunks,
        replicas=2,
        departed=departed,
    )


def test_every_chunk_has_distinct_owners_and_the_load_is_balanced() -> None:
    for n, chunks in [(10, 20), (7, 20), (100, 100), (100, 20), (3, 50)]:
        own = _draw(n, chunks)
        for c in range(chunks):
            owners = own.owners(c)
            assert len(owners) == len(set(owners)) == min(2, n)
        load = Counter(p for c in range(chunks) for p in own.owners(c))
        assert sum(load.values()) == 2 * chunks
        # Contiguous shares of the ring: nobody owns more than one chunk beyond the fair share.
        assert max(load.values()) <= -(-2 * chunks // n) + 1


def test_owners_are_the_same_for_everyone_and_depend_on_the_seed() -> None:
    a, b = _draw(), _draw()
    assert [a.owners(c) for c in range(20)] == [b.owners(c) for c in range(20)]
    assert _draw(seed=1).ring != _draw(seed=0).ring


def test_a_departed_owner_hands_its_chunks_to_the_next_and_nothing_else_moves() -> None:
    full = _draw()
    gone = full.ring[3]
    after = _draw(departed=frozenset({gone}))
    moved = 0
    for c in range(20):
        before, now = full.owners(c), after.owners(c)
        assert gone not in now and len(now) == 2
        if gone in before:
            moved += 1
            assert [p for p in before if p != gone] == [p for p in now if p in before]
        else:
            assert now == before
    assert moved == len(full.owned_by(gone)) > 0


def test_partners_are_symmetric() -> None:
    own = _draw(n=30, chunks=10)
    for p in range(1, 31):
        for q in own.partners(p):
            assert p in own.partners(q)
    owner = own.owners(0)[0]
    assert own.partners(owner) == set(range(1, 31)) - {owner}
    outsider = next(p for p in range(1, 31) if p not in own.owner_set)
    assert own.partners(outsider) == set(own.owner_set)


@pytest.mark.parametrize(
    ("chunks", "runs"),
    [([], []), ([4], [(4, 5)]), ([3, 1, 2, 7, 8, 10], [(1, 4), (7, 9), (10, 11)])],
)
def test_ranges(chunks: list[int], runs: list[tuple[int, int]]) -> None:
    assert ranges(chunks) == runs
