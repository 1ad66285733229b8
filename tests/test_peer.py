"""The peer's acceptance of other authors' manifests."""

from __future__ import annotations

from fltorrent.config import load_config
from fltorrent.net import MemoryNetwork
from fltorrent.peer import Peer, RoundPolicy
from fltorrent.runtime.learning import build_learner, load_federation_data
from fltorrent.swarm import Manifest, Swarm, SwarmOptions
from tests.aio import aio


@aio()
async def test_only_manifests_that_fit_the_plan_and_the_round_are_accepted() -> None:
    config = load_config(None, ["data.num_samples=1000", "federate.client_num=3"])
    learner = build_learner(config, 1, load_federation_data(config))
    plan = learner.plan
    async with MemoryNetwork() as net:
        swarm = Swarm(SwarmOptions(federation="f", peer_id=1), transport=net, want=lambda *_: True)
        peer = Peer(
            peer_id=1,
            learner=learner,
            swarm=swarm,
            members={1, 2, 3},
            policy=RoundPolicy(
                rounds=3, timeout=1, hard_timeout=2, min_completion_ratio=0.8, seed_grace=0
            ),
        )
        peer.round = 2
        good = [bytes(c.nbytes) for c in plan.chunks]

        def manifest(pieces: list[bytes], **kw: object) -> Manifest:
            fields: dict[str, object] = {
                "author": 2,
                "round": 2,
                "pieces": pieces,
                "num_samples": 100,
                "meta": plan.digest(),
            }
            fields.update(kw)
            return Manifest.build(**fields)  # type: ignore[arg-type]

        assert peer.check_manifest(manifest(good)) is None
        assert peer.check_manifest(manifest(good, round=3)) is None  # the next round is early
        assert "window" in str(peer.check_manifest(manifest(good, round=4)))
        assert "window" in str(peer.check_manifest(manifest(good, round=1)))
        assert "plan" in str(peer.check_manifest(manifest(good, meta=b"other model")))
        assert "member" in str(peer.check_manifest(manifest(good, author=9)))
        # Right digest (it is public), wrong shape: one piece short, or a piece resized.
        assert "sizes" in str(peer.check_manifest(manifest(good[:-1])))
        assert "sizes" in str(peer.check_manifest(manifest([good[0][:-4], *good[1:]])))
        assert "sample count" in str(peer.check_manifest(manifest(good, num_samples=0)))
        assert "sample count" in str(peer.check_manifest(manifest(good, num_samples=1 << 62)))
