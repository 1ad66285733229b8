"""Manifests and the piece store."""

from __future__ import annotations

import pytest

from fltorrent.errors import ManifestError
from fltorrent.swarm import UPDATE, Blob, BlockResult, Manifest, Topic, TopicKind, sha256


def _manifest() -> tuple[Manifest, list[bytes]]:
    pieces = [b"a" * 40000, b"b" * 100, b"c" * 16384]
    return Manifest.build(
        author=3,
        round=7,
        pieces=pieces,
        num_samples=1234,
        importance=[0.1, 2.0, 0.0],
        meta=b"plan",
    ), pieces


def test_manifest_round_trip_and_blob_id() -> None:
    m, pieces = _manifest()
    raw = m.encoded
    assert raw[:4] == b"FLTM"
    assert len(raw) == 29 + 4 + 3 * 40  # header, meta, 3 entries
    back = Manifest.decode(raw)
    assert back == m
    assert back.blob_id == sha256(raw) == m.blob_id
    assert back.total_size == 40000 + 100 + 16384
    assert all(m.verify(i, p) for i, p in enumerate(pieces))
    assert not m.verify(0, b"x" * 40000)
    # Importance travels as float32.
    assert back.importance[0] == pytest.approx(0.1, rel=1e-7)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r[:10], "truncated"),
        (lambda r: b"XXXX" + r[4:], "bad magic"),
        (lambda r: r[:4] + b"\x09" + r[5:], "unsupported manifest version 9"),
        (lambda r: r + b"\x00", "header implies"),
    ],
)
def test_bad_manifests_name_the_problem(mutate: object, match: str) -> None:
    m, _ = _manifest()
    with pytest.raises(ManifestError, match=match):
        Manifest.decode(mutate(m.encoded))  # type: ignore[operator]


def test_a_topic_is_part_of_the_manifest_and_of_the_blob_id() -> None:
    pieces = [b"a" * 10, b"b" * 20]
    update = Manifest.build(author=3, round=7, pieces=pieces, num_samples=5)
    agg = Manifest.build(
        author=3, round=7, pieces=pieces, num_samples=5, topic=Topic(TopicKind.AGGREGATE, 4, 6)
    )
    assert update.topic == UPDATE and update.encoded[4] == 1  # an update stays version 1
    assert agg.encoded[4] == 2 and len(agg.encoded) == len(update.encoded) + 9
    assert agg.blob_id != update.blob_id  # same pieces, another topic: another blob
    assert Manifest.decode(agg.encoded) == agg
    # An update written as version 2 is not canonical, and an unknown topic kind is refused.
    as_v2 = agg.encoded[:4] + b"\x02" + agg.encoded[5:29] + UPDATE.encode() + agg.encoded[38:]
    with pytest.raises(ManifestError, match="canonical"):
        Manifest.decode(as_v2)
    bad_kind = agg.encoded[:29] + b"\x09" + agg.encoded[30:]
    with pytest.raises(ManifestError, match="bad topic"):
        Manifest.decode(bad_kind)


def test_manifest_rejects_inconsistent_fields() -> None:
    with pytest.raises(ManifestError, match="1 to"):
        Manifest.build(author=1, round=1, pieces=[], num_samples=1)
    with pytest.raises(ManifestError, match="finite"):
        Manifest.build(author=1, round=1, pieces=[b"x"], num_samples=1, importance=[float("nan")])


def test_blocks_assemble_verify_and_detect_corruption() -> None:
    m, pieces = _manifest()
    blob = Blob(m, block_size=16384)
    assert blob.blocks_in(0) == 3 and blob.block_range(0, 2) == (32768, 40000 - 32768)
    assert blob.write_block(0, 0, pieces[0][:16384], source=9)[0] is BlockResult.STORED
    assert blob.write_block(0, 0, pieces[0][:16384], source=9)[0] is BlockResult.DUPLICATE
    assert blob.has_block(0, 0) and not blob.has_block(0, 16384)
    blob.write_block(0, 16384, pieces[0][16384:32768], source=8)
    result, sources = blob.write_block(0, 32768, pieces[0][32768:], source=9)
    assert result is BlockResult.COMPLETED and sources == {8, 9}
    assert blob.read(0, 16384, 10) == pieces[0][16384:16394]
    # A tampered block: the piece fails its hash, is discarded and can be fetched again.
    result, sources = blob.write_block(1, 0, b"X" * 100, source=5)
    assert result is BlockResult.CORRUPT and sources == {5}
    assert not blob.has(1) and blob.read(1, 0, 100) is None
    assert blob.write_block(1, 0, pieces[1], source=6)[0] is BlockResult.COMPLETED
    assert blob.num_have == 2 and not blob.complete
