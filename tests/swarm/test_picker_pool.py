"""The piece picker (rarity and importance levels, critical mode) and the request pools."""

from __future__ import annotations

from typing import Any

from fltorrent.swarm import Blob, Manifest
from fltorrent.swarm.picker import PiecePicker, importance_levels
from fltorrent.swarm.requests import RequestPool


def _blob(n: int, importance: list[float] | None = None, size: int = 100, author: int = 1) -> Blob:
    pieces = [bytes([i]) * size for i in range(n)]
    manifest = Manifest.build(
        author=author, round=1, pieces=pieces, num_samples=1, importance=importance
    )
    return Blob(manifest, block_size=40)


def _never_busy(_key: tuple[bytes, int]) -> bool:
    return False


def test_importance_levels_by_rank_within_a_blob() -> None:
    assert importance_levels([0.0, 5.0, 1.0, 9.0]) == ([0, 2, 1, 3], [0.0, 5 / 9, 1 / 9, 1.0])
    assert importance_levels([2.0] * 5)[0] == [0] * 5  # no information: one level
    assert importance_levels([0.0, 0.0])[1] == [0.0, 0.0]
    levels, _ = importance_levels(list(range(8)))
    assert levels == [0, 0, 1, 1, 2, 2, 3, 3]
    # The best pieces are on the top level even in small blobs and when tied.
    assert importance_levels([1.0, 2.0])[0] == [1, 3]
    assert importance_levels([1.0, 2.0, 2.0, 2.0])[0] == [0, 3, 3, 3]
    assert importance_levels([-1.0, 0.0, 0.0])[1] == [0.0, 0.0, 0.0]  # no positive top


def test_rarer_and_more_important_first() -> None:
    blob = _blob(4, importance=[0.0, 5.0, 1.0, 9.0])  # levels 0, 2, 1, 3
    picker = PiecePicker(seed=1)
    picker.track(blob.blob_id, 4)
    picker.add(blob.blob_id, [True, True, True, True])  # neighbour A holds all
    picker.add(blob.blob_id, [False, False, True, True])  # neighbour B holds 2 and 3
    # Priorities (availability + 1) * 3 - level: piece 1: 4, piece 0: 6, piece 3: 6, piece 2: 8.
    # The top-level piece 3 ties with the unimportant rare piece 0 and wins on its score.
    order = picker.pick([(blob, [True] * 4)], _never_busy, count=4)
    assert order == [(blob.blob_id, 1), (blob.blob_id, 3), (blob.blob_id, 0), (blob.blob_id, 2)]
    # Two holders more outweigh any importance.
    picker.add(blob.blob_id, [False, False, False, True])
    order = picker.pick([(blob, [True] * 4)], _never_busy, count=4)
    assert order == [(blob.blob_id, 1), (blob.blob_id, 0), (blob.blob_id, 2), (blob.blob_id, 3)]


def test_critical_mode_puts_the_top_level_first_whatever_its_availability() -> None:
    blob = _blob(8, importance=[float(i) for i in range(8)])  # 6 and 7 are the top level
    picker = PiecePicker(seed=2)
    picker.track(blob.blob_id, 8)
    picker.add(blob.blob_id, [True] * 8)
    for _ in range(3):
        picker.add(blob.blob_id, [False] * 6 + [True, True])  # the important ones are common
    normal = picker.pick([(blob, [True] * 8)], _never_busy, count=8)
    assert [i for _, i in normal[:2]] == [5, 4]
    assert [i for _, i in normal[-2:]] == [7, 6]
    critical = picker.pick([(blob, [True] * 8)], _never_busy, count=8, critical_round=1)
    assert [i for _, i in critical] == [7, 6, 5, 4, 3, 2, 1, 0]
    # Critical for round 0 only: this round-1 blob (fetched early) is picked normally.
    assert picker.pick([(blob, [True] * 8)], _never_busy, count=8, critical_round=0) == normal


