"""The round index catches up from the swarm's additions and agrees with a full rescan."""

from __future__ import annotations

from fltorrent.membership import Membership
from fltorrent.net import MemoryNetwork
from fltorrent.plans.base import round_blobs
from fltorrent.plans.round_index import RoundIndex
from fltorrent.swarm import Manifest, Topic, TopicKind
from tests.aio import aio
from tests.swarm.helpers import random_blob, swarm_graph


@aio()
async def test_the_index_follows_additions_equivocation_and_drops() -> None:
    async with MemoryNetwork() as net, swarm_graph(net, 1, []) as nodes:
        swarm = nodes[1].swarm
        members = Membership(1, range(1, 6))
        index = RoundIndex()
        for author, round_ in ((2, 3), (4, 3), (5, 2), (1, 3)):  # 5: another round; 1: us
            m, pieces = random_blob(author, 2_000, 2, round_)
            swarm.publish(m, pieces)
        m, pieces = random_blob(3, 2_000, 2, 3)
        agg = Manifest.build(
            author=3, round=3, pieces=pieces, num_samples=1, topic=Topic(TopicKind.AGGREGATE, 0, 2)
        )
        swarm.publish(agg, pieces)
        index.sync(swarm, members, 3)
        assert sorted(index.updates()) == [2, 4]
        assert index.updates() == round_blobs(swarm, members, 3)
        assert [b.manifest.blob_id for b in index.aggregates] == [agg.blob_id]

        before = index.version
        index.sync(swarm, members, 3)  # nothing new: nothing changes
        assert index.version == before

        again, pieces = random_blob(2, 2_000, 2, 3)  # author 2's second update of round 3
        swarm.publish(again, pieces)
        index.sync(swarm, members, 3)
        assert sorted(index.updates()) == [4]  # both of 2's are ignored, 2 is caught
        assert members.caught(3) == {2}
        assert index.updates() == round_blobs(swarm, members, 3)

        swarm.drop_blobs(lambda m: m.author == 4)  # a drop: the index rescans
        index.sync(swarm, members, 3)
        assert index.updates() == {} == round_blobs(swarm, members, 3)
        assert len(index.aggregates) == 1
        index.sync(swarm, members, 2)  # another round
        assert sorted(index.updates()) == [5] and index.aggregates == []
