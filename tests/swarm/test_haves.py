"""``Haves``: pieces completed together are announced in one frame, and understood as such."""

from __future__ import annotations

import pytest

from fltorrent.errors import SwarmError
from fltorrent.net import MemoryNetwork
from fltorrent.swarm import SwarmOptions
from fltorrent.wire import (
    Announce,
    Bitfield,
    Handshake,
    Have,
    Haves,
    ManifestData,
    ManifestRequest,
    Piece,
    Request,
    Unchoke,
    pack_bits,
)
from tests.aio import aio
from tests.swarm.helpers import FED, RawPeer, _raw, _victim, random_blob


@aio()
async def test_a_haves_frame_counts_every_piece_it_names() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        manifest, _ = random_blob(5, 4 * 2000, 4)
        raw = await _raw(net, victim)
        await raw.send(Unchoke())
        await raw.send(Announce(0, manifest.blob_id, 1, 5, 4))
        await raw.send(Bitfield(0, pack_bits([False] * 4)))
        await raw.pump(ManifestRequest)
        await raw.send(ManifestData(0, manifest.encoded))
        assert await victim.wait_for(lambda: manifest.blob_id in victim.blobs, 2)
        await raw.send(Haves(((0, 1), (0, 3))))
        got = await raw.collect(0.3)
        asked = {m.piece for m in got if isinstance(m, Request)}
        assert asked == {1, 3}  # exactly the pieces the frame named, nothing else
        assert list(victim.sessions[66].their[0].bits) == [0, 1, 0, 1]


@aio()
async def test_pieces_completed_together_leave_as_one_haves_frame() -> None:
    async with MemoryNetwork() as net, _victim(net) as victim:
        manifest, pieces = random_blob(5, 3 * 2000, 3)
        seeder = await _raw(net, victim)
        listener = await net.listen("victim-2", 0, victim.accept)
        other = RawPeer(await net.connect(*listener.address, timeout=1))
        await other.send(Handshake(FED, 67, 1))
        await seeder.offer_with_manifest(manifest)
        await other.pump(Announce)  # the victim passes the blob on, with no piece yet
        requests: list[Request] = []
        while len(requests) < 2:
            await seeder.pump(Request)
            requests = [m for m in seeder.received if isinstance(m, Request)]
        # Two whole pieces in one write: both are verified in one pass over the read.
        frames = [seeder.wire.send(Piece(0, r.piece, 0, pieces[r.piece])) for r in requests[:2]]
        await seeder.conn.send(b"".join(frames))
        got = await other.collect(0.3)
        haves = [m for m in got if isinstance(m, Haves | Have)]
        [frame] = haves
        assert isinstance(frame, Haves)
        [handle] = other.wire.their_handles  # the victim's handle for the blob
        assert sorted(frame.pairs) == sorted((handle, r.piece) for r in requests[:2])


def test_have_delay_is_checked() -> None:
    with pytest.raises(SwarmError, match="have_delay"):
        SwarmOptions(federation=FED, peer_id=1, have_delay=-0.1)
    assert (
        SwarmOptions(federation=FED, peer_id=1, have_delay=0.02).session_options().have_delay
        == 0.02
    )