def test_levels_compare_authors_with_different_score_scales() -> None:
    small = _blob(4, importance=[0.001, 0.002, 0.003, 0.004], author=1)
    large = _blob(4, importance=[10.0, 20.0, 30.0, 40.0], author=2)
    picker = PiecePicker(seed=3)
    for b in (small, large):
        picker.track(b.blob_id, 4)
        picker.add(b.blob_id, [True] * 4)
    picked = picker.pick([(small, [True] * 4), (large, [True] * 4)], _never_busy, count=2)
    # Each author's top piece first, not the large author's whole update.
    assert sorted(picked) == sorted([(small.blob_id, 3), (large.blob_id, 3)])


def test_only_pieces_the_neighbour_holds_we_lack_and_nobody_downloads() -> None:
    blob = _blob(4)
    picker = PiecePicker()
    picker.track(blob.blob_id, 4)
    picker.add(blob.blob_id, [True] * 4)
    blob.set_piece(0, blob_pieces(blob, 0))
    busy = {(blob.blob_id, 1)}
    got = picker.pick([(blob, [True, True, True, False])], busy.__contains__, count=4)
    assert got == [(blob.blob_id, 2)]
    assert picker.pick([(blob, [False] * 4)], _never_busy) == []


def blob_pieces(blob: Blob, i: int) -> bytes:
    return bytes([i]) * blob.manifest.piece_sizes[i]


def test_equal_pieces_are_started_in_a_per_peer_random_order() -> None:
    blob = _blob(16)
    orders = []
    for seed in range(4):
        picker = PiecePicker(seed=seed)
        picker.track(blob.blob_id, 16)
        picker.add(blob.blob_id, [True] * 16)
        orders.append([k[1] for k in picker.pick([(blob, [True] * 16)], _never_busy, 16)])
    assert all(sorted(o) == list(range(16)) for o in orders)
    assert len({tuple(o) for o in orders}) == 4  # different peers spread over the pieces


class _FakeSession:
    """What the pool touches of a session (hashable by identity, as a session is)."""

    def __init__(self) -> None:
        self.inflight: dict[Any, float] = {}
        self.downloads: dict[Any, None] = {}


def _session() -> Any:
    return _FakeSession()


def test_request_pool_pending_active_release_and_arrival() -> None:
    blob = _blob(2)  # pieces of 100 bytes in blocks of 40: offsets 0, 40, 80
    pool = RequestPool()
    d = pool.start(blob, 0)
    assert d.pending == [80, 40, 0] and pool.busy((blob.blob_id, 0))
    s1, s2 = _session(), _session()
    k0 = pool.assign(d, d.pending.pop(), s1, now=1.0)
    k1 = pool.assign(d, d.pending.pop(), s1, now=1.0)
    assert k0 == (blob.blob_id, 0, 0) and s1.inflight == {k0: 1.0, k1: 1.0}
    assert d.active == {0: [s1], 40: [s1]} and pool.has_pending()
    # s1 chokes us: its blocks go back to pending, none is lost.
    pool.release(s1, k0)
    assert 0 in d.pending and 0 not in d.active and k0 not in s1.inflight
    # An endgame duplicate: the same block active at two sessions; arrival clears both.
    pool.assign(d, 40, s2, now=2.0)
    assert d.active[40] == [s1, s2]
    holders = pool.arrived(k1)
    assert holders == [s1, s2] and k1 not in s1.inflight and k1 not in s2.inflight
    assert 40 not in d.active
    pool.finish(d.key)
    assert not pool.busy(d.key) and not pool.has_pending()


def test_release_keeps_a_block_active_elsewhere() -> None:
    blob = _blob(1)
    pool = RequestPool()
    d = pool.start(blob, 0)
    s1, s2 = _session(), _session()
    offset = d.pending.pop()
    key = pool.assign(d, offset, s1, 0.0)
    pool.assign(d, offset, s2, 0.0)
    pool.release(s1, key)
    assert d.active[offset] == [s2] and offset not in d.pending
